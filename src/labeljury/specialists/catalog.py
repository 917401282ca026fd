"""The specialist catalog: turns a task file's `specialists:` entries into ready specialists.

An entry is a catalog id (see `CATALOG`), `hf:<model>`, a Hugging Face hub id (`owner/name`) or a
local model folder. Every built specialist's `classes_` are the task's labels in task order: models
with labels of their own (VADER, profanity-check, hub models) are wrapped in a `MappedSpecialist`
whose `LabelMap` comes from the entry's `label_map`, else from matching names — exactly, then
through a small synonym table (so VADER's positive can vote for a task's `bullish`).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ..errors import SpecialistError
from ..task import SpecialistSpec, Task
from .base import LabelMap, MappedSpecialist, Specialist
from .finetune import FineTunedClassifier
from .heads import EmbeddingHead, HybridHead, NaiveBayesHead, TfidfHead
from .hf import HFTextClassifier
from .lexicon import ProfanityCheck, VaderSentiment
from .zeroshot import ZeroShotSimilarity


@dataclass(frozen=True)
class CatalogEntry:
    """A built-in specialist: its class, what it is good for, and the constructor arguments the
    catalog fills in from the task (the rest are the spec's `options`)."""

    id: str
    description: str
    kinds: tuple[str, ...]  # task kinds it suits: "any", "sentiment", "offensive"
    cls: type
    task_kwargs: Callable[[Task], dict[str, Any]]
    own_labels: bool  # speaks its own labels, so it needs a LabelMap


CATALOG: dict[str, CatalogEntry] = {
    e.id: e
    for e in (
        CatalogEntry(
            "vader",
            "VADER rule-based sentiment lexicon (negative/neutral/positive); fast, no training",
            ("sentiment",),
            VaderSentiment,
            lambda task: {},
            True,
        ),
        CatalogEntry(
            "profanity",
            "alt-profanity-check linear model for offensive language (clean/offensive); fast, no training",
            ("offensive",),
            ProfanityCheck,
            lambda task: {},
            True,
        ),
        CatalogEntry(
            "zeroshot",
            "cosine similarity of sentence embeddings to each label's name and description; no training",
            ("any",),
            ZeroShotSimilarity,
            lambda task: {"labels": dict(task.labels)},
            False,
        ),
        CatalogEntry(
            "embedding-head",
            "logistic regression on sentence embeddings, trained on reviewed rows",
            ("any",),
            EmbeddingHead,
            lambda task: {"labels": task.label_names},
            False,
        ),
        CatalogEntry(
            "tfidf-head",
            "logistic regression on word and character n-grams, trained on reviewed rows",
            ("any",),
            TfidfHead,
            lambda task: {"labels": task.label_names},
            False,
        ),
        CatalogEntry(
            "nb-head",
            "complement naive Bayes on word and character n-grams, trained on reviewed rows",
            ("any",),
            NaiveBayesHead,
            lambda task: {"labels": task.label_names},
            False,
        ),
        CatalogEntry(
            "hybrid-head",
            "SGD logistic regression on sentence embeddings plus n-grams, trained on reviewed rows",
            ("any",),
            HybridHead,
            lambda task: {"labels": task.label_names, "seed": task.seed},
            False,
        ),
        CatalogEntry(
            "finetune",
            "full fine-tuning (or LoRA) of a transformers classifier, default all-MiniLM-L6-v2; slow on a CPU",
            ("any",),
            FineTunedClassifier,
            lambda task: {"labels": task.label_names, "seed": task.seed},
            False,
        ),
    )
}

# Label names that mean the same thing, best first. Names are compared lower-cased with runs of
# spaces/underscores read as "-". A name belongs to at most one group.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "negative": ("negative", "neg", "bearish", "bad", "unfavorable", "unfavourable", "pessimistic"),
    "neutral": ("neutral", "neu", "objective"),
    "positive": ("positive", "pos", "bullish", "good", "favorable", "favourable", "optimistic"),
    "offensive": (
        "offensive",
        "off",
        "offensive-language",
        "toxic",
        "toxicity",
        "abusive",
        "abuse",
        "profane",
        "profanity",
        "obscene",
        "vulgar",
        "insult",
        "insulting",
        "hate",
        "hateful",
        "hate-speech",
    ),
    "clean": (
        "clean",
        "not-offensive",
        "non-offensive",
        "nonoffensive",
        "inoffensive",
        "not",
        "not-toxic",
        "non-toxic",
        "nontoxic",
        "not-hate",
        "non-hate",
        "no-hate",
        "neither",
        "normal",
        "safe",
        "benign",
        "acceptable",
        "ok",
    ),
}
_GROUP_OF = {name: group for group in SYNONYMS.values() for name in group}
_GENERIC_LABEL = re.compile(r"LABEL_\d+", re.IGNORECASE)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _norm(label: str) -> str:
    return re.sub(r"[\s_]+", "-", str(label).strip().lower())


def synonym_map(model_labels: Sequence[str], task_labels: Sequence[str]) -> dict[str, str]:
    """Model label -> task label: the same name (case-insensitive), else the task label that is the
    best-ranked synonym in the model label's group. Model labels with no match are left out."""
    tasks = [(str(t), _norm(t)) for t in task_labels]
    out: dict[str, str] = {}
    for m in model_labels:
        nm = _norm(m)
        exact = [t for t, nt in tasks if nt == nm]
        if exact:
            out[str(m)] = exact[0]
            continue
        group = _GROUP_OF.get(nm, ())
        ranked = sorted((group.index(nt), i, t) for i, (t, nt) in enumerate(tasks) if nt in group)
        if ranked:
            out[str(m)] = ranked[0][2]
    return out


def _auto_map_covers(model_labels: Sequence[str], task_labels: Sequence[str]) -> bool:
    # A model that can vote for only one task label would vote for it on every row: useless.
    return len(set(synonym_map(model_labels, task_labels).values())) >= 2


def _label_map(model_labels: Sequence[str], task: Task, spec: SpecialistSpec, name: str) -> LabelMap:
    model_labels = [str(x) for x in model_labels]
    if spec.label_map:
        return LabelMap.build(model_labels, task.label_names, spec.label_map, specialist=name)
    if _auto_map_covers(model_labels, task.label_names):
        return LabelMap.build(
            model_labels, task.label_names, synonym_map(model_labels, task.label_names), specialist=name
        )
    if all(_GENERIC_LABEL.fullmatch(x) for x in model_labels):
        raise SpecialistError(
            f"specialist {name!r} has generic labels {model_labels} that say nothing about their meaning; "
            f"give it a label_map in the task file, e.g. {{{model_labels[0]}: {task.label_names[0]}}}"
        )
    raise SpecialistError(
        f"specialist {name!r} has labels {model_labels}, which do not match at least two task labels "
        f"{task.label_names}; give it a label_map in the task file (model label: task label)"
    )


def _construct(cls: type, spec_id: str, fixed: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
    allowed = [p for p in inspect.signature(cls).parameters if p not in fixed]
    unknown = [k for k in options if k not in allowed]
    if unknown:
        opts = ", ".join(allowed) if allowed else "none"
        raise SpecialistError(f"specialist {spec_id!r} has no option {unknown[0]!r}; its options are: {opts}")
    try:
        return cls(**fixed, **options)
    except (TypeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SpecialistError(f"specialist {spec_id!r} has an invalid option value ({first})") from None


def _hf_model(spec_id: str) -> str | None:
    """The model a non-catalog id names (hub id or existing folder), else None."""
    if spec_id.startswith("hf:"):
        return spec_id[3:].strip() or None
    if os.path.isdir(os.path.expanduser(spec_id)) or _HUB_ID.fullmatch(spec_id):
        return spec_id
    return None


def _mapped(inner: Any, task: Task, spec: SpecialistSpec, name: str) -> Specialist:
    mapped = MappedSpecialist(inner, _label_map(inner.classes_, task, spec, name), name=name)
    # MappedSpecialist satisfies the protocol at run time; its members are read-only properties,
    # which the protocol's plain attributes do not accept statically.
    return cast(Specialist, mapped)


def build_specialist(spec: SpecialistSpec, task: Task, name: str | None = None) -> Specialist:
    """Build the specialist `spec` names, speaking `task`'s labels in task order."""
    spec_id = spec.id.strip()
    name = name or spec_id
    entry = CATALOG.get(spec_id.lower())
    if entry is not None:
        inner = _construct(entry.cls, spec_id, entry.task_kwargs(task), spec.options)
        inner.name = name
        if not entry.own_labels:
            if spec.label_map:
                raise SpecialistError(
                    f"specialist {spec_id!r} already predicts the task's labels; remove its label_map"
                )
            return inner
        return _mapped(inner, task, spec, name)
    model = _hf_model(spec_id)
    if model is None:
        if spec_id.startswith(("/", ".", "~")):
            raise SpecialistError(f"specialist {spec_id!r}: no such model folder; check the path")
        raise SpecialistError(
            f"unknown specialist id {spec_id!r}; use one of {', '.join(CATALOG)}, a Hugging Face model id "
            f"(owner/name) or a local model folder"
        )
    inner = _construct(HFTextClassifier, spec_id, {"model": model}, spec.options)
    inner.name = name
    return _mapped(inner, task, spec, name)


def auto_specialists(task: Task) -> list[SpecialistSpec]:
    """The specialists for `specialists: auto` when no LLM picks them: zero-shot, plus the three
    heads whose average was the strongest cheap ensemble we measured, plus each lexicon whose labels
    map onto the task's by name or synonym. For a sentiment task the heads also read VADER's scores."""
    lexicons = [spec_id for spec_id, cls in (("vader", VaderSentiment), ("profanity", ProfanityCheck))
                if _auto_map_covers(list(cls().classes_), task.label_names)]
    lex = {"lexicon": True} if "vader" in lexicons else {}
    return [
        SpecialistSpec(id="zeroshot"),
        SpecialistSpec(id="embedding-head", options=lex),
        SpecialistSpec(id="nb-head"),
        SpecialistSpec(id="hybrid-head", options=lex),
        *(SpecialistSpec(id=spec_id) for spec_id in lexicons),
    ]


def specialist_names(specs: Sequence[SpecialistSpec]) -> list[str]:
    """Unique names: the id, with -2, -3... added to later repeats of an id."""
    used: set[str] = set()
    names = []
    for s in specs:
        base = name = s.id.strip()
        k = 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        names.append(name)
    return names


def build_specialists(task: Task) -> list[Specialist]:
    """Every specialist of the task (its list, or `auto_specialists`), each with a unique name."""
    specs = auto_specialists(task) if task.specialists == "auto" else list(task.specialists)
    return [build_specialist(s, task, name=n) for s, n in zip(specs, specialist_names(specs), strict=True)]
