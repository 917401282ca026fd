"""`labeljury eval`: how good are the labels, and what did they cost?

Scores an output file against a gold column: accuracy, macro-F1, per-class scores, the confusion
matrix, the review rate, and the estimated accuracy the run reported without gold, beside the true
one. Every self-report is measured where it is honest:
- the unreviewed vote alone: on the rows the vote labeled (no version trained on them);
- each specialist alone: on the rows its final version never trained on (the run store's registry
  says which; without the run store, the unreviewed rows);
- the calibration of `annotation_confidence` (ECE): on the rows the vote labeled.
Rows the pipeline could not label count as wrong (and are reported as uncovered), never silently
dropped. The output is read in chunks: memory does not grow with its size. Gold values are matched
to labels by the one rule of `labels` (`1` matches the label "1", " Bullish" matches "bullish").
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import data, trust
from .errors import InputError
from .labels import canonical, key
from .llm.usage import LLMUsage, read_llm_usage
from .routing import in_sorted
from .sources import AUDIT, OUTWEIGHED, QUEUED, REVIEWED, UNREVIEWED
from .trust import CalibrationBins

ECE_BINS = 15


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
    vote_accuracy: float | None = None  # the vote on the rows it labeled (unreviewed)
    vote_rows: int = 0
    specialist_accuracy: dict[str, float] = field(default_factory=dict)  # on rows each never trained on
    specialist_rows: dict[str, int] = field(default_factory=dict)
    labeled_accuracy: float | None = None  # among rows with a label: what the estimate estimates
    estimated_accuracy: float | None = None  # what the run reported without gold
    estimated_accuracy_low: float | None = None
    estimated_accuracy_high: float | None = None
    estimate_covers_truth: bool | None = None
    estimate_note: str | None = None  # why there is no estimate, or why its interval is wide (`status.unmeasured_note`)
    audit_rows: int | None = None
    ece: float | None = None  # of annotation_confidence on the rows the vote labeled
    cost_usd: float | None = None  # what the run's LLM calls cost (None: no LLM was used)
    cost_per_row_usd: float | None = None  # that cost over every row of the output
    llm_tokens: int | None = None
    llm_calls: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _text(v: Any) -> str:
    return str(v).strip() if data.is_text(v) else ""


class _Run:
    """What the run store adds to an output: each row's text id, the final versions' votes and the
    rows each version trained on, the estimate. None when there is no matching finished run."""

    def __init__(self, output: Path, run_dir: Path | None, n_rows: int):
        from .pipeline import default_run_dir
        from .registry import read_registry
        from .store import RunStore

        self.store = None
        run_dir = run_dir or default_run_dir(output)
        if not (run_dir / "run.db").exists():
            return
        store = RunStore.existing(run_dir)
        if store.get_meta("kind") == "baseline" or store.n_rows != n_rows or not store.is_done("finalize"):
            store.close()
            return
        self.store = store
        self.labels = list((store.get_meta("task") or {}).get("labels") or [])
        self.trust = store.get_meta("trust") or {}
        self.audit_rows = len(store.routed(AUDIT))
        self.trained = {r.name: store.train_ids(r.name, r.version) for r in read_registry(store)
                        if r.versions and r.version > 0}

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


def _require_columns(output: Path, gold_column: str) -> list[str]:
    """The columns of `output`, which must hold the gold column and what `labeljury run` writes."""
    columns = data.input_columns(output)
    for col in (gold_column, "annotation", "annotation_source"):
        if col not in columns:
            hint = "set --gold-column" if col == gold_column else "pass a file written by `labeljury run`"
            raise InputError(f"column {col!r} is not in {output.name} (columns: {', '.join(map(str, columns))}); {hint}")
    return columns


@dataclass
class SetEvalReport:
    """`labeljury eval --multi-label`: label sets against gold sets (`labelsets.SetScores`)."""

    rows: int
    micro_f1: float
    macro_f1: float
    exact_set_accuracy: float
    hamming_loss: float
    coverage: float  # rows with a set (possibly empty) in `annotation`; a row without one counts as the empty set
    review_rate: float
    true_labels_per_row: float
    predicted_labels_per_row: float
    labels: list[str]
    per_label: dict[str, dict[str, float]]
    by_source: dict[str, dict[str, float]]  # rows and exact-set accuracy per annotation_source

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def evaluate_sets(output: str | Path, gold_column: str, separator: str = "|",
                  labels: list[str] | None = None) -> SetEvalReport:
    """Score the label sets of `output` (`annotation`) against the gold sets of `gold_column`: a set written as
    names joined by `separator`, as a JSON list, or a real list (JSONL, Parquet); `[]` is the empty set, an empty
    cell no set. `labels`: the task's label names (any other name is refused); None: every name seen is a label.
    A row without a gold set is not scored; a row without an annotation counts as the empty set (uncovered)."""
    from .labelsets import LabelSetError, LabelSets, SetScores

    output = Path(output)
    _require_columns(output, gold_column)
    sets = LabelSets(labels, separator, allow_empty=True)
    counts = SetScores()
    by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # rows, exact sets
    covered = reviewed = 0
    for chunk in data.iter_chunks(output, columns=[gold_column, "annotation", "annotation_source"]):
        start = int(chunk.index.start)

        def parsed(col: str) -> list[tuple[str, ...] | None]:
            out = []
            for i, v in enumerate(chunk[col].tolist()):
                try:
                    out.append(sets.parse(v))
                except LabelSetError as err:
                    raise InputError(f"{output.name} row {start + i + 1}, column {col!r}: {err}") from None
            return out

        gold_all, pred_all = parsed(gold_column), parsed("annotation")
        has = [g is not None for g in gold_all]  # a row without a gold set is not scored
        gold = [g for g, h in zip(gold_all, has) if h]
        pred = [p for p, h in zip(pred_all, has) if h]
        source = [str(x) for x, h in zip(chunk["annotation_source"].tolist(), has) if h]
        counts.add(gold, pred)
        for g, p, src in zip(gold, pred, source, strict=True):
            by_source[src][0] += 1
            by_source[src][1] += set(g) == set(p or ())
        covered += sum(p is not None for p in pred)
        reviewed += sum(1 for src in source if src.startswith((f"{REVIEWED}:", OUTWEIGHED)))
    if not counts.rows:
        raise InputError(f"no row of {output.name} has a gold set in {gold_column!r}; check --gold-column")
    names = sets.labels if labels is not None else sorted(sets.labels, key=key)
    sc = counts.scores(names)
    return SetEvalReport(
        rows=sc["rows"], micro_f1=sc["micro_f1"], macro_f1=sc["macro_f1"], exact_set_accuracy=sc["exact_set_accuracy"],
        hamming_loss=sc["hamming_loss"], coverage=covered / counts.rows, review_rate=reviewed / counts.rows,
        true_labels_per_row=sc["true_labels_per_row"], predicted_labels_per_row=sc["predicted_labels_per_row"],
        labels=names, per_label=sc["per_label"],
        by_source={src: {"rows": n, "exact_set_accuracy": e / n} for src, (n, e) in sorted(by_source.items())})


def evaluate(output: str | Path, gold_column: str, run_dir: str | Path | None = None) -> EvalReport:
    output = Path(output)
    columns = _require_columns(output, gold_column)
    want = [gold_column, "annotation", "annotation_source"]
    want += [c for c in ("annotation_confidence", "annotation_vote", "annotation_votes") if c in columns]
    n_rows = data.count_rows(output)
    run = _Run(output, Path(run_dir) if run_dir else None, n_rows)
    try:
        return _evaluate(output, gold_column, want, n_rows, run, run_dir)
    finally:
        run.close()


def _evaluate(output: Path, gold_column: str, want: list[str], n_rows: int, run: _Run,
              run_dir: str | Path | None) -> EvalReport:
    confusion: Counter[tuple[str, str]] = Counter()
    by_source: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    spelled: dict[str | None, str] = {key(lab): lab for lab in (run.labels if run.store else [])}
    rows = right = covered = reviewed = labeled = labeled_right = 0
    vote_seen = vote_right = 0
    spec_seen: Counter[str] = Counter()
    spec_right: Counter[str] = Counter()
    calibration = CalibrationBins(ECE_BINS)  # the ECE, a chunk at a time
    for chunk in data.iter_chunks(output, columns=want):
        start = int(chunk.index.start)
        gold_all = chunk[gold_column].tolist()
        has_gold = np.array([canonical(v) is not None for v in gold_all], bool)
        pred = [_text(v) for v in chunk["annotation"].tolist()]
        for p in pred:
            if p and key(p) not in spelled:
                spelled[key(p)] = p
        gold = [spelled.get(key(v), canonical(v)) for v in gold_all]
        source = [str(s) for s in chunk["annotation_source"].tolist()]
        ok = np.array([g == p for g, p in zip(gold, pred)], bool) & has_gold
        rows += int(has_gold.sum())
        right += int(ok.sum())
        has_label = np.array([bool(p) for p in pred], bool)
        covered += int((has_gold & has_label).sum())
        labeled += int((has_gold & has_label).sum())
        labeled_right += int((ok & has_label).sum())
        reviewed += sum(1 for s, h in zip(source, has_gold) if h and s.startswith((f"{REVIEWED}:", OUTWEIGHED)))
        for g, p, s, h in zip(gold, pred, source, has_gold):
            if h:
                confusion[(str(g), p)] += 1
                by_source[s][0] += 1
                by_source[s][1] += int(g == p)
        unrev = np.array([s in UNREVIEWED or s.startswith(f"{QUEUED}:") for s in source], bool) & has_gold
        if "annotation_confidence" in chunk:
            conf = pd.to_numeric(chunk["annotation_confidence"], errors="coerce").to_numpy(dtype=np.float64)
            m = unrev & ~np.isnan(conf)
            calibration.add(conf[m], ok[m])
        # the vote and each specialist, from the output's details or the run store
        votes, vote = _votes(chunk, run, start)
        if vote is not None:
            vote_seen += int(unrev.sum())
            vote_right += sum(1 for i in np.flatnonzero(unrev) if vote[i] == gold[i])
        if votes is not None:
            text_ids = run.store.row_text_ids(start, start + len(chunk))[0] if run.store is not None else None
            for name in sorted({n for d in votes for n in d}):
                if text_ids is None:
                    unseen = unrev  # without the run store, the rows no version trained on are the unreviewed
                else:
                    unseen = has_gold & (text_ids >= 0)
                    if name in run.trained:
                        unseen &= ~in_sorted(text_ids, run.trained[name])
                for i in np.flatnonzero(unseen):
                    spec_seen[name] += 1
                    spec_right[name] += int((votes[i].get(name) or "") == gold[i])
    if not rows:
        raise InputError(f"no row of {output.name} has a gold label in {gold_column!r}; check --gold-column")
    labels = sorted({g for g, _ in confusion} | ({p for _, p in confusion} - {""}))
    if run.store is not None and set(labels) <= set(run.labels):
        labels = run.labels
    per, macro, cm = _per_class(confusion, labels)
    report = EvalReport(
        rows=rows, accuracy=right / rows, macro_f1=macro, coverage=covered / rows, review_rate=reviewed / rows,
        labels=labels, per_class=per, confusion=cm,
        by_source={s: {"rows": n, "accuracy": r / n} for s, (n, r) in sorted(by_source.items())},
        vote_accuracy=vote_right / vote_seen if vote_seen else None, vote_rows=vote_seen,
        specialist_accuracy={n: spec_right[n] / spec_seen[n] for n in sorted(spec_seen) if spec_seen[n]},
        specialist_rows=dict(sorted(spec_seen.items())),
        labeled_accuracy=labeled_right / labeled if labeled else None)
    if calibration.rows.sum():
        report.ece = calibration.ece()
    if run.store is not None:
        overall = ((run.trust.get("estimates") or {}).get("overall") or {})
        report.estimated_accuracy = overall.get("accuracy")
        report.estimated_accuracy_low, report.estimated_accuracy_high = overall.get("low"), overall.get("high")
        report.audit_rows = run.audit_rows
        report.estimate_note = trust.unmeasured_note(run.trust.get("unmeasured") or {}, report.estimated_accuracy,
                                                     overall.get("unmeasured_rows") or 0)
        if report.estimated_accuracy_low is not None and report.labeled_accuracy is not None:
            report.estimate_covers_truth = bool(report.estimated_accuracy_low <= report.labeled_accuracy
                                                <= report.estimated_accuracy_high)
    usage = _llm_usage_for(output, Path(run_dir) if run_dir else None, n_rows)
    if usage is not None:
        report.cost_usd = usage.cost_usd
        report.cost_per_row_usd = usage.per_row(n_rows)
        report.llm_tokens = usage.tokens
        report.llm_calls = usage.calls
    return report


def _votes(chunk: Any, run: _Run, start: int) -> tuple[list[dict[str, Any]] | None, list[str] | None]:
    """Each row's specialist votes and unreviewed vote: the `--details` columns, else the run store."""
    if "annotation_votes" in chunk and "annotation_vote" in chunk:
        votes = [json.loads(v) if data.is_text(v) else {} for v in chunk["annotation_votes"].tolist()]
        return votes, [_text(v) for v in chunk["annotation_vote"].tolist()]
    if run.store is None:
        return None, None
    ids, _ = run.store.row_text_ids(start, start + len(chunk))
    fin = run.store.final_for(ids)
    recs = [fin.get(int(t)) if t >= 0 else None for t in ids]
    return ([json.loads(r.specialist_votes) if r and r.specialist_votes else {} for r in recs],
            [(r.vote or "") if r else "" for r in recs])


def _per_class(confusion: Counter[tuple[str, str]], labels: list[str]) -> tuple[dict[str, dict[str, float]], float,
                                                                                list[list[int]]]:
    per: dict[str, dict[str, float]] = {}
    for lab in labels:
        tp = confusion[(lab, lab)]
        fp = sum(n for (g, p), n in confusion.items() if p == lab and g != lab)
        fn = sum(n for (g, p), n in confusion.items() if g == lab and p != lab)
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        per[lab] = {"precision": p, "recall": r, "f1": f, "support": tp + fn}
    macro = float(np.mean([v["f1"] for v in per.values()])) if per else 0.0
    cm = [[confusion[(g, p)] for p in labels] for g in labels]
    return per, macro, cm


def _llm_usage_for(output: Path, run_dir: Path | None, n: int) -> LLMUsage | None:
    """The LLM usage of the run that wrote `output`: its run directory must hold that many rows
    (a pipeline run) or name `output` (a baseline); else no cost is reported."""
    from .pipeline import default_run_dir
    from .store import RunStore

    run_dir = run_dir or default_run_dir(output)
    usage = read_llm_usage(run_dir)
    if usage is None:
        return None
    with RunStore.existing(run_dir) as store:
        if store.get_meta("kind") == "baseline":
            meta = store.get_meta("baseline") or {}
            same = meta.get("output") == str(output.resolve()) or meta.get("rows") == n
        else:
            same = store.n_rows == n
    return usage if same else None


def _scores_table(title: str, scores: dict[str, dict[str, float]]) -> Any:
    """Each label's precision, recall, F1 and support, as a rich table."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("label", "precision", "recall", "F1", "support"):
        table.add_column(col)
    for lab, v in scores.items():
        table.add_row(lab, f"{v['precision']:.3f}", f"{v['recall']:.3f}", f"{v['f1']:.3f}", str(v["support"]))
    return table


def render_sets(report: SetEvalReport) -> Any:
    """A rich renderable of a multi-label report."""
    from rich.console import Group
    from rich.table import Table

    head = Table(title="label sets vs gold", show_header=False)
    head.add_row("rows", str(report.rows))
    head.add_row("micro-F1", f"{report.micro_f1:.4f}")
    head.add_row("macro-F1", f"{report.macro_f1:.4f} (over the labels that occur in gold or annotation)")
    head.add_row("exact-set accuracy", f"{report.exact_set_accuracy:.2%}")
    head.add_row("Hamming loss", f"{report.hamming_loss:.4f}")
    head.add_row("labels per row", f"{report.predicted_labels_per_row:.2f} annotated, {report.true_labels_per_row:.2f} true")
    head.add_row("coverage", f"{report.coverage:.2%}")
    head.add_row("review rate", f"{report.review_rate:.2%}")
    per = _scores_table("per label", report.per_label)
    src = Table(title="by source")
    for col in ("source", "rows", "exact-set accuracy"):
        src.add_column(col)
    for s, v in report.by_source.items():
        src.add_row(s, str(v["rows"]), f"{v['exact_set_accuracy']:.2%}")
    return Group(head, per, src)


def render(report: EvalReport) -> Any:
    """A rich renderable of the report."""
    from rich.console import Group
    from rich.table import Table

    head = Table(title="labels vs gold", show_header=False)
    head.add_row("rows", str(report.rows))
    head.add_row("accuracy", f"{report.accuracy:.2%}")
    if report.estimated_accuracy is not None:
        interval = ("" if report.estimated_accuracy_low is None else
                    f" (95% interval {report.estimated_accuracy_low:.1%} - {report.estimated_accuracy_high:.1%})")
        truth = "" if report.labeled_accuracy is None else f"; true {report.labeled_accuracy:.2%} of labeled rows"
        point = f"{report.estimated_accuracy:.2%}{interval}"
        if report.estimate_note is not None and report.estimated_accuracy_low is not None:  # no point to ship on
            point = f"between {report.estimated_accuracy_low:.1%} and {report.estimated_accuracy_high:.1%} (95%)"
        head.add_row("estimated without gold", f"{point}, from {report.audit_rows} audit rows{truth}")
    if report.estimate_note is not None:
        head.add_row("the estimate", report.estimate_note)
    head.add_row("macro-F1", f"{report.macro_f1:.4f}")
    head.add_row("coverage", f"{report.coverage:.2%}")
    head.add_row("review rate", f"{report.review_rate:.2%}")
    if report.ece is not None:
        head.add_row("calibration error (ECE, rows the vote labeled)", f"{report.ece:.3f}")
    if report.vote_accuracy is not None:
        head.add_row("unreviewed vote alone", f"{report.vote_accuracy:.2%} of {report.vote_rows} rows")
    for name, acc in report.specialist_accuracy.items():
        head.add_row(f"specialist {name} alone", f"{acc:.2%} of {report.specialist_rows[name]} rows it never trained on")
    if report.cost_usd is not None:
        head.add_row("LLM cost", f"${report.cost_usd:.4f} ({report.llm_calls} calls, {report.llm_tokens} tokens)")
    if report.cost_per_row_usd is not None:
        head.add_row("LLM cost per row", f"${report.cost_per_row_usd:.6f}")
    per = _scores_table("per class", report.per_class)
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
