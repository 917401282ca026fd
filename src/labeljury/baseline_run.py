"""`labeljury baseline`: label a whole file with the LLM(s) alone, in the pipeline's output format.

The input is streamed in chunks; each chunk's unique texts are labeled by `baseline.label_with_llm`
and written with the three annotation columns (`annotation`, `annotation_confidence`,
`annotation_source`), so `labeljury eval` scores a baseline exactly like a pipeline run. Every call
is cached in the run directory's `run.db`: rerunning an interrupted (or finished) baseline pays
only for the calls not made yet, and the budget starts from what was already paid.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import yaml
from pydantic import ValidationError

from . import data
from .baseline import Method, label_with_llm
from .errors import InputError, LLMError, RunStoreError
from .llm.cache import SQLiteCallCache
from .llm.client import LLMClient
from .llm.cost import Ledger
from .llm.journal import SQLiteSpendJournal
from .llm.prompt import Embed
from .llm.usage import LLMUsage, read_llm_usage
from .progress import Progress, SilentProgress
from .store import RunStore
from .task import LLMSpec, Task

METHODS: tuple[str, ...] = ("zero-shot", "few-shot", "cot", "vote")
ANNOTATION_COLUMNS = ("annotation", "annotation_confidence", "annotation_source")
CHUNK_ROWS = 1000
# LLM settings that do not change an answer: a baseline can be resumed with other values
_NOT_IN_ANSWERS = {"budget_usd", "budget_tokens", "concurrency", "timeout", "max_retries", "prices", "batch_size"}


@dataclass
class BaselineReport:
    method: str
    models: list[str]
    output: Path
    run_dir: Path
    rows: int
    sources: dict[str, int] = field(default_factory=dict)
    usage: LLMUsage | None = None
    budget_exhausted: bool = False

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.sources.items()))
        cost = ""
        if self.usage is not None:
            per_row = self.usage.per_row(self.rows) or 0.0
            cost = f"; LLM cost ${self.usage.cost_usd:.4f} (${per_row:.6f} a row, {self.usage.tokens} tokens)"
        stop = "; the LLM budget ran out: the remaining rows are queued" if self.budget_exhausted else ""
        return f"{self.method} baseline labeled {self.rows} rows ({parts}){cost}{stop}; output {self.output}"


def load_llm_file(path: str | Path) -> LLMSpec:
    """An `llm:` mapping (the task file's keys) from a YAML file of its own, for extra voters."""
    p = Path(path)
    if not p.is_file():
        raise LLMError(f"LLM file {str(p)!r} does not exist; give a YAML file with model, base_url, api_key_env")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise LLMError(f"LLM file {str(p)!r} cannot be read as YAML ({type(err).__name__})") from None
    if isinstance(raw, dict) and isinstance(raw.get("llm"), dict):
        raw = raw["llm"]
    try:
        return LLMSpec.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "llm"
        raise LLMError(f"LLM file {str(p)!r}: {loc}: {first['msg']}") from None


def baseline_specs(task: Task, method: str, models: Sequence[str] = (), llm_files: Sequence[str | Path] = ()) -> list[LLMSpec]:
    """The LLMs of a baseline: the task's `llm`, or one copy of it per `--model` name, plus one per
    `--llm` file. `vote` needs two or more; the other methods exactly one."""
    if method not in METHODS:
        raise LLMError(f"unknown baseline method {method!r}; use one of {', '.join(METHODS)}")
    if task.llm is None and (models or not llm_files):
        raise LLMError("the baseline needs an LLM: add an `llm:` section (model, base_url, api_key_env) to the task file")
    specs = [cast(LLMSpec, task.llm).model_copy(update={"model": m}) for m in models]
    specs += [load_llm_file(f) for f in llm_files]
    if not specs:
        specs = [cast(LLMSpec, task.llm)]
    if method == "vote" and len(specs) < 2:
        raise LLMError("the vote baseline needs at least two LLMs: pass --model NAME (repeatable) or --llm FILE.yaml")
    if method != "vote" and len(specs) != 1:
        raise LLMError(f"the {method} baseline uses one LLM; pass at most one --model or --llm (or use --method vote)")
    names = [s.model for s in specs]
    if len(set(names)) != len(names):
        raise LLMError(f"the vote baseline's LLMs must be different models, got {names}")
    if method == "few-shot" and not task.examples:
        raise LLMError("the few-shot baseline needs examples: add `examples:` (text and label) to the task file")
    return specs


def _fingerprint(task: Task, method: str, specs: Sequence[LLMSpec], input_path: Path) -> str:
    payload = {
        "task": task.fingerprint(),
        "method": method,
        "llms": [s.model_dump(mode="json", exclude=_NOT_IN_ANSWERS) for s in specs],
        "input": str(input_path.resolve()),
        "sha256": data.file_digest(input_path),  # an edit anywhere in the input is a new baseline
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _open_run(run_dir: Path, fingerprint: str, meta: dict[str, Any]) -> None:
    with RunStore(run_dir) as store:
        kind = store.get_meta("kind")
        if kind != "baseline" and store.get_meta("fingerprint") is not None:
            raise RunStoreError(f"run directory {str(run_dir)!r} holds a pipeline run; pass another --run-dir for the baseline")
        old = store.get_meta("baseline_fingerprint")
        if old is not None and old != fingerprint:
            raise RunStoreError(
                f"run directory {str(run_dir)!r} holds a baseline of another task, input, method or LLM; "
                "pass a new --run-dir (or delete that one)"
            )
        store.set_meta("kind", "baseline")
        store.set_meta("baseline_fingerprint", fingerprint)
        store.set_meta("baseline", meta)
        store.set_meta("input_path", meta["input"])


def _embedder(task: Task) -> Embed | None:
    if len(task.examples) <= 8:  # every example fits the prompt: nothing to choose
        return None
    from .specialists import DEFAULT_ENCODER, get_encoder

    return get_encoder(DEFAULT_ENCODER).encode


def run_baseline(
    task: Task,
    input_path: str | Path,
    output: str | Path,
    method: str,
    specs: Sequence[LLMSpec],
    run_dir: str | Path | None = None,
    *,
    progress: Progress | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> BaselineReport:
    """Label every row of `input_path` with the LLM(s) `specs` by `method`; write `output`."""
    progress = progress or SilentProgress()
    input_path, output = Path(input_path), Path(output)
    run_dir = Path(run_dir) if run_dir is not None else output.with_name(output.name + ".run")
    columns = data.check_input(input_path, task.text_column)
    taken = [c for c in ANNOTATION_COLUMNS if c in columns]
    if taken:
        raise InputError(f"{input_path.name} already has a column {taken[0]!r}; rename or drop it so labeljury can add its own")
    data.check_output(output, input_path)
    meta = {"method": method, "models": [s.model for s in specs], "task": task.name,
            "input": str(input_path.resolve()), "output": str(output.resolve()), "done": False}
    _open_run(run_dir, _fingerprint(task, method, specs, input_path), meta)
    if task.multi_label:  # `labeljury eval OUTPUT` then scores the output as sets, by the task's labels
        with RunStore(run_dir) as store:
            store.set_meta("task", task.model_dump(mode="json"))
    clients: list[LLMClient] = []
    cache = SQLiteCallCache(run_dir / "run.db")
    ledgers: list[Ledger] = []
    try:
        clients += [LLMClient(s) for s in specs]
        ledgers += [Ledger.for_spec(c.spec, journal=SQLiteSpendJournal(run_dir / "run.db", c.model_id)) for c in clients]
        embed = _embedder(task) if method == "few-shot" else None
        sources: Counter[str] = Counter()
        rows = 0
        sets = task.label_sets  # a multi-label task's sets: lists in JSONL and Parquet, as `labeljury run` writes them
        as_list = sets is not None and data.ChunkWriter.format_of(output) != "csv"
        total = data.count_rows(input_path)
        with data.ChunkWriter(output) as writer, progress.bar(f"{method} baseline ({', '.join(meta['models'])})", total) as bar:
            for chunk in data.iter_chunks(input_path, chunk_rows=chunk_rows):
                values = chunk[task.text_column].tolist()
                unique = list(dict.fromkeys(v for v in values if data.is_text(v)))
                labeled = dict(zip(unique, label_with_llm(task, unique, cast(Method, method), clients, cache=cache,
                                                          ledgers=ledgers, embed=embed), strict=True))
                out = [labeled.get(v, (None, None, "skipped:empty")) if data.is_text(v) else (None, None, "skipped:empty")
                       for v in values]
                chunk = chunk.copy()
                chunk["annotation"] = [r[0] for r in out] if not as_list else \
                    [None if r[0] is None else list(sets.parse(r[0]) or ()) for r in out]
                chunk["annotation_confidence"] = np.array([np.nan if r[1] is None else r[1] for r in out], dtype=np.float64)
                chunk["annotation_source"] = [r[2] for r in out]
                writer.write(chunk)
                sources.update(r[2] for r in out)
                rows += len(chunk)
                bar.advance(len(chunk))
    finally:
        for c in clients:
            c.close()
        for ledger in ledgers:
            if ledger.journal is not None:
                ledger.journal.close()
        cache.close()
    meta.update(done=True, rows=rows, sources=dict(sources))
    with RunStore(run_dir) as store:
        store.set_meta("baseline", meta)
    return BaselineReport(method, meta["models"], output, run_dir, rows, dict(sources), read_llm_usage(run_dir),
                          any(ledger.exhausted for ledger in ledgers))
