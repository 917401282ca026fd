"""Candidate specialists for the LLM to choose from: the builtin catalog and the Hugging Face hub.

Hub candidates are `text-classification` models found by the hub's search API with words that
describe the task (its name, instructions and labels), most downloaded first, each with the label
names of its `config.json` (`id2label`). Only these listed models can be chosen: the LLM never names
a repository of its own. A hub that cannot be reached (offline, rate-limited) leaves the catalog.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from huggingface_hub import HfApi, hf_hub_download
from pydantic import BaseModel, ConfigDict

from ..specialists.catalog import CATALOG
from ..task import Task

log = logging.getLogger(__name__)

_OWNER_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")  # what the catalog reads as a hub id
MAX_HUB_LABELS = 20  # a model with more labels than this is not a specialist for a labeling task

# task words -> what to search the hub for (the hub's search matches model names)
_TOPICS: dict[str, tuple[str, ...]] = {
    "sentiment": ("sentiment", "positive", "negative", "bullish", "bearish", "polarity", "opinion", "review"),
    "toxic": ("toxic", "toxicity", "offensive", "abusive", "insult", "profanity", "cyberbullying", "obscene"),
    "hate": ("hate", "hateful", "hatespeech"),
    "emotion": ("emotion", "joy", "anger", "sadness", "fear", "surprise", "disgust"),
    "spam": ("spam", "ham", "phishing"),
    "news": ("news", "topic", "sports", "politics", "business", "technology"),
    "sarcasm": ("sarcasm", "sarcastic", "irony", "ironic"),
    "stance": ("stance", "favor", "against"),
}
_STOP = {"the", "a", "an", "of", "and", "or", "to", "in", "is", "it", "for", "on", "with", "task", "label", "labels",
         "text", "texts", "classify", "classification", "each", "short", "this", "that", "by", "as", "its"}


class Candidate(BaseModel):
    """A model the LLM may choose. `labels` are the model's own label names (for one that speaks
    the task's labels, the task's); `own_labels` says it needs a label map."""

    model_config = ConfigDict(frozen=True)
    id: str
    source: Literal["catalog", "hub"]
    description: str
    labels: list[str]
    own_labels: bool
    trainable: bool = False
    downloads: int | None = None

    def spec_id(self) -> str:
        """The id a task file's `specialists:` entry uses for it."""
        if self.source == "hub" and not _OWNER_NAME.fullmatch(self.id):
            return f"hf:{self.id}"  # a legacy hub id without an owner
        return self.id


def catalog_candidates(task: Task) -> list[Candidate]:
    out = []
    for entry in CATALOG.values():
        labels = [str(x) for x in entry.cls().classes_] if entry.own_labels else task.label_names
        out.append(
            Candidate(
                id=entry.id,
                source="catalog",
                description=entry.description,
                labels=labels,
                own_labels=entry.own_labels,
                trainable=bool(getattr(entry.cls, "trainable", False)),
            )
        )
    return out


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z][a-z0-9]+", text.lower()) if w not in _STOP and len(w) > 2]


def search_terms(task: Task, limit: int = 3) -> list[str]:
    """Hub search words for the task: known topics its name, instructions and labels mention, else
    the most telling words of its name."""
    words = _words(" ".join([task.name, task.instructions, *task.labels, *task.labels.values()]))
    topics = [topic for topic, vocab in _TOPICS.items() if any(w.startswith(v) for w in words for v in vocab)]
    if not topics:
        topics = list(dict.fromkeys(_words(task.name)))
    return topics[:limit]


def _id2label(config: dict[str, Any]) -> list[str] | None:
    raw = config.get("id2label")
    if not isinstance(raw, dict) or not raw:
        return None
    try:
        return [str(raw[k]) for k in sorted(raw, key=int)]
    except (TypeError, ValueError):
        return None


def _describe(info: Any) -> str:
    tags = [str(t) for t in (getattr(info, "tags", None) or [])]
    telling = [t for t in tags if t.startswith("dataset:") or re.fullmatch(r"[a-z]{2}", t)][:5]
    about = f"hub text classifier ({getattr(info, 'library_name', None) or 'transformers'})"
    return f"{about}; {', '.join(telling)}" if telling else about


def hub_candidates(
    task: Task,
    *,
    limit: int = 10,
    per_query: int = 20,
    terms: Sequence[str] | None = None,
    api: Any = None,
    download: Callable[..., str] | None = None,
) -> list[Candidate]:
    """The `limit` most downloaded hub text classifiers matching the task's search terms whose
    config lists 2..MAX_HUB_LABELS labels. Never raises for hub trouble: logs it and returns what
    it found (possibly nothing)."""
    api = api if api is not None else HfApi()
    download = download or hf_hub_download
    found: dict[str, Any] = {}
    for term in terms if terms is not None else search_terms(task):
        try:
            listing: Iterable[Any] = api.list_models(
                pipeline_tag="text-classification", search=term, sort="downloads", limit=per_query
            )
            for info in listing:
                if info.id not in found or (info.downloads or 0) > (found[info.id].downloads or 0):
                    found[info.id] = info
        except Exception as err:  # offline, rate limit, hub outage: fall back to what we have
            log.warning("Hugging Face hub search for %r failed (%s); using the catalog only", term, type(err).__name__)
    ranked = sorted(found.values(), key=lambda i: -(i.downloads or 0))
    out: list[Candidate] = []
    for info in ranked:
        if len(out) >= limit:
            break
        if getattr(info, "gated", None) or getattr(info, "private", None):
            continue
        try:
            with open(download(repo_id=info.id, filename="config.json"), encoding="utf-8") as fh:
                config = json.load(fh)
        except Exception as err:  # missing config, gated, offline, bad JSON: not a usable candidate
            log.info("skipping hub model %s: no readable config.json (%s)", info.id, type(err).__name__)
            continue
        labels = _id2label(config) if isinstance(config, dict) else None
        if labels is None or not 2 <= len(labels) <= MAX_HUB_LABELS:
            continue
        out.append(
            Candidate(
                id=info.id, source="hub", description=_describe(info), labels=labels, own_labels=True,
                downloads=info.downloads,
            )
        )
    return out


def gather_candidates(task: Task, *, hub: bool = True, hub_limit: int = 10, **hub_kwargs: Any) -> list[Candidate]:
    """The catalog, then (with `hub`) the hub's matches."""
    out = catalog_candidates(task)
    if hub:
        known = {c.id for c in out}
        out += [c for c in hub_candidates(task, limit=hub_limit, **hub_kwargs) if c.id not in known]
    return out
