"""`labeljury plan`: what a run's LLM calls should cost, estimated before anything is spent.

It reads the input once (rows, unique texts, their mean length) and prices, with the task's LLM
price: the review of the hard rows (at most the review budget), the model selection (for
`specialists: auto`), and, for comparison, labeling every text with the LLM alone. Tokens are
estimated at ~4 characters each; re-asks and retries are not counted, so real costs can be higher:
the hard caps (`llm.budget_usd`, `llm.budget_tokens`) are what bound them.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

from pydantic import BaseModel

from . import data
from .budget import budget_rows
from .llm.cost import MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS, estimate_tokens, price_for
from .llm.prompt import answered_labels
from .task import Task


class InputStats(BaseModel):
    rows: int
    texts: int  # unique non-empty texts: the pipeline labels each once
    avg_chars: float


class CostLine(BaseModel):
    what: str
    calls: int
    tokens_in: int
    tokens_out: int
    usd: float
    note: str = ""


class CostPlan(BaseModel):
    task: str
    model: str | None
    price_known: bool
    price_in: float | None  # $ per 1M tokens
    price_out: float | None
    input: InputStats
    review_rows: int
    lines: list[CostLine]  # what the run will spend
    comparison: list[CostLine]  # what the LLM alone would spend (not part of the run)
    budget_usd: float | None
    budget_tokens: int | None
    warnings: list[str]

    @property
    def total_usd(self) -> float:
        return sum(line.usd for line in self.lines)

    @property
    def total_tokens(self) -> int:
        return sum(line.tokens_in + line.tokens_out for line in self.lines)

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        out["total_usd"] = self.total_usd
        out["total_tokens"] = self.total_tokens
        return out


def scan_input(path: Any, text_column: str) -> InputStats:
    """Rows, unique non-empty texts and their mean length, streaming (8 bytes a unique text)."""
    seen: set[bytes] = set()
    rows = 0
    chars = 0
    for chunk in data.iter_chunks(path, columns=[text_column]):
        rows += len(chunk)
        for value in chunk[text_column]:
            if not data.is_text(value):
                continue
            digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest()
            if digest not in seen:
                seen.add(digest)
                chars += len(value)
    return InputStats(rows=rows, texts=len(seen), avg_chars=chars / len(seen) if seen else 0.0)


def _baseline_line(task: Task, stats: InputStats, method: str) -> CostLine:
    from .baseline import baseline_messages

    text = "x" * round(stats.avg_chars)
    examples = task.examples[:8] if method == "few-shot" else []
    messages = baseline_messages(task, text, cot=method == "cot", examples=examples)
    per_call_in = sum(estimate_tokens(m["content"]) for m in messages) + 2 * MESSAGE_OVERHEAD_TOKENS + REQUEST_OVERHEAD_TOKENS
    reasoning = '"reasoning":"The text says so plainly, and nothing in it suggests otherwise at all.",' if method == "cot" else ""
    per_call_out = estimate_tokens(f'{{{reasoning}{answered_labels(task)},"confidence":0.85}}')
    n = stats.texts
    price = price_for(task.llm)  # type: ignore[arg-type]
    return CostLine(what=f"LLM alone, {method} (every text)", calls=n, tokens_in=n * per_call_in,
                    tokens_out=n * per_call_out, usd=price.cost_usd(n * per_call_in, n * per_call_out),
                    note="for comparison; not spent by the run")


def plan_costs(task: Task, input_path: Any) -> CostPlan:
    """Estimate the LLM cost of running `task` on `input_path` (see the module doc)."""
    data.check_input(input_path, task.text_column)
    stats = scan_input(input_path, task.text_column)
    spec = task.llm
    review_rows = min(budget_rows(task.review, stats.rows), stats.texts)
    lines: list[CostLine] = []
    comparison: list[CostLine] = []
    warnings: list[str] = []
    price = price_for(spec) if spec is not None else None
    if spec is None:
        warnings.append("the task has no `llm:` section: it makes no LLM calls and costs nothing to run")
    else:
        if any(r.kind == "llm" for r in task.reviewer):
            from .review.llm import estimate_review_cost

            est = estimate_review_cost(task, review_rows, stats.avg_chars)
            lines.append(CostLine(what="LLM review of the hard rows", calls=est["calls"], tokens_in=est["tokens_in"],
                                  tokens_out=est["tokens_out"], usd=est["usd"],
                                  note=f"at most {review_rows} rows (the review budget), {max(1, spec.batch_size)} a request"))
        if task.specialists == "auto" and not task.multi_label:  # a multi-label run selects no models
            from .controller.select import estimate_selection_cost

            sel = estimate_selection_cost(task)
            lines.append(CostLine(what="LLM model selection", calls=sel["calls"], tokens_in=sel["tokens_in"],
                                  tokens_out=sel["tokens_out"], usd=sel["usd"], note="once per run; twice if re-asked"))
        comparison.append(_baseline_line(task, stats, "zero-shot"))
        if price is not None and not price.known:
            warnings.append(
                f"the price of model {spec.model!r} is unknown, so every dollar figure here is $0; add "
                "llm.prices: {input: <$ per 1M tokens>, output: <$ per 1M tokens>} to the task file"
            )
        if not lines:
            warnings.append("the LLM is configured but the run does not use it (reviewer is not `llm`, specialists are listed)")
    plan = CostPlan(
        task=task.name, model=spec.model if spec else None, price_known=price.known if price else True,
        price_in=price.input if price else None, price_out=price.output if price else None, input=stats,
        review_rows=review_rows, lines=lines, comparison=comparison,
        budget_usd=spec.budget_usd if spec else None, budget_tokens=spec.budget_tokens if spec else None,
        warnings=warnings,
    )
    plan.warnings += _budget_warnings(plan)
    return plan


def _budget_warnings(plan: CostPlan) -> list[str]:
    review = next((line for line in plan.lines if line.what.startswith("LLM review")), None)
    out = []
    if plan.budget_usd is not None and not plan.price_known:
        out.append("llm.budget_usd is set but the model's price is unknown: the run will refuse to start until "
                   "llm.prices is set")
        return out
    for cap, spent, review_spent, unit in (
        (plan.budget_usd, plan.total_usd, review.usd if review else 0.0, "llm.budget_usd"),
        (plan.budget_tokens, plan.total_tokens, review.tokens_in + review.tokens_out if review else 0, "llm.budget_tokens"),
    ):
        if cap is None or spent <= cap or review is None or plan.review_rows == 0 or review_spent <= 0:
            continue
        left_for_review = max(0.0, cap - (spent - review_spent))
        rows = min(plan.review_rows, math.floor(plan.review_rows * left_for_review / review_spent + 1e-9))
        out.append(f"the estimate exceeds {unit} ({cap:g}): about {rows} of {plan.review_rows} hard rows would be "
                   "reviewed by the LLM, the rest left for a person")
    return out
