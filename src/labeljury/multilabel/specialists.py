"""The specialists of a multi-label task: what its `specialists:` may name, built into heads that give every
label its own probability.

| id                     | reads                                                   | learns on reviewed rows          |
|------------------------|---------------------------------------------------------|----------------------------------|
| `embedding-head`       | the run store's sentence embeddings                      | a logistic regression per label  |
| `tfidf-head`           | word 1-2-gram TF-IDF of the run's texts                  | a logistic regression per label  |
| `zeroshot`             | the cosine of the embedding to each label's name and description | per label, a logistic fit on its own cosine (two numbers a label) |
| a hub id or local folder whose config says `multi_label_classification` | the model's sigmoid per label, mapped onto the task's labels | per label, a logistic fit on its own logit |
| `finetune`             | the texts                                                | a transformer (all-MiniLM-L6-v2 by default) fine-tuned with a sigmoid per label (binary cross-entropy) |

`auto` is `embedding-head` + `tfidf-head` + `zeroshot` (BENCHMARKS.md, sections 19 and 23). The
scorers that learn nothing of the texts (`zeroshot`, a hub model) still have their thresholds and scales
chosen per label on reviewed rows, which they never trained on. A hub model's scores are computed once per
text and kept in the run store (a resumed run does not score again). Lexicons (`vader`, `profanity`) give one
label a text, so they are left out of a multi-label task, with a message; the single-label heads are refused
with what to use instead.

`finetune` learns from every reviewed row but the audit's (`audit_blind`): a stage ranks audit rows by
specialists that never learned from them, which the cheap heads get by five fits without a fifth of the audit
each; one fine-tuning a stage, without the audit, gives the same at a fifth of the cost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import SpecialistError, TaskError
from ..progress import Progress
from ..store import CHUNK, RunStore
from ..task import SpecialistSpec, Task
from .heads import HEADS, OneVsRestHead, OwnScoreHead

SET_CATALOG = {
    "embedding-head": "a logistic regression per label on sentence embeddings (C = 1)",
    "tfidf-head": "a logistic regression per label on word 1-2-gram TF-IDF (C = 10)",
    "zeroshot": "each label's cosine to its name and description, a logistic fit per label on reviewed rows",
    "finetune": "a transformer fine-tuned with a sigmoid per label on the reviewed rows but the audit's",
}
ONE_LABEL = ("vader", "profanity")  # lexicons: one label a text, left out of a set task
# `specialists: auto`: the two heads and zero-shot (BENCHMARKS.md, section 23: zero-shot lifts Reuters' micro-F1
# by 2-14 points and its macro-F1 by 9-37, and moves GoEmotions' by -0.9 to +0.0 micro, +0.6 to +1.7 macro)
AUTO = ("embedding", "tfidf", "zeroshot")
AUTO_BEFORE_ZEROSHOT = ("embedding", "tfidf")  # what `auto` was for runs that began before
Head = Any  # OneVsRestHead | OwnScoreHead | specialists.finetune.FineTunedClassifier (multi_label)


@dataclass(frozen=True)
class SetSpecialist:
    """One specialist of a multi-label task: its name, the view of a text it reads, and a new unfitted head.

    `view` is `embedding`, `tfidf`, `zeroshot:<name>` (the cosines to its label prototypes, `prototypes`) or
    `scores:<name>` (a hub model's stored logits, computed by `scorer`)."""

    name: str
    view: str
    make: Callable[[], Head]
    prototypes: np.ndarray | None = field(default=None, compare=False)
    scorer: HubScorer | None = field(default=None, compare=False)
    audit_blind: bool = False  # learns from no audit row (one fit serves every fold: `run.SetAnnotator._fit`)


class HubScorer:
    """A Hugging Face multi-label classifier's logit per task label: the model's labels mapped onto the
    task's (several onto one: the likeliest), NaN for a task label it has none for."""

    def __init__(self, model: Any, mapping: dict[str, str], labels: Sequence[str]):
        self.model = model  # a `specialists.hf.HFTextClassifier`
        self.labels = list(labels)
        own = [str(x) for x in model.classes_]
        self.columns = [[own.index(m) for m, t in mapping.items() if t == label] for label in self.labels]

    def covers(self) -> np.ndarray:
        return np.array([bool(c) for c in self.columns])

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        p = self.model.scores(list(texts))
        out = np.full((len(texts), len(self.labels)), np.nan, np.float32)
        for j, cols in enumerate(self.columns):
            if cols:
                q = np.clip(p[:, cols].max(axis=1), 1e-6, 1 - 1e-6)
                out[:, j] = np.log(q / (1 - q))
        return out


def _options(spec: SpecialistSpec, name: str, allowed: Sequence[str]) -> dict[str, Any]:
    unknown = [k for k in spec.options if k not in allowed]
    if unknown:
        raise SpecialistError(f"specialist {name!r} has no option {unknown[0]!r} on a multi-label task; its options "
                              f"are: {', '.join(allowed) or 'none'}")
    if spec.label_map:
        raise SpecialistError(f"specialist {name!r} already scores the task's labels; remove its label_map")
    C = spec.options.get("C", 1.0)  # noqa: N806
    if not isinstance(C, (int, float)) or isinstance(C, bool) or C <= 0:
        raise SpecialistError(f"specialist {name!r}: option C={C!r} must be a number > 0")
    return dict(spec.options)


def _built_in(spec_id: str, name: str, spec: SpecialistSpec, task: Task) -> SetSpecialist:
    labels = task.label_names
    if spec_id == "finetune":
        from ..specialists.catalog import _construct
        from ..specialists.finetune import FineTunedClassifier

        if spec.label_map:
            raise SpecialistError(f"specialist {name!r} already scores the task's labels; remove its label_map")
        fixed = {"labels": labels, "multi_label": True}
        options = {"seed": task.seed, **spec.options}
        _construct(FineTunedClassifier, spec_id, fixed, options)  # options checked now, not at the first fit
        return SetSpecialist(name, "text", lambda: _construct(FineTunedClassifier, spec_id, fixed, options),
                             audit_blind=True)
    if spec_id in ("embedding-head", "tfidf-head"):
        view = spec_id.removesuffix("-head")
        c, dual = HEADS[view]
        c = float(_options(spec, name, ["C"]).get("C", c))
        return SetSpecialist(name, view, lambda: OneVsRestHead(labels, C=c, dual=dual))
    from ..specialists.zeroshot import ZeroShotSimilarity

    options = _options(spec, name, ["C", "template"])
    c = float(options.pop("C", 1.0))
    try:
        zs = ZeroShotSimilarity(dict(task.labels), **options)
        prototypes = zs.prototypes
    except TypeError as err:
        raise SpecialistError(f"specialist {name!r} has an invalid option ({err})") from None
    return SetSpecialist(name, f"zeroshot:{name}", lambda: OwnScoreHead(labels, C=c), prototypes=prototypes)


def _hub(spec: SpecialistSpec, name: str, task: Task) -> SetSpecialist:
    from ..specialists.catalog import _construct, _hf_model, _label_map
    from ..specialists.hf import HFTextClassifier

    model = _hf_model(spec.id.strip())
    if model is None:
        if spec.id.strip().startswith(("/", ".", "~")):
            raise SpecialistError(f"specialist {spec.id!r}: no such model folder; check the path")
        raise SpecialistError(f"unknown specialist id {spec.id!r} for a multi-label task; use one of "
                              f"{', '.join(SET_CATALOG)}, or a Hugging Face multi-label model (owner/name or a folder)")
    clf = _construct(HFTextClassifier, spec.id, {"model": model}, spec.options)
    clf.name = name
    if not clf.multi_label:
        raise SpecialistError(f"specialist {name!r} is a single-label model (its config's problem_type is not "
                              "multi_label_classification): its softmax says which one label, not whether each "
                              "label applies; use a multi-label model, or leave it out")
    mapping = dict(_label_map(list(clf.classes_), task, spec, name).mapping)
    scorer = HubScorer(clf, mapping, task.label_names)
    return SetSpecialist(name, f"scores:{name}", lambda: OwnScoreHead(task.label_names), scorer=scorer)


def set_specialists(task: Task, log: Callable[[str], None] | None = None,
                    auto: Sequence[str] = AUTO) -> list[SetSpecialist]:
    """The task's specialists for sets, each with a unique name (`auto`: those `auto` names, by default
    `AUTO`; a run keeps the ones it started with)."""
    from ..specialists.catalog import CATALOG, specialist_names

    labels = task.label_names
    if task.specialists == "auto":
        built = [SetSpecialist(v, v, lambda c=c, d=d: OneVsRestHead(labels, C=c, dual=d))
                 for v, (c, d) in HEADS.items() if v in auto]
        if "zeroshot" in auto:
            zeroshot = _built_in("zeroshot", "zeroshot", SpecialistSpec(id="zeroshot"), task)
            built.append(zeroshot)
        return built
    specs = list(task.specialists)
    out: list[SetSpecialist] = []
    left: list[str] = []
    for spec, name in zip(specs, specialist_names(specs), strict=True):
        spec_id = spec.id.strip().lower()
        if spec_id in SET_CATALOG:
            out.append(_built_in(spec_id, name, spec, task))
        elif spec_id in ONE_LABEL:
            left.append(name)
        elif spec_id in CATALOG:
            raise TaskError(f"specialist {name!r} gives one label a text and has no multi-label form yet; a "
                            f"multi-label task can use {', '.join(SET_CATALOG)} or a Hugging Face multi-label model")
        else:
            out.append(_hub(spec, name, task))
    if left and log is not None:
        log(f"left out {', '.join(left)}: a lexicon gives a text one label, not a yes or no for each of a set's labels")
    if not out:
        raise TaskError(f"no specialist of this task scores label sets; add one of {', '.join(SET_CATALOG)}")
    covered = np.zeros(len(labels), bool)
    for s in out:
        covered |= s.scorer.covers() if s.scorer is not None else True
    if not covered.all():
        missing = [labels[j] for j in np.flatnonzero(~covered)]
        raise TaskError(f"no specialist scores the label(s) {', '.join(missing[:5])}: add embedding-head or tfidf-head "
                        "(they score every label), or map the labels in the hub model's label_map")
    return out


def score_hub_models(store: RunStore, specialists: Sequence[SetSpecialist], progress: Progress) -> None:
    """Each hub model's logits for every text, once, chunk by chunk into the run store (a resumed run scores only
    the chunks it had not)."""
    n = store.n_texts
    for s in specialists:
        if s.scorer is None:
            continue
        done = store.prediction_chunks(s.name, 0)
        todo = [c for c in range((n + CHUNK - 1) // CHUNK) if c not in done]
        if not todo:
            continue
        rows = sum(min(n, (c + 1) * CHUNK) - c * CHUNK for c in todo)
        with progress.bar(f"scoring ({s.name})", rows) as bar:
            for c in todo:
                ids = list(range(c * CHUNK, min(n, (c + 1) * CHUNK)))
                texts = store.texts_by_id(ids)
                store.put_predictions(s.name, 0, c, s.scorer([texts[t][0] for t in ids]))
                bar.advance(len(ids))
