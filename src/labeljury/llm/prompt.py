"""Prompt parts shared by the LLM reviewer and the LLM-only baselines: the task header, the few-shot
examples (the most similar ones when there are many), and the answer models whose `label` field
only admits the task's labels."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, field_validator

from ..labels import LabelMatcher
from ..task import Example, Task

Embed = Callable[[list[str]], np.ndarray]


def label_type(labels: Sequence[str]) -> Any:
    """`Literal[labels]`, also accepting a label in another letter case ("Positive") or Unicode form: the
    one matching rule (`labels`)."""
    matcher = LabelMatcher(labels)

    def canonical(value: Any) -> Any:
        return (matcher.match(value) or value) if isinstance(value, str) else value

    return Annotated[Literal[tuple(labels)], BeforeValidator(canonical)]  # type: ignore[valid-type]


def answer_model(
    labels: Sequence[str], *, reason: bool = True, reasoning_first: bool = False, index: bool = False
) -> type[BaseModel]:
    """The answer schema. JSON fields are generated in order, so with `reasoning_first` the model
    reasons before it commits to a label (chain of thought); `index` keys items of a batch."""
    fields: dict[str, Any] = {}
    if index:
        fields["index"] = (int, Field(description="the item number"))
    if reasoning_first:
        fields["reasoning"] = (str, Field(description="brief step-by-step reasoning"))
    fields["label"] = (label_type(labels), ...)
    fields["confidence"] = (float, Field(ge=0, le=1, description="probability that the label is right"))
    if reason:
        fields["reason"] = (str, Field(description="one sentence"))
    name = "ItemAnswer" if index else "Answer"
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def set_answer_model(labels: Sequence[str], *, allow_empty: bool = False, reason: bool = True,
                     index: bool = False, reasoning_first: bool = False) -> type[BaseModel]:
    """The answer schema of a multi-label task: `labels`, a list of the task's labels (each once; at least one
    unless the task allows the empty set), the confidence that the whole set is right, and a reason (with
    `reasoning_first`, a `reasoning` field before the labels, as `answer_model`'s)."""
    fields: dict[str, Any] = {}
    if index:
        fields["index"] = (int, Field(description="the item number"))
    if reasoning_first:
        fields["reasoning"] = (str, Field(description="brief step-by-step reasoning"))
    item = label_type(labels)
    fields["labels"] = (list[item], Field(min_length=0 if allow_empty else 1,  # type: ignore[valid-type]
                                          description="every label that applies, each once"))
    fields["confidence"] = (float, Field(ge=0, le=1, description="probability that the whole set is right"))
    if reason:
        fields["reason"] = (str, Field(description="one sentence"))

    name = "ItemSetAnswer" if index else "SetAnswer"
    return create_model(name, __config__=ConfigDict(extra="forbid"),
                        __validators__={"each_once": field_validator("labels")(_each_once)}, **fields)


def _each_once(cls: Any, value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("list each label once")
    return value


def answered_labels(task: Task) -> str:
    """The label part of a typical answer, for its token count: the longest label; in a multi-label task, a set
    of the two longest (a text carries one or two labels in most multi-label sets)."""
    names = sorted(task.label_names, key=len, reverse=True)
    if not task.multi_label:
        return f'"label":"{names[0]}"'
    return '"labels":[' + ",".join(f'"{n}"' for n in names[:2]) + "]"


def task_header(task: Task) -> str:
    lines = [f'You label texts for the task "{task.name}".']
    if task.instructions.strip():
        lines.append(task.instructions.strip())
    lines.append("Labels:")
    lines += [f"- {name}: {desc}" if desc else f"- {name}" for name, desc in task.labels.items()]
    return "\n".join(lines)


def quote(text: str) -> str:
    """A text as a JSON string: unambiguous delimiters whatever the text contains."""
    return json.dumps(text, ensure_ascii=False)


def format_examples(examples: Sequence[Example]) -> str:
    if not examples:
        return ""
    # a multi-label example's set as a JSON list, as the answer gives it
    return "Examples:\n" + "\n".join(f"{quote(ex.text)} -> {json.dumps(ex.label, ensure_ascii=False) if isinstance(ex.label, list) else ex.label}"
                                      for ex in examples)


class ExampleSelector:
    """Chooses at most `k` few-shot examples per prompt. With more examples than that and an
    `embed` function, the ones most similar to the prompt's texts (cosine similarity); otherwise a
    fixed subset that covers every label, so that the prompt prefix stays the same."""

    def __init__(self, examples: Sequence[Example], *, k: int = 8, embed: Embed | None = None) -> None:
        self.examples = list(examples)
        self.k = k
        self._embed = embed
        self._vectors: np.ndarray | None = None

    def _balanced(self) -> list[Example]:
        by_label: dict[str | tuple[str, ...], list[int]] = {}
        for i, ex in enumerate(self.examples):  # a multi-label example's set is one group of its own
            by_label.setdefault(tuple(ex.label) if isinstance(ex.label, list) else ex.label, []).append(i)
        chosen: list[int] = []
        queues = list(by_label.values())
        while len(chosen) < self.k and any(queues):
            for queue in queues:
                if queue and len(chosen) < self.k:
                    chosen.append(queue.pop(0))
        return [self.examples[i] for i in sorted(chosen)]

    def choose(self, groups: Sequence[Sequence[str]]) -> list[list[Example]]:
        """One example list per group of texts (a group is the texts of one request)."""
        if len(self.examples) <= self.k:
            return [self.examples for _ in groups]
        if self._embed is None:
            fixed = self._balanced()
            return [fixed for _ in groups]
        if self._vectors is None:
            self._vectors = _unit(self._embed([ex.text for ex in self.examples]))
        texts = [t for group in groups for t in group]
        similarity = _unit(self._embed(texts)) @ self._vectors.T
        chosen, start = [], 0
        for group in groups:
            score = similarity[start : start + len(group)].max(axis=0)
            start += len(group)
            top = np.argsort(-score, kind="stable")[: self.k]
            chosen.append([self.examples[i] for i in sorted(top)])
        return chosen


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)
