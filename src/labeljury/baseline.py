"""LLM-only baselines: an LLM labels every row by itself, the paper's comparison rows.

- `zero-shot`: instructions and label descriptions only (the paper's "GPT-3.5-turbo, every sample").
- `few-shot`: plus the task's examples (the most similar ones when there are many and `embed` is given).
- `cot`: zero-shot, but the answer schema puts a `reasoning` field before the label.
- `vote`: zero-shot with several LLMs, majority label (the paper's "4 API LLMs, majority vote").
A multi-label task asks each LLM for a set (every label that applies; a JSON list, validated) and, with
`vote`, keeps each label more than half of them chose.

Each row comes back as (label, confidence, source): source `llm:<method>`, or, when no label could be
had, label None and source `queued:llm-<reason>`. No file IO here: the caller reads and writes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Literal

from pydantic import BaseModel

from .errors import LLMError
from .llm.cache import CallCache
from .llm.client import LLMClient
from .llm.cost import Ledger
from .labelsets import LabelSets
from .llm.prompt import Embed, ExampleSelector, answer_model, format_examples, quote, set_answer_model, task_header
from .llm.structured import Answer, ask
from .specialists.base import bounded
from .task import Example, Task

Method = Literal["zero-shot", "few-shot", "cot", "vote"]
Row = tuple[str | None, float | None, str]

_ANSWER = "Answer with the label and your confidence (0 to 1)."
_COT = "First reason briefly, step by step; then answer with the label and your confidence (0 to 1)."
# a multi-label task: every label that applies, and the confidence that the whole set is right
_SET_ANSWER = ("A text may carry several of these labels{empty}. {first}nswer with every label that applies (`labels`, "
               "each once) and your confidence (0 to 1) that the whole set is right.")


def _instructions(task: Task, cot: bool) -> str:
    if not task.multi_label:
        return _COT if cot else _ANSWER
    return _SET_ANSWER.format(empty=", or none of them" if task.allow_empty else "; every text carries at least one",
                              first="First reason briefly, step by step; then a" if cot else "A")


def baseline_messages(task: Task, text: str, *, cot: bool, examples: Sequence[Example] = ()) -> list[dict[str, str]]:
    """The chat messages that ask for one text's label (also what `labeljury plan` prices)."""
    system = "\n\n".join(p for p in (task_header(task), _instructions(task, cot), format_examples(examples)) if p)
    return [{"role": "system", "content": system}, {"role": "user", "content": f"Text: {quote(bounded(text))}"}]


def _submit(
    task: Task,
    texts: Sequence[str],
    client: LLMClient,
    schema: type[BaseModel],
    *,
    cot: bool,
    examples: ExampleSelector | None,
    cache: CallCache | None,
    ledger: Ledger,
) -> list[Future[Answer[Any]]]:
    chosen = examples.choose([[t] for t in texts]) if examples is not None else [[] for _ in texts]
    futures = []
    for text, shots in zip(texts, chosen, strict=True):
        messages = baseline_messages(task, text, cot=cot, examples=shots)
        futures.append(client.submit(ask(client, messages, schema, cache=cache, ledger=ledger)))
    return futures


def _gather(per_client: list[list[Future[Answer[Any]]]]) -> list[list[Answer[Any]]]:
    """Wait for every answer; on an error (a rejected key...) cancel the calls not yet made."""
    try:
        return [[f.result() for f in futures] for futures in per_client]
    finally:
        for futures in per_client:
            for f in futures:
                f.cancel()


def _row(answer: Answer[Any], method: str, sets: LabelSets | None = None) -> Row:
    if answer.value is None:
        return None, None, f"queued:llm-{answer.reason or 'invalid-answer'}"
    label = answer.value.label if sets is None else sets.text(answer.value.labels)
    return label, answer.value.confidence, f"llm:{method}"


def _set_majority(answers: Sequence[Answer[Any]], sets: LabelSets) -> Row:
    """Several LLMs' sets: a label is in when more than half of those that answered chose it (where the task
    allows no empty set and none is, the label most chose, ties to the task's order). The confidence is the
    share of all voters (abstainers included) whose set is exactly the one decided."""
    valid = [tuple(a.value.labels) for a in answers if a.value is not None]
    if not valid:
        reasons = Counter(a.reason or "invalid-answer" for a in answers)
        return None, None, f"queued:llm-{reasons.most_common(1)[0][0]}"
    count = Counter(label for labels in valid for label in labels)
    chosen = [label for label in sets.labels if 2 * count[label] > len(valid)]
    if not chosen and not sets.allow_empty:
        chosen = [max(sets.labels, key=lambda label: (count[label], -sets.labels.index(label)))]
    agree = sum(set(labels) == set(chosen) for labels in valid)
    return sets.text(chosen), agree / len(answers), "llm:vote"


def _majority(answers: Sequence[Answer[Any]], order: Sequence[str]) -> Row:
    """Most votes wins; a tie goes to the larger summed confidence, then to the task's label order.
    The confidence is the share of all voters (abstainers included) that agree."""
    valid = [a.value for a in answers if a.value is not None]
    if not valid:
        reasons = Counter(a.reason or "invalid-answer" for a in answers)
        return None, None, f"queued:llm-{reasons.most_common(1)[0][0]}"
    count = Counter(v.label for v in valid)
    weight: Counter[str] = Counter()
    for v in valid:
        weight[v.label] += v.confidence
    best = max(count, key=lambda label: (count[label], weight[label], -order.index(label)))
    return best, count[best] / len(answers), "llm:vote"


def label_with_llm(
    task: Task,
    texts: list[str],
    method: Method,
    clients: Sequence[LLMClient],
    *,
    cache: CallCache | None = None,
    ledgers: Sequence[Ledger] | None = None,
    embed: Embed | None = None,
) -> list[Row]:
    """Label every text with the LLM(s) alone, in order. `vote` takes two or more clients, the
    other methods exactly one (a shared `cache` tells voters apart by model name, so give them
    different models). `ledgers` (one per client; by default from each client's spec)
    enforce the budgets; `cache` makes a rerun free."""
    if method not in ("zero-shot", "few-shot", "cot", "vote"):
        raise LLMError(f"unknown baseline method {method!r}; use zero-shot, few-shot, cot or vote")
    if method == "vote" and len(clients) < 2:
        raise LLMError("the vote baseline needs at least two LLMs")
    if method != "vote" and len(clients) != 1:
        raise LLMError(f"the {method} baseline uses exactly one LLM, got {len(clients)}")
    if method == "few-shot" and not task.examples:
        raise LLMError("the few-shot baseline needs examples: add `examples:` to the task")
    ledgers = list(ledgers) if ledgers is not None else [Ledger.for_spec(c.spec) for c in clients]
    if len(ledgers) != len(clients):
        raise LLMError("give one ledger per LLM client")
    sets = task.label_sets
    schema = (answer_model(task.label_names, reason=False, reasoning_first=method == "cot") if sets is None else
              set_answer_model(task.label_names, allow_empty=sets.allow_empty, reason=False,
                               reasoning_first=method == "cot"))
    examples = ExampleSelector(task.examples, embed=embed) if method == "few-shot" else None
    per_client = _gather(
        [
            _submit(task, texts, c, schema, cot=method == "cot", examples=examples, cache=cache, ledger=ledger)
            for c, ledger in zip(clients, ledgers, strict=True)
        ]
    )
    if method != "vote":
        return [_row(a, method, sets) for a in per_client[0]]
    if sets is not None:
        return [_set_majority(votes, sets) for votes in zip(*per_client, strict=True)]
    return [_majority(votes, task.label_names) for votes in zip(*per_client, strict=True)]
