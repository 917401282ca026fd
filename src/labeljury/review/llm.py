"""The LLM reviewer: an LLM labels the rows the specialists find hard, seeing what they said.

Unlike the paper's blind zero-shot relabel, the prompt carries the task's instructions, the label
descriptions, few-shot examples and every specialist's vote and confidence. Answers are typed (the
label must be one of the task's), cached and paid for under the task's budget; a row the LLM cannot
answer is queued with the reason (`queued:llm-budget`, `queued:llm-invalid-answer`...), never given
a default label. With `llm.batch_size` > 1 several rows share one request (and one copy of the
instructions); a row missing or invalid in a batch answer is asked again alone, once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypedDict

from pydantic import BaseModel, ValidationError, create_model

from ..errors import LLMError
from ..llm.cache import CallCache, SQLiteCallCache
from ..llm.client import LLMClient
from ..llm.cost import (
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    Ledger,
    estimate_tokens,
    price_for,
)
from ..llm.journal import SQLiteSpendJournal
from ..labelsets import LabelSets
from ..llm.prompt import (
    Embed,
    ExampleSelector,
    answer_model,
    answered_labels,
    format_examples,
    quote,
    set_answer_model,
    task_header,
)
from ..llm.structured import Answer, ask, extract_json
from ..sources import queued, reviewed
from ..specialists.base import bounded
from ..task import Example, Task
from .base import ReviewItem, ReviewResult

log = logging.getLogger(__name__)

_ROLE = (
    "Small specialist models have already voted on each text; it is here because they disagree or are "
    "unsure. Their votes are hints, often wrong on such texts: decide from the text itself. "
    "Answer with the label, your confidence (0 to 1) and a one-sentence reason."
)


_SET_ROLE = (
    "A text may carry several of these labels" + "{empty}. Small specialist models have already scored each label; "
    "the text is here because they are unsure. Their scores are hints, often wrong on such texts: decide from the "
    "text itself. Answer with every label that applies (`labels`, each once), your confidence (0 to 1) that the "
    "whole set is right and a one-sentence reason."
)
SHOWN_SCORES = 10  # the most likely labels' scores a multi-label prompt shows


def system_prompt(task: Task, examples: Sequence[Example]) -> str:
    role = _ROLE if not task.multi_label else _SET_ROLE.format(
        empty=", or none of them" if task.allow_empty else "; every text carries at least one")
    parts = [task_header(task), role, format_examples(examples)]
    return "\n\n".join(p for p in parts if p)


def item_block(task: Task, item: ReviewItem) -> str:
    """The text and the specialists' opinions of it."""
    lines = [f"Text: {quote(bounded(item.text))}"]  # an LLM reads what the specialists read
    if task.multi_label:
        return "\n".join(lines + _set_hints(task, item))
    votes = []
    for name, label in item.votes.items():
        if label is None:
            votes.append(f"{name}: abstained")
            continue
        probs = item.probabilities.get(name)
        index = task.label_names.index(label) if label in task.labels else -1
        if probs is not None and 0 <= index < len(probs) and not math.isnan(probs[index]):
            votes.append(f"{name}: {label} ({probs[index]:.2f})")
        else:
            votes.append(f"{name}: {label}")
    if votes:
        lines.append("Specialist votes: " + "; ".join(votes))
    if item.vote is not None:
        combined = f" ({item.confidence:.2f})" if item.confidence is not None else ""
        lines.append(f"Combined vote: {item.vote}{combined}")
    return "\n".join(lines)


def _set_hints(task: Task, item: ReviewItem) -> list[str]:
    """A multi-label item's context: each likely label's probability, and the set the vote chose."""
    lines = []
    if item.prior is not None:
        ranked = sorted(zip(task.label_names, item.prior, strict=True), key=lambda x: -x[1])[:SHOWN_SCORES]
        lines.append("Specialist scores: " + "; ".join(f"{name} {p:.2f}" for name, p in ranked if p >= 0.05))
    if item.vote is not None:
        combined = f" ({item.confidence:.2f})" if item.confidence is not None else ""
        lines.append(f"Combined vote: {item.vote}{combined}")
    return lines


def batch_block(task: Task, items: Sequence[ReviewItem]) -> str:
    head = (
        f"Label each of these {len(items)} items. Answer with one entry per item in `answers`, "
        "`index` being the item number."
    )
    return "\n\n".join([head, *(f"### Item {i}\n{item_block(task, item)}" for i, item in enumerate(items))])


def _reviewed(item: ReviewItem, value: Any, cost: float, sets: LabelSets | None = None) -> ReviewResult:
    """A valid answer as the review of `item`; a multi-label task's set as the text the run store keeps."""
    label = value.label if sets is None else sets.text(value.labels)
    return ReviewResult(item.key, label, reviewed("llm"), value.confidence, value.reason.strip(), cost_usd=cost)


def _queued(item: ReviewItem, reason: str, cost: float) -> ReviewResult:
    return ReviewResult(item.key, None, queued(f"llm-{reason}"), cost_usd=cost)


class LLMReviewer:
    """Reviews items with `client`; `cache` makes repeated calls free, `ledger` enforces the budget
    (by default a fresh one from `client.spec`). `embed` (texts -> vectors) picks the most similar
    `max_examples` few-shot examples when the task has more."""

    kind = "llm"

    def __init__(
        self,
        task: Task,
        client: LLMClient,
        cache: CallCache | None = None,
        ledger: Ledger | None = None,
        *,
        embed: Embed | None = None,
        max_examples: int = 8,
    ) -> None:
        self.task = task
        self.client = client
        self.cache = cache
        self.ledger = ledger if ledger is not None else Ledger.for_spec(client.spec)
        self._selector = ExampleSelector(task.examples, k=max_examples, embed=embed)
        self._sets = task.label_sets  # a multi-label task's: answers are lists of its labels
        if self._sets is None:
            self._single = answer_model(task.label_names)
            self._item = answer_model(task.label_names, index=True)
        else:
            empty = bool(task.allow_empty)
            self._single = set_answer_model(task.label_names, allow_empty=empty)
            self._item = set_answer_model(task.label_names, allow_empty=empty, index=True)
        self._batch = create_model("BatchAnswer", answers=(list[self._item], ...))  # type: ignore[name-defined]

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        """Yield a result per item as each request completes. Closing the iterator early cancels
        the requests not yet made."""
        items = list(items)
        if not items:
            return
        size = max(1, self.client.spec.batch_size)
        groups = [items[i : i + size] for i in range(0, len(items), size)]
        examples = self._selector.choose([[item.text for item in group] for group in groups])
        futures = [self.client.submit(self._review_group(g, ex)) for g, ex in zip(groups, examples, strict=True)]
        try:
            for future in concurrent.futures.as_completed(futures):
                yield from future.result()
        finally:
            for future in futures:
                future.cancel()
            log.info("LLM review: %s", self.ledger.summary())

    async def _ask(
        self, messages: list[dict[str, str]], schema: type[BaseModel], *, max_tokens: int, reask: bool
    ) -> Answer[Any]:
        return await ask(
            self.client, messages, schema, cache=self.cache, ledger=self.ledger, max_tokens=max_tokens, reask=reask
        )

    def _messages(self, examples: Sequence[Example], user: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": system_prompt(self.task, examples)}, {"role": "user", "content": user}]

    async def _review_one(self, item: ReviewItem, examples: Sequence[Example], *, reask: bool = True) -> ReviewResult:
        messages = self._messages(examples, item_block(self.task, item))
        answer = await self._ask(messages, self._single, max_tokens=self.client.spec.max_tokens, reask=reask)
        if answer.value is None:
            return _queued(item, answer.reason or "invalid-answer", answer.cost_usd)
        return _reviewed(item, answer.value, answer.cost_usd, self._sets)

    async def _review_group(self, items: Sequence[ReviewItem], examples: Sequence[Example]) -> list[ReviewResult]:
        if len(items) == 1:
            return [await self._review_one(items[0], examples)]
        messages = self._messages(examples, batch_block(self.task, items))
        limit = self.client.spec.max_tokens * len(items)
        answer = await self._ask(messages, self._batch, max_tokens=limit, reask=False)
        share = answer.cost_usd / len(items)
        if answer.value is None and answer.reason != "invalid-answer":
            return [_queued(item, answer.reason or "invalid-answer", share) for item in items]
        found = self._salvage(answer, len(items))
        missing = [item for i, item in enumerate(items) if i not in found]
        # missing or invalid in the batch answer: each is asked alone, once
        alone = await asyncio.gather(*(self._review_one(item, examples, reask=False) for item in missing))
        redone = {r.key: replace(r, cost_usd=r.cost_usd + share) for r in alone}
        return [_reviewed(item, found[i], share, self._sets) if i in found else redone[item.key] for i, item in enumerate(items)]

    def close(self) -> None:
        """Stop the client's loop thread and close its connections, the cache's and the journal's."""
        self.client.close()
        if isinstance(self.cache, SQLiteCallCache):
            self.cache.close()
        if self.ledger.journal is not None:
            self.ledger.journal.close()

    def _salvage(self, answer: Answer[Any], n: int) -> dict[int, Any]:
        """The valid entries of a batch answer, by item index (the first entry for an index wins)."""
        if answer.value is not None:
            entries: list[Any] = list(answer.value.answers)
        else:
            try:
                data = extract_json(answer.raw or "")
            except ValueError:
                return {}
            raw_entries = data.get("answers") if isinstance(data, dict) else data
            entries = []
            for raw in raw_entries if isinstance(raw_entries, list) else []:
                try:
                    entries.append(self._item.model_validate(raw))
                except ValidationError:
                    continue
        found: dict[int, Any] = {}
        for entry in entries:
            if 0 <= entry.index < n and entry.index not in found:
                found[entry.index] = entry
        return found


def make_llm_reviewer(task: Task, run_dir: str | Path, *, embed: Embed | None = None) -> LLMReviewer:
    """The pipeline's LLM reviewer for `task.llm`: its calls are cached in the run's `run.db`, and
    its budget starts from what earlier runs of this directory already spent (the spend journal in
    the same file, which counts a call at its worst case until its answer comes), so that resuming
    neither pays twice nor resets the cap."""
    if task.llm is None:
        raise LLMError("reviewer kind `llm` needs an `llm:` section (model, base_url, api_key_env)")
    client = LLMClient(task.llm)
    Path(run_dir).mkdir(parents=True, exist_ok=True)  # the reviewer is made before the run store
    cache = SQLiteCallCache(Path(run_dir) / "run.db")
    journal = SQLiteSpendJournal(Path(run_dir) / "run.db", client.model_id)
    ledger = Ledger.for_spec(task.llm, journal=journal)
    return LLMReviewer(task, client, cache, ledger, embed=embed)


class CostEstimate(TypedDict):
    tokens_in: int
    tokens_out: int
    usd: float
    calls: int
    price_known: bool


_TYPICAL_REASON = "The text clearly expresses this, and the dissenting specialist misread its sarcasm here."


def estimate_review_cost(task: Task, n_review_rows: int, avg_chars: float) -> CostEstimate:
    """What reviewing `n_review_rows` rows of about `avg_chars` characters with `task.llm` should
    cost, for `labeljury plan`. Tokens are ~4 characters each (see `cost.estimate_tokens`); answers
    are assumed one sentence long; re-asks and retries are not counted."""
    spec = task.llm
    if spec is None:
        raise LLMError("the task has no `llm:` section, so there is no LLM review to estimate")
    size = max(1, spec.batch_size)
    n_specialists = len(task.specialists) if isinstance(task.specialists, list) else 3
    first = task.label_names[0]
    item = ReviewItem(
        key=0,
        text="x" * max(0, round(avg_chars)),
        row=0,
        vote=first,
        confidence=0.5,
        votes={f"specialist-{i}": first for i in range(n_specialists)},
        probabilities={f"specialist-{i}": [0.5] * len(task.labels) for i in range(n_specialists)},
        prior=[0.5] * len(task.labels) if task.multi_label else None,  # a set's prompt shows each label's score
    )
    examples = ExampleSelector(task.examples).choose([[item.text]])[0]
    system = estimate_tokens(system_prompt(task, examples)) + 2 * MESSAGE_OVERHEAD_TOKENS + REQUEST_OVERHEAD_TOKENS
    per_item = estimate_tokens(f"### Item 0\n{item_block(task, item)}\n\n")
    answer = f'{{"index":0,{answered_labels(task)},"confidence":0.85,"reason":"{_TYPICAL_REASON}"}}'
    per_answer = estimate_tokens(answer)
    calls = math.ceil(n_review_rows / size) if n_review_rows > 0 else 0
    batch_overhead = estimate_tokens(batch_block(task, [])) if size > 1 else 0
    tokens_in = calls * (system + batch_overhead) + n_review_rows * per_item
    tokens_out = n_review_rows * per_answer
    price = price_for(spec)
    return CostEstimate(
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        usd=price.cost_usd(tokens_in, tokens_out),
        calls=calls,
        price_known=price.known,
    )
