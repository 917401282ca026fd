"""Model selection (the paper's "select SLMs"): the LLM picks k candidates and proposes label maps.

The answer is typed: a candidate id can only be one of the listed candidates, a label map entry
only pairs one of that model's labels with a task label. An invalid answer is asked again once
(with the validation error); after that, or on any failure (budget, timeouts), the selection falls
back to the catalog's default `auto_specialists` and says why. The LLM never names a model that
was not listed, and nothing it writes is executed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from ..llm.cache import CallCache
from ..llm.client import LLMClient
from ..llm.cost import MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS, estimate_tokens, price_for
from ..llm.prompt import format_examples, label_type, task_header
from ..llm.structured import ask
from ..progress import Progress
from ..specialists.catalog import auto_specialists
from ..task import SpecialistSpec, Task
from .candidates import Candidate, gather_candidates

log = logging.getLogger(__name__)

DEFAULT_K = 3  # the paper's ablation: 3 specialists did best
_ROLE = (
    "You choose the small models (specialists) that will label this task's texts by voting; a person or "
    "an LLM reviews only the texts they disagree on. Choose exactly {k} different candidates that together "
    "suit the task best: models trained on similar texts and labels, a mix of kinds (pre-trained "
    "classifiers work from the start; trainable heads learn from the reviewed texts), popular models. "
    "For a candidate with labels of its own, give its label map: each of its labels that corresponds to a "
    "task label, with that task label (leave out labels with no counterpart; several may map to one task "
    "label). A candidate that already speaks the task's labels takes an empty label map. "
    "Give a one-sentence reason for each choice."
)


def _lower_index(labels: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for label in labels:
        out.setdefault(label.lower(), label)
    return out


def selection_model(candidates: Sequence[Candidate], task_labels: Sequence[str], k: int) -> type[BaseModel]:
    """The answer schema: `picks`, each an `id` among the candidates, a `label_map` (a list of
    `{model_label, task_label}` pairs: OpenAI's strict mode allows no free-form objects) and a
    `reason`; validated against each candidate's own labels."""
    by_id = {c.id: c for c in candidates}
    want = min(k, len(by_id))
    own = sorted({label for c in candidates if c.own_labels for label in c.labels})
    closed = ConfigDict(extra="forbid")
    entry = create_model(
        "MapEntry",
        __config__=closed,
        model_label=(label_type(own) if own else str, ...),
        task_label=(label_type(task_labels), ...),
    )
    pick = create_model(
        "Pick",
        __config__=closed,
        id=(Literal[tuple(by_id)], Field(description="a candidate id")),  # type: ignore[valid-type]
        label_map=(list[entry], Field(description="the candidate's labels mapped to task labels")),  # type: ignore[valid-type]
        reason=(str, Field(description="one sentence")),
    )

    def check(answer: Any) -> Any:
        ids = [p.id for p in answer.picks]
        if len(ids) != want or len(set(ids)) != want:
            raise ValueError(f"choose exactly {want} different candidates, got {len(set(ids))} different of {len(ids)}")
        for p in answer.picks:
            c = by_id[p.id]
            if not c.own_labels:
                continue
            mine = _lower_index(c.labels)
            seen: set[str] = set()
            for e in p.label_map:
                key = e.model_label.lower()
                if key not in mine:
                    raise ValueError(f"{p.id} has no label {e.model_label!r}; its labels are {c.labels}")
                if key in seen:
                    raise ValueError(f"label_map of {p.id} maps {e.model_label!r} twice")
                seen.add(key)
            if len({e.task_label for e in p.label_map}) < 2:
                raise ValueError(f"label_map of {p.id} must map its labels onto at least two task labels")
        return answer

    return create_model(
        "Selection",
        __config__=closed,
        __validators__={"check": model_validator(mode="after")(check)},
        picks=(list[pick], Field(description=f"exactly {want} candidates")),  # type: ignore[valid-type]
    )


def _candidate_line(c: Candidate) -> str:
    item: dict[str, Any] = {"id": c.id, "labels": c.labels if c.own_labels else "the task's labels"}
    if c.trainable:
        item["trainable"] = True
    if c.downloads is not None:
        item["downloads"] = c.downloads
    item["about"] = c.description
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


def selection_messages(task: Task, candidates: Sequence[Candidate], k: int) -> list[dict[str, str]]:
    system = "\n\n".join(p for p in (task_header(task), _ROLE.format(k=min(k, len(candidates)))) if p)
    user = "\n".join(["Candidates (one JSON object a line):", *map(_candidate_line, candidates)])
    shots = format_examples(task.examples[:3])
    return [{"role": "system", "content": system}, {"role": "user", "content": f"{user}\n\n{shots}".strip()}]


def answer_tokens(k: int, labels_per_map: int = 3) -> int:
    """A generous bound of the answer's length: ids, label maps and reasons of k picks."""
    entry = '{"model_label":"negative-sentiment","task_label":"negative-sentiment"},'
    reason = "This model was trained on texts and labels very much like this task's ones."
    pick = f'{{"id":"some-organisation/some-model-name-base-sentiment","label_map":[{entry * labels_per_map}],"reason":"{reason}"}},'
    return estimate_tokens(f'{{"picks":[{pick * k}]}}')


@dataclass
class SelectionResult:
    """What `select` decided: the specs, and whether they are the LLM's picks or the fallback."""

    specs: list[SpecialistSpec]
    fallback: bool
    why: str | None = None  # why the fallback was used (an abstention reason)
    reasons: dict[str, str] = field(default_factory=dict)  # spec id -> the LLM's one-sentence reason
    candidates: list[Candidate] = field(default_factory=list)
    cost_usd: float = 0.0


def _to_specs(task: Task, answer: Any, by_id: dict[str, Candidate]) -> tuple[list[SpecialistSpec], dict[str, str]]:
    defaults = {s.id: s.options for s in auto_specialists(task)}  # e.g. heads reading VADER on sentiment
    specs, reasons = [], {}
    for p in answer.picks:
        c = by_id[p.id]
        label_map = None
        if c.own_labels:
            mine = _lower_index(c.labels)
            label_map = {mine[e.model_label.lower()]: e.task_label for e in p.label_map}
        spec_id = c.spec_id()
        specs.append(SpecialistSpec(id=spec_id, label_map=label_map, options=dict(defaults.get(spec_id, {}))))
        reasons[spec_id] = p.reason.strip()
    return specs, reasons


def select(
    task: Task,
    client: LLMClient,
    *,
    hub: bool = True,
    k: int = DEFAULT_K,
    candidates: Sequence[Candidate] | None = None,
    cache: CallCache | None = None,
    ledger: Any = None,
    **hub_kwargs: Any,
) -> SelectionResult:
    """Ask the LLM to choose `k` specialists among `candidates` (default: the catalog plus, with
    `hub`, the hub's matches). Falls back to `auto_specialists(task)` when the answer stays invalid
    after one re-ask or the call fails."""
    pool = list(candidates) if candidates is not None else gather_candidates(task, hub=hub, **hub_kwargs)
    by_id = {c.id: c for c in pool}
    schema = selection_model(pool, task.label_names, k)
    messages = selection_messages(task, pool, k)
    limit = max(client.spec.max_tokens, answer_tokens(min(k, len(pool))))
    answer = client.run(ask(client, messages, schema, cache=cache, ledger=ledger, max_tokens=limit))
    if answer.value is None:
        why = answer.reason or "invalid-answer"
        log.warning("LLM model selection failed (%s): using the default specialists", why)
        return SelectionResult(auto_specialists(task), True, why, {}, pool, answer.cost_usd)
    specs, reasons = _to_specs(task, answer.value, by_id)
    return SelectionResult(specs, False, None, reasons, pool, answer.cost_usd)


def select_specialists(task: Task, client: LLMClient, hub: bool = True, **kwargs: Any) -> list[SpecialistSpec]:
    """The pipeline's entry point for `specialists: auto` with an `llm:` section: the LLM's k picks
    with their label maps, or the catalog's defaults when the LLM gives no valid answer. Pass the run's
    call cache (`cache=`) and ledger (`ledger=`) so a resumed run asks for free and under the budget."""
    return select(task, client, hub=hub, **kwargs).specs


def estimate_selection_cost(task: Task, *, k: int = DEFAULT_K, hub_limit: int = 10) -> dict[str, Any]:
    """Tokens and dollars of one selection call (two when re-asked: the worst case is reported),
    without contacting the hub: `hub_limit` typical hub candidates stand in for the real ones."""
    from .candidates import catalog_candidates

    spec = task.llm
    if spec is None:
        return {"tokens_in": 0, "tokens_out": 0, "usd": 0.0, "calls": 0, "price_known": True}
    stand_ins = [
        Candidate(id=f"some-organisation/a-text-classifier-model-{i:02d}", source="hub",
                  description="hub text classifier (transformers); en, dataset:tweet_eval",
                  labels=["negative", "neutral", "positive"], own_labels=True, downloads=123456)
        for i in range(hub_limit)
    ]
    pool = catalog_candidates(task) + stand_ins
    messages = selection_messages(task, pool, k)
    prompt = sum(estimate_tokens(m["content"]) for m in messages) + 2 * MESSAGE_OVERHEAD_TOKENS + REQUEST_OVERHEAD_TOKENS
    out = answer_tokens(min(k, len(pool)))
    price = price_for(spec)
    return {"tokens_in": prompt, "tokens_out": out, "usd": price.cost_usd(prompt, out), "calls": 1,
            "price_known": price.known}


def select_for_run(task: Task, run_dir: Path, progress: Progress) -> list[SpecialistSpec]:
    """The specialists of a run with `specialists: auto` and an `llm:` section: the LLM's picks among
    the catalog and the hub's text classifiers, plus the trainable heads, which always join them.
    A run that chose before (its run store holds the choice) keeps its choice, even if the hub changed;
    the pipeline saves a new choice in the run store."""
    from ..llm import LLMClient, Ledger, SQLiteCallCache
    from ..llm.journal import SQLiteSpendJournal
    from ..errors import RunStoreError
    from ..store import RunStore, check_store_file

    if (run_dir / "run.db").exists():
        check_store_file(run_dir / "run.db", fresh_ok=True)  # a foreign or damaged file stops here, before spending
        try:
            with RunStore.existing(run_dir) as store:
                saved = store.get_meta("selected_specialists")
        except RunStoreError:  # a fresh one: only the LLM reviewer's cache so far, no choice saved yet
            saved = None
        if saved is not None:
            return [SpecialistSpec.model_validate(sp) for sp in saved]
    assert task.llm is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    cache = SQLiteCallCache(run_dir / "run.db")
    try:
        client = LLMClient(task.llm)
        journal = SQLiteSpendJournal(run_dir / "run.db", client.model_id)
        try:
            result = select(task, client, hub=True, cache=cache, ledger=Ledger.for_spec(task.llm, journal=journal))
        finally:
            client.close()
            journal.close()
    finally:
        cache.close()
    picked = list(result.specs)
    ids = {sp.id for sp in picked}
    picked += [sp for sp in auto_specialists(task) if sp.id.endswith("-head") and sp.id not in ids]
    progress.log(f"LLM selected specialists: {', '.join(sp.id for sp in picked)}"
                 + (f" (fallback: {result.why})" if result.fallback else ""))
    return picked
