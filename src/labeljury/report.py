"""`labeljury report`: one self-contained HTML page about a run, plots first.

The estimated accuracy and its interval (and the true accuracy, with `--gold-column`), a reliability
diagram, the vote's accuracy on the audit stage by stage, the confusion matrix on the audit, the review
spend against the budgets, rows per source, and each specialist with its vote weight and audit
accuracy. Plots are Plotly figures; plotly.js is inlined once, so the page opens without a network.
Everything shown comes from the run store (and the input's gold column, when asked).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from . import data
from .errors import InputError, RunStoreError
from .labels import LabelMatcher
from .sources import AUDIT, UNREVIEWED
from .status import continued_lines, run_status, unmeasured_note, weighing_lines
from .store import RunStore

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>labeljury report: {{ task }}</title>
<style>
 body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
 h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
 .headline { font-size: 1.3em; margin: .5em 0 1em; } .note { color: #666; font-size: .9em; }
 .plot { width: 100%; height: 380px; }
 table { border-collapse: collapse; font-size: .9em; } td, th { border: 1px solid #ddd; padding: .25em .6em; }
</style>
<script>{{ plotly_js | safe }}</script></head>
<body>
<h1>labeljury report: {{ task }}</h1>
<p class="note">Run {{ run_dir }}, {{ rows }} rows ({{ texts }} unique texts), state: {{ state }}.</p>
<p class="headline">{{ headline }}</p>
{% for section in sections %}
<h2>{{ section.title }}</h2>
{% if section.note %}<p class="note">{{ section.note }}</p>{% endif %}
{% if section.plot %}<div class="plot" id="{{ section.id }}"{% if section.height %} style="height: {{ section.height }}px"{% endif %}></div>{% endif %}
{% if section.table %}<table>{% for row in section.table %}<tr>{% for cell in row %}<td>{{ cell }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
{% endfor %}
<script>
const figures = {{ figures | safe }};
for (const [id, fig] of Object.entries(figures)) {
  Plotly.newPlot(id, fig.data, fig.layout, {displaylogo: false, responsive: true});
}
</script>
</body></html>
"""


class _Sections:
    """The page's sections, each a note and a Plotly figure (or a table), and the page they make."""

    def __init__(self) -> None:
        self.figures: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []

    def add(self, fig_id: str, title: str, fig: Any, note: str = "", empty: str | None = None) -> None:
        """A section with its plot; `empty`: why there is nothing to plot (the section says so instead)."""
        import plotly.io as pio

        if empty is not None:
            self.items.append({"title": title, "note": f"{note} {empty}".strip()})
            return
        fig.update_layout(margin={"l": 60, "r": 20, "t": 30, "b": 50}, template="plotly_white",
                          legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"})
        if "yaxis2" in fig.layout:  # room for the right-hand axis's numbers
            fig.update_layout(margin={"r": 60})
        self.figures[fig_id] = json.loads(pio.to_json(fig, validate=True))
        self.items.append({"id": fig_id, "title": title, "note": note, "plot": True, "height": fig.layout.height})

    def render(self, info: dict[str, Any], run_dir: Path, headline: str) -> str:
        import jinja2
        from plotly.offline import get_plotlyjs

        env = jinja2.Environment(autoescape=True)
        return env.from_string(_PAGE).render(
            task=info.get("task") or "", run_dir=str(run_dir), rows=info["rows"], texts=info["texts"],
            state=info["state"], headline=headline, sections=self.items,
            plotly_js=get_plotlyjs().replace("</script", "<\\/script"),
            figures=json.dumps(self.figures).replace("</", "<\\/"))


def build_report(run_dir: str | Path, gold_column: str | None = None) -> str:
    """The report of the run in `run_dir`, as one HTML page."""
    import plotly.graph_objects as go

    run_dir = Path(run_dir)
    info = run_status(run_dir)
    if info.get("kind") == "baseline":
        raise RunStoreError(f"{str(run_dir)!r} holds an LLM baseline, not a pipeline run: it has nothing to report")
    if info["state"] != "complete":
        raise RunStoreError(f"run {str(run_dir)!r} has not finished labeling ({info['state']}); rerun `labeljury run` first")
    if info.get("kind") == "multi-label":
        return _set_report(run_dir, info, gold_column)
    with RunStore.existing(run_dir) as store:
        task_meta = store.get_meta("task") or {}
        labels = list(task_meta.get("labels") or [])
        trust = store.get_meta("trust") or {}
        audit = _audit_confusion(store, labels)
        truth = _truth(store, labels, gold_column) if gold_column else None
        flagged = _flagged(store)
    page = _Sections()
    add, sections = page.add, page.items

    est = trust.get("estimates") or {}
    overall = est.get("overall") or {}
    # 1. estimated accuracy
    groups = [("all rows", overall)] + [(f"source {k}", v) for k, v in (est.get("by_source") or {}).items()]
    groups = [(name, e) for name, e in groups if e.get("accuracy") is not None]
    shown = [_group_name(name, e) for name, e in groups]
    fig = go.Figure()
    if groups:
        fig.add_trace(go.Scatter(
            x=[e["accuracy"] for _, e in groups], y=shown, mode="markers", name="estimated",
            marker={"size": 11}, error_x={"type": "data", "symmetric": False,
                                          "array": [(e["accuracy"] if e["high"] is None else e["high"]) - e["accuracy"]
                                                    for _, e in groups],
                                          "arrayminus": [e["accuracy"] - (e["accuracy"] if e["low"] is None else e["low"])
                                                         for _, e in groups]}))
    if truth is not None:
        fig.add_trace(go.Scatter(x=[truth["by_group"].get(n) for n, _ in groups], y=shown,
                                 mode="markers", name="true (gold)", marker={"symbol": "x", "size": 12}))
    fig.update_xaxes(title="accuracy", tickformat=".0%", range=[0, 1.02])
    note = unmeasured_note(info)
    add("estimate", "Estimated accuracy (95% interval)", fig,
        ("From the audit sample: rows drawn at random, favouring the hard ones, each weighted by the rows left "
         "unreviewed it stands for, and reviewed; those no stage picked as hard measure (no stage trained on them, "
         "and the final versions' copies are each fitted without them)."
         if info.get("audit_sampling") == "hard" else
         "From the audit sample: rows drawn at random, reviewed, and never trained on or picked by a stage.")
        + (f" The estimate {note}." if note is not None and overall.get("accuracy") is None else
           f" Note: {note}." if note is not None else
           "" if overall.get("accuracy") is not None else
           f" This run has no audit sample, so nothing is estimated: {info.get('no_audit') or 'review.audit is 0'}."),
        empty=None if groups else "")
    # 2. reliability
    rel = trust.get("reliability") or []
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot"}))
    if rel:
        fig.add_trace(go.Scatter(x=[b["confidence"] for b in rel], y=[b["accuracy"] for b in rel], mode="lines+markers",
                                 name="audit rows", text=[f"{b['rows']} rows" for b in rel]))
    if truth is not None and truth["reliability"]:
        fig.add_trace(go.Scatter(x=[b["confidence"] for b in truth["reliability"]],
                                 y=[b["accuracy"] for b in truth["reliability"]], mode="lines+markers",
                                 name="all voted rows (gold)"))
    fig.update_xaxes(title="annotation_confidence", range=[0, 1])
    fig.update_yaxes(title="share right", range=[0, 1])
    add("reliability", "Reliability: confidence against accuracy", fig,
        "annotation_confidence of the rows the vote labeled, in bins; on the diagonal, it is the probability "
        "that the label is right.",
        empty=None if rel or (truth is not None and truth["reliability"]) else
        "Nothing to draw: the calibration is checked on audit rows the vote labeled, and this run has none"
        + ("" if info.get("audit_rows") else " (no audit sample)") + "; `report --gold-column` draws it against a gold column.")
    # 3. per stage
    stages = [st for st in info.get("stages") or [] if st.get("audit_vote_accuracy") is not None]
    fig = go.Figure(go.Scatter(x=[("final" if st.get("final") else st["stage"]) for st in stages],
                               y=[st["audit_vote_accuracy"] for st in stages], mode="lines+markers",
                               name="vote on the audit"))
    fig.update_xaxes(title="stage", type="category")
    fig.update_yaxes(title="accuracy", tickformat=".0%")
    rb = info.get("rollbacks") or {}
    why_no_stages = (
        None if stages else
        "Nothing to draw: there is no audit sample to measure the stages on." if not info.get("audit_rows") else
        "Nothing to draw: no stage refitted the specialists (continual learning is off, or nothing was trainable)."
        if not info.get("stages") else "Nothing to draw: no stage was measured on the audit.")
    add("stages", "Accuracy per stage on the audit", fig,
        f"The vote of each stage's specialist versions on the audit rows. {rb.get('rolled_back', 0)} of "
        f"{rb.get('candidates', 0)} candidate versions were rolled back by the gate.", empty=why_no_stages)
    # 4. confusion on the audit
    many = len(labels) > 15  # numbers in every cell stop being readable
    fig = go.Figure(go.Heatmap(z=audit["matrix"], x=labels, y=labels, colorscale="Blues",
                               **({} if many else {"text": audit["matrix"], "texttemplate": "%{text}"})))
    fig.update_xaxes(title="the vote", type="category")
    fig.update_yaxes(title="the audit's label", autorange="reversed", type="category")
    if many:
        fig.update_layout(height=max(380, 14 * len(labels) + 160))
    add("confusion", "Confusion matrix on the audit", fig,
        f"{audit['rows']} audit rows." + (" Hover over a cell for its count." if many else ""),
        empty=None if audit["rows"] else "Nothing to draw: the run has no audit sample.")
    # 5. spend
    plan = info.get("budget_plan") or {}
    kinds = Counter(audit["routed"])
    planned = {"audit": plan.get("audit", 0), "bootstrap": plan.get("bootstrap", 0), "hard": sum(plan.get("stages", []))}
    fig = go.Figure([go.Bar(name="planned", x=list(planned), y=list(planned.values())),
                     go.Bar(name="reviewed", x=list(planned), y=[kinds.get(k, 0) for k in planned])])
    llm = info.get("llm") or {}
    budget_note = f"Review budget: {plan.get('total', 0)} rows."
    if llm:
        caps = task_meta.get("llm") or {}
        budget_note += (f" LLM: ${llm['cost_usd']:.4f} in {llm['calls']} calls, {llm['tokens']} tokens"
                        f" (caps: {'$' + format(caps['budget_usd'], 'g') if caps.get('budget_usd') is not None else 'no dollar cap'}"
                        f", {caps['budget_tokens'] if caps.get('budget_tokens') is not None else 'no token cap'}).")
    add("spend", "Review spend against the budget", fig, budget_note)
    # 6. sources
    src = info.get("sources") or {}
    fig = go.Figure(go.Bar(x=list(src), y=list(src.values())))
    fig.update_yaxes(title="rows")
    add("sources", "Rows per source", fig)
    # 7. specialists
    sp = [s for s in info["specialists"] if s["status"] == "active"]
    measured = [s for s in sp if s.get("audited")]
    fig = go.Figure([go.Bar(name="audit accuracy", x=[s["name"] for s in sp],
                            y=[s["audit_accuracy"] if s.get("audited") else None for s in sp], yaxis="y"),
                     go.Scatter(name="vote weight", x=[s["name"] for s in sp], y=[s.get("weight") for s in sp],
                                mode="markers", marker={"size": 12}, yaxis="y2")])
    fig.update_layout(yaxis={"title": "audit accuracy", "tickformat": ".0%", "range": [0, 1]},
                      yaxis2={"title": "vote weight", "overlaying": "y", "side": "right", "rangemode": "tozero",
                              "tickformat": ".2f"})
    unmeasured_sp = [s["name"] for s in sp if not s.get("audited")]
    add("specialists", "Specialists: audit accuracy and vote weight", fig,
        "Each specialist's current version on the audit rows; its weight in the soft vote."
        + (f" Not measured on the audit: {', '.join(unmeasured_sp)} ("
           + ("the run has no audit sample" if not info.get("audit_rows") else
              "a specialist is measured on the audit when a stage refits the specialists; none did")
           + ")." if unmeasured_sp else ""),
        empty=None if sp and (measured or any(s.get("weight") is not None for s in sp)) else
        "Nothing to draw: no active specialist.")
    dropped = [[s["name"], s["status"], s["note"] or ""] for s in info["specialists"] if s["status"] != "active"]
    if dropped:
        sections.append({"title": "Dropped specialists", "table": [["specialist", "status", "why"], *dropped]})
    for line in weighing_lines(info):
        sections.append({"title": line[0].capitalize(), "note": line[1]})
    for key, line in continued_lines(info):
        sections.append({"title": {"continues": "Continues an earlier batch", "drift": "Drift"}.get(key, key),
                         "note": line})
    chain = info.get("chain") or []
    if len(chain) > 1:
        sections.append({"title": "Batches of this chain", "table": [
            ["batch", "rows", "reviews", "estimated accuracy (95%)", "drift (AUC)"],
            *[[str(i), f"{b['rows']:,}", f"{b['reviews']:,}",
               "" if b["estimated_accuracy"] is None else
               f"{b['estimated_accuracy']:.1%}" + ("" if b["low"] is None else f" ({b['low']:.1%} - {b['high']:.1%})"),
               "" if b["drift_auc"] is None else f"{'DRIFTED' if b['drifted'] else 'none'} ({b['drift_auc']:.2f})"]
              for i, b in enumerate(chain, 1)]]})
    if flagged:
        sections.append({"title": f"Flagged rows ({len(flagged)}{', the first 100' if len(flagged) > 100 else ''})",
                         "note": "Reviewed rows whose label a confident vote, out of sample, contradicts: worth a "
                                 "second look (annotation_flag).",
                         "table": [["text", "label", "the reviewer said", "the vote's belief in it"], *flagged[:100]]})
    headline = (f"Estimated accuracy: {note}" if overall.get("accuracy") is None and note is not None else
                f"Estimated accuracy between {overall['low']:.1%} and {overall['high']:.1%} (95%), from "
                f"{info['audit_rows']} audit rows: {note}" if note is not None and overall.get("low") is not None else
                f"Estimated accuracy: not estimated (no audit sample: {info.get('no_audit') or 'review.audit is 0'})"
                if overall.get("accuracy") is None else
                f"Estimated accuracy {overall['accuracy']:.1%}"
                + ("" if overall.get("low") is None else f" (95% interval {overall['low']:.1%} – {overall['high']:.1%})")
                + f", from {info['audit_rows']} audit rows")
    if truth is not None:
        headline += f"; true accuracy {truth['accuracy']:.1%} (gold column {gold_column!r})"
    return page.render(info, run_dir, headline)


def write_report(run_dir: str | Path, output: str | Path | None = None, gold_column: str | None = None) -> Path:
    """Write the report (default: RUN_DIR/report.html) atomically."""
    import os
    import tempfile

    out = Path(output) if output is not None else Path(run_dir) / "report.html"
    html = build_report(run_dir, gold_column)
    if not out.parent.is_dir():
        raise InputError(f"folder {str(out.parent)!r} does not exist; create it or choose another --output")
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=".report.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(html)
    os.chmod(tmp, 0o644)  # a page to share, like any file the user writes
    os.replace(tmp, out)
    return out


def _group_name(name: str, estimate: dict[str, Any]) -> str:
    """'source vote (1 audit row)': how much an interval rests on is part of reading it."""
    n = estimate.get("audit_rows")
    if n is None or estimate.get("method") == "exact":
        return name
    return f"{name} ({n} audit row{'' if n == 1 else 's'})"


def _flagged(store: RunStore) -> list[list[str]]:
    flagged = sorted(store.flagged_ids())
    if not flagged:
        return []
    texts = store.texts_by_id(flagged)
    final = store.final_for(np.asarray(flagged, dtype=np.int64))
    reviews = store.reviews(flagged)
    priors = store.priors(flagged)
    labels = list((store.get_meta("task") or {}).get("labels") or [])
    rows = []
    for t in flagged:
        text = texts[t][0]
        answer = reviews[t].label if t in reviews else None
        prior = priors.get(t)
        belief = (f"{prior[labels.index(answer)]:.0%}" if prior and answer in labels and len(prior) == len(labels)
                  else "")
        rows.append([text[:300] + ("…" if len(text) > 300 else ""), (final[t].label or "") if t in final else "", answer or "", belief])
    return rows


def _audit_confusion(store: RunStore, labels: list[str]) -> dict[str, Any]:
    """The audit's labels against the vote on those rows (out of fold where the final refit learned
    from them), and what was routed for review."""
    index = {lab: i for i, lab in enumerate(labels)}
    audit_ids, audit_labels = store.audited_labels()
    reviews = dict(zip(audit_ids.tolist(), audit_labels, strict=True))
    audit = [t for t in store.routed(AUDIT) if t in reviews]
    fin = store.final_for(np.array(audit, np.int64))
    # the vote as the audit measures it: out of fold where the final refit also learned from the audit
    measured = {int(t): v for t, v in ((store.get_meta("trust") or {}).get("audit_votes") or {}).items()}
    matrix = [[0] * len(labels) for _ in labels]
    for t in audit:
        vote = ((labels[measured[t]] if 0 <= measured[t] < len(labels) else None) if t in measured else
                fin[t].vote if t in fin else None)
        if vote in index and reviews[t] in index:
            matrix[index[reviews[t]]][index[vote]] += 1
    routed = store.routing_reasons()
    return {"matrix": matrix, "rows": len(audit), "routed": routed}


def _truth(store: RunStore, labels: list[str], gold_column: str) -> dict[str, Any]:
    """True accuracy (of the labeled rows, overall and per source) and the reliability of the voted rows'
    confidence, from the run's input and its gold column."""
    from .trust import CalibrationBins

    input_path = Path(store.get_meta("input_path") or "")
    if not input_path.exists():
        raise InputError(f"the run's input {str(input_path)!r} is gone; --gold-column needs it")
    if gold_column not in data.input_columns(input_path):
        raise InputError(f"column {gold_column!r} is not in the run's input {input_path.name}; check --gold-column")
    matcher = LabelMatcher(labels)
    right: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    bins = CalibrationBins(10)  # the voted rows' reliability, a chunk at a time
    for chunk in data.iter_chunks(input_path, columns=[gold_column]):
        start = int(chunk.index.start)
        ids, _ = store.row_text_ids(start, start + len(chunk))
        fin = store.final_for(ids)
        conf, corr = [], []
        for t, g in zip(ids.tolist(), chunk[gold_column].tolist()):
            rec = fin.get(t) if t >= 0 else None
            gold = matcher.match(g)
            if rec is None or rec.label is None or gold is None:
                continue
            ok = rec.label == gold
            for group in ("all rows", f"source {rec.source}"):
                seen[group] += 1
                right[group] += ok
            if rec.source in UNREVIEWED and rec.confidence is not None:
                conf.append(rec.confidence)
                corr.append(float(ok))
        bins.add(np.array(conf, dtype=np.float64), np.array(corr, dtype=np.float64))
    return {"accuracy": right["all rows"] / max(1, seen["all rows"]),
            "by_group": {g: right[g] / seen[g] for g in seen}, "reliability": bins.reliability()}


def _set_report(run_dir: Path, info: dict[str, Any], gold_column: str | None) -> str:
    """A multi-label run's page: its estimates, each label's counts (and, with a gold column, its F1 and the
    per-label confidences' reliability), the review spend and the rows per source."""
    import plotly.graph_objects as go

    from .labelsets import LabelSets

    page = _Sections()
    with RunStore.existing(run_dir) as store:
        task = store.get_meta("task") or {}
        labels = list(task.get("labels") or [])
        sets = LabelSets(labels, str(task.get("label_separator") or "|"), bool(task.get("allow_empty")))
        counts = _set_counts(store, sets, gold_column)
        routed = Counter(store.routing_reasons())
    truth = counts["truth"]
    # 1. the estimates
    est = [e for e in info.get("estimates") or [] if e.get("value") is not None]
    names = {"micro_f1": "micro-F1", "exact_set_accuracy": "exact-set accuracy"}
    fig = go.Figure()
    if est:
        fig.add_trace(go.Scatter(x=[e["value"] for e in est], y=[names.get(e["metric"], e["metric"]) for e in est],
                                 mode="markers", name="estimated", marker={"size": 11},
                                 error_x={"type": "data", "symmetric": False,
                                          "array": [e["high"] - e["value"] for e in est],
                                          "arrayminus": [e["value"] - e["low"] for e in est]}))
        if truth is not None:
            fig.add_trace(go.Scatter(x=[truth[e["metric"]] for e in est], y=[names.get(e["metric"], e["metric"]) for e in est],
                                     mode="markers", name="true (gold)", marker={"symbol": "x", "size": 12}))
    fig.update_xaxes(tickformat=".0%", range=[0, 1.02])
    against = info.get("measured_against") or "the reviewer's sets"
    page.add("estimate", "Estimated micro-F1 and exact-set accuracy (95% interval)", fig,
             f"Of the output over all its rows, measured against {against}: the vote's expected counts on every row it "
             "labels, corrected by the audit rows no stage picked (each predicted by heads fitted without its fifth of "
             f"the audit); the interval counts which rows the audit drew and the rows left to the vote ({info.get('calibrated_on') or 'no audit rows'}).",
             empty=None if est else f"Nothing estimated: {info.get('no_estimate') or 'no audit'}.")
    # 2. each label's rows
    fig = go.Figure([go.Bar(name="in the output", x=labels, y=[counts["output"][lab] for lab in labels]),
                     go.Bar(name="in reviewed sets", x=labels, y=[counts["reviewed"][lab] for lab in labels])])
    if truth is not None:
        fig.add_trace(go.Bar(name="in the gold sets", x=labels, y=[truth["gold"][lab] for lab in labels]))
    fig.update_yaxes(title="rows")
    fig.update_xaxes(type="category")
    page.add("labels", "Rows per label", fig,
             "How many rows carry each label in the output, among the reviewed rows"
             + (", and in the gold column" if truth is not None else "")
             + ". A label no reviewed row carries is never predicted.")
    if truth is not None:
        # 3. per-label F1, 4. the per-label confidences' reliability, both against the gold column
        fig = go.Figure(go.Bar(x=labels, y=[truth["f1"].get(lab) for lab in labels], name="F1 (gold)"))
        fig.update_yaxes(title="F1", range=[0, 1])
        fig.update_xaxes(type="category")
        page.add("label_f1", "F1 per label against the gold column", fig,
                 f"Over every row of the output (reviewed rows included). Micro-F1 {truth['micro_f1']:.3f}, macro-F1 "
                 f"{truth['macro_f1']:.3f}, exact sets {truth['exact_set_accuracy']:.1%}.")
        rel = truth["reliability"]
        fig = go.Figure([go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect", line={"dash": "dot"}),
                         go.Scatter(x=[b["confidence"] for b in rel], y=[b["accuracy"] for b in rel],
                                    mode="lines+markers", name="(row, label) pairs", text=[f"{b['rows']} pairs" for b in rel])])
        fig.update_xaxes(title="calibrated probability that the label is in the set", range=[0, 1])
        fig.update_yaxes(title="share in the gold set", range=[0, 1])
        page.add("reliability", "Reliability of the per-label probabilities (gold)", fig,
                 "Every (row, label) of the rows the vote labeled, in bins of its calibrated probability (a label "
                 "under 0.01 is not written: counted as 0.005).", empty=None if rel else "Nothing to draw: no voted rows.")
    # 5. spend, 6. sources
    plan = info.get("budget_plan") or {}
    planned = {"audit": plan.get("audit", 0), "first": plan.get("bootstrap", 0), "hard": sum(plan.get("stages") or [])}
    reviewed = {"audit": routed.get(AUDIT, 0), "first": routed.get("bootstrap", 0), "hard": routed.get("hard", 0)}
    fig = go.Figure([go.Bar(name="planned", x=list(planned), y=list(planned.values())),
                     go.Bar(name="routed", x=list(reviewed), y=list(reviewed.values()))])
    page.add("spend", "Review spend against the budget", fig, f"Review budget: {plan.get('total', 0)} rows.")
    src = info.get("sources") or {}
    page.add("sources", "Rows per source", go.Figure(go.Bar(x=list(src), y=list(src.values()))))
    micro = next((e for e in est if e["metric"] == "micro_f1"), None)
    headline = ("Estimated micro-F1: not estimated (" + (info.get("no_estimate") or "no audit") + ")" if micro is None else
                f"Estimated micro-F1 {micro['value']:.3f} (95% interval {micro['low']:.3f} – {micro['high']:.3f}), "
                f"measured against {against}")
    if truth is not None:
        headline += f"; true micro-F1 {truth['micro_f1']:.3f} (gold column {gold_column!r})"
    return page.render(info, run_dir, headline)


def _set_counts(store: RunStore, sets: Any, gold_column: str | None) -> dict[str, Any]:
    """Each label's rows in the output and among its reviewed rows; with `gold_column`, the truth too: micro- and
    macro-F1, exact sets, F1 per label, and the reliability of the voted rows' per-label probabilities."""
    from .labelsets import LabelSetError, SetScores
    from .trust import CalibrationBins

    labels = sets.labels
    output: Counter[str] = Counter()
    reviewed: Counter[str] = Counter()
    scores = SetScores()
    bins = CalibrationBins(10)
    if gold_column is not None:
        input_path = Path(store.get_meta("input_path") or "")
        if not input_path.exists():
            raise InputError(f"the run's input {str(input_path)!r} is gone; --gold-column needs it")
        if gold_column not in data.input_columns(input_path):
            raise InputError(f"column {gold_column!r} is not in the run's input {input_path.name}; check --gold-column")
        chunks = ((int(c.index.start), c[gold_column].tolist()) for c in data.iter_chunks(input_path, columns=[gold_column]))
    else:
        step = 50_000
        chunks = ((a, [None] * (min(a + step, store.n_rows) - a)) for a in range(0, store.n_rows, step))
    for start, values in chunks:
        ids, _ = store.row_text_ids(start, start + len(values))
        fin = store.final_for(ids)
        truths, preds, probs, present = [], [], [], []
        for i, (t, g) in enumerate(zip(ids.tolist(), values)):
            rec = fin.get(t) if t >= 0 else None
            if rec is None or rec.label is None:
                continue
            out = sets.parse(rec.label) or ()
            output.update(out)
            if rec.source.startswith("reviewed"):
                reviewed.update(out)
            if gold_column is None:
                continue
            try:
                truth = sets.parse(g)
            except LabelSetError as err:
                raise InputError(f"row {start + i + 1}, column {gold_column!r}: {err}") from None
            if truth is None:
                continue
            truths.append(truth)
            preds.append(out)
            if rec.source in UNREVIEWED:
                shown = json.loads(rec.specialist_votes or "{}")
                probs += [float(shown.get(lab, 0.005)) for lab in labels]
                present += [float(lab in truth) for lab in labels]
        scores.add(truths, preds)
        bins.add(np.array(probs, dtype=np.float64), np.array(present, dtype=np.float64))
    truth_info = None
    if gold_column is not None:
        s = scores.scores(labels)
        seen = {lab for lab in labels if scores.tp[lab] + scores.fp[lab] + scores.fn[lab]}
        truth_info = {"gold": scores.support, "f1": {lab: s["per_label"][lab]["f1"] for lab in labels if lab in seen},
                      "micro_f1": s["micro_f1"], "macro_f1": s["macro_f1"],
                      "exact_set_accuracy": s["exact_set_accuracy"], "reliability": bins.reliability()}
    return {"output": output, "reviewed": reviewed, "truth": truth_info}
