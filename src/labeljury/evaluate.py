"""`labeljury eval`: how good are the labels, and what did they cost?

Scores an output file against a gold column: accuracy, macro-F1, per-class scores, the confusion
matrix, the review rate, and — from the run store or the `--details` columns — the accuracy of each
specialist alone and of the unreviewed vote alone, so the paper's table can be rebuilt. Rows the
pipeline could not label count as wrong (and are reported as uncovered), never silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import data
from .errors import InputError
from .llm.usage import LLMUsage, read_llm_usage


@dataclass
class EvalReport:
    rows: int
    accuracy: float
    macro_f1: float
    coverage: float
    review_rate: float
    labels: list[str]
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    by_source: dict[str, dict[str, float]]
    vote_accuracy: float | None = None
    specialist_accuracy: dict[str, float] = field(default_factory=dict)
    cost_usd: float | None = None  # what the run's LLM calls cost (None: no LLM was used)
    cost_per_row_usd: float | None = None  # that cost over every row of the output
    llm_tokens: int | None = None
    llm_calls: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _scores(gold: np.ndarray, pred: np.ndarray, labels: list[str]) -> tuple[float, float, dict[str, dict[str, float]], list[list[int]]]:
    acc = float((gold == pred).mean()) if len(gold) else 0.0
    per: dict[str, dict[str, float]] = {}
    for lab in labels:
        tp = int(((pred == lab) & (gold == lab)).sum())
        fp = int(((pred == lab) & (gold != lab)).sum())
        fn = int(((pred != lab) & (gold == lab)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per[lab] = {"precision": p, "recall": r, "f1": f, "support": int((gold == lab).sum())}
    macro = float(np.mean([v["f1"] for v in per.values()])) if per else 0.0
    idx = {lab: i for i, lab in enumerate(labels)}
    cm = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, pred):
        if g in idx and p in idx:
            cm[idx[g]][idx[p]] += 1
    return acc, macro, per, cm


def _details_from_store(output: Path, run_dir: Path | None, n: int) -> pd.DataFrame | None:
    from .pipeline import default_run_dir
    from .store import RunStore

    run_dir = run_dir or default_run_dir(output)
    if not (run_dir / "run.db").exists():
        return None
    store = RunStore(run_dir)
    try:
        if store.n_rows != n or not store.is_done("finalize"):
            return None
        ids, _ = store.row_text_ids(0, n)
        fin = store.final_for(ids)
        recs = [fin.get(int(t)) if t >= 0 else None for t in ids]
        return pd.DataFrame({"annotation_vote": [r[3] if r else None for r in recs],
                             "annotation_votes": [r[5] if r else None for r in recs]})
    finally:
        store.close()


def _llm_usage_for(output: Path, run_dir: Path | None, n: int) -> LLMUsage | None:
    """The LLM usage of the run that wrote `output`: its run directory must hold that many rows
    (a pipeline run) or name `output` (a baseline); else no cost is reported."""
    from .pipeline import default_run_dir
    from .store import RunStore

    run_dir = run_dir or default_run_dir(output)
    usage = read_llm_usage(run_dir)
    if usage is None:
        return None
    with RunStore(run_dir) as store:
        if store.get_meta("kind") == "baseline":
            meta = store.get_meta("baseline") or {}
            same = meta.get("output") == str(output.resolve()) or meta.get("rows") == n
        else:
            same = store.n_rows == n
    return usage if same else None


def evaluate(output: str | Path, gold_column: str, run_dir: str | Path | None = None) -> EvalReport:
    output = Path(output)
    df = data.read_table(output)
    for col in (gold_column, "annotation", "annotation_source"):
        if col not in df.columns:
            hint = "set --gold-column" if col == gold_column else "pass a file written by `labeljury run`"
            raise InputError(f"column {col!r} is not in {output.name} (columns: {', '.join(map(str, df.columns))}); {hint}")
    has_gold = df[gold_column].map(data.is_text)
    df = df[has_gold].reset_index(drop=True)
    if df.empty:
        raise InputError(f"no row of {output.name} has a gold label in {gold_column!r}; check --gold-column")
    gold = df[gold_column].astype(str).str.strip().to_numpy()
    pred = df["annotation"].map(lambda v: str(v).strip() if data.is_text(v) else "").to_numpy()
    labels = sorted(set(gold) | (set(pred) - {""}))
    acc, macro, per, cm = _scores(gold, pred, labels)
    source = df["annotation_source"].astype(str)
    by_source = {}
    for src, part in df.groupby(source):
        g = part[gold_column].astype(str).str.strip().to_numpy()
        p = part["annotation"].map(lambda v: str(v).strip() if data.is_text(v) else "").to_numpy()
        by_source[str(src)] = {"rows": int(len(part)), "accuracy": float((g == p).mean())}
    report = EvalReport(
        rows=len(df), accuracy=acc, macro_f1=macro, coverage=float((pred != "").mean()),
        review_rate=float(source.str.startswith("reviewed:").mean()), labels=labels,
        per_class=per, confusion=cm, by_source=by_source)

    usage = _llm_usage_for(output, Path(run_dir) if run_dir else None, int(len(has_gold)))
    if usage is not None:
        report.cost_usd = usage.cost_usd
        report.cost_per_row_usd = usage.per_row(int(len(has_gold)))
        report.llm_tokens = usage.tokens
        report.llm_calls = usage.calls

    details = df if "annotation_votes" in df.columns else None
    if details is None:
        full = _details_from_store(output, Path(run_dir) if run_dir else None, int(len(has_gold)))
        if full is not None:
            details = full[has_gold.to_numpy()].reset_index(drop=True)
    if details is not None:
        vote = details["annotation_vote"].map(lambda v: v if data.is_text(v) else "").to_numpy()
        report.vote_accuracy = float((vote == gold).mean())
        votes = details["annotation_votes"].map(lambda v: json.loads(v) if data.is_text(v) else {})
        names = sorted({k for d in votes for k in d})
        for name in names:
            p = np.array([d.get(name) or "" for d in votes])
            report.specialist_accuracy[name] = float((p == gold).mean())
    return report


def render(report: EvalReport) -> Any:
    """A rich renderable of the report."""
    from rich.console import Group
    from rich.table import Table

    head = Table(title="labels vs gold", show_header=False)
    head.add_row("rows", str(report.rows))
    head.add_row("accuracy", f"{report.accuracy:.2%}")
    head.add_row("macro-F1", f"{report.macro_f1:.4f}")
    head.add_row("coverage", f"{report.coverage:.2%}")
    head.add_row("review rate", f"{report.review_rate:.2%}")
    if report.vote_accuracy is not None:
        head.add_row("unreviewed vote alone", f"{report.vote_accuracy:.2%}")
    for name, acc in report.specialist_accuracy.items():
        head.add_row(f"specialist {name} alone", f"{acc:.2%}")
    if report.cost_usd is not None:
        head.add_row("LLM cost", f"${report.cost_usd:.4f} ({report.llm_calls} calls, {report.llm_tokens} tokens)")
    if report.cost_per_row_usd is not None:
        head.add_row("LLM cost per row", f"${report.cost_per_row_usd:.6f}")
    per = Table(title="per class")
    for col in ("label", "precision", "recall", "F1", "support"):
        per.add_column(col)
    for lab, v in report.per_class.items():
        per.add_row(lab, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
    cm = Table(title="confusion (rows: gold, columns: annotation)")
    cm.add_column("")
    for lab in report.labels:
        cm.add_column(lab)
    for lab, row in zip(report.labels, report.confusion):
        cm.add_row(lab, *map(str, row))
    src = Table(title="by source")
    for col in ("source", "rows", "accuracy"):
        src.add_column(col)
    for s, v in sorted(report.by_source.items()):
        src.add_row(s, str(v["rows"]), f"{v['accuracy']:.2%}")
    return Group(head, per, cm, src)
