"""`labeljury status`: what a run directory holds, read from its store alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import trust
from .llm.usage import LLMUsage, read_llm_usage
from .registry import read_registry
from .sources import AUDIT, AUDIT_BOUGHT, AUDIT_INCLUSION, DRIFT, FROM_RUN, SENT_ON, reviewed, reviewer_of
from .store import RunStore
from .training import audit_weights
from .weighing import degenerate_line


MAX_CHAIN = 1000  # batches a chain's history shows


def run_status(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    with RunStore.existing(run_dir) as s:
        usage = read_llm_usage(run_dir)
        if s.get_meta("kind") == "baseline":
            return _baseline_status(s.get_meta("baseline") or {}, usage)
        task = s.get_meta("task") or {}
        if task.get("multi_label"):
            return _set_status(s, task)
        rows = s.n_rows
        # sums over the reviews, not the reviews: a run of millions of rows has hundreds of thousands
        by_source = s.review_totals()
        review_cost = sum(cost for _, cost in by_source.values())
        audit_sources = s.audit_review_sources()
        pending = s.count_reviews(pending=True)
        skipped = s.n_skipped
        budget = task.get("review", {}).get("budget")
        done = s.is_done("finalize")
        state = "complete" if done else ("waiting for reviews" if pending else
                                         ("ingesting" if not s.is_done("ingest") else "labeling"))
        return {
            "task": task.get("name"),
            "input": s.get_meta("input_path"),
            "state": state,
            "rows": rows,
            "texts": s.n_input_texts,
            "skipped": skipped,
            "reviews": sum(n for n, _ in by_source.values()),
            "reviews_by_source": {src: n for src, (n, _) in by_source.items()},
            "pending_reviews": pending,
            "budget": budget,
            "cost_usd": round(review_cost, 6),
            "llm": _llm_cost(usage, rows, llm_reviewed=by_source.get(reviewed("llm"), (0, 0))[0],
                             review_cost=review_cost),
            "specialists": _specialists(read_registry(s), len(task.get("labels") or {}) or 2),
            "stages": s.stages(),
            "rollbacks": _rollbacks(s.stages()),
            "sources": s.source_counts() if done else {},
            "budget_plan": s.get_meta("budget_plan"),
            "weighing": _weighted_blind(s, s.get_meta("weighing")),
            "flagged": len(s.flagged_ids()),
            "second_looks": _second_looks(s),
            "audit_reviewers": _count_by(((reviewer_of(src), n) for src, n in audit_sources)),
            **_estimate(s.get_meta("trust") if done else None, len(s.routed(AUDIT))),
            "no_audit": _no_audit(task, rows),
            **_audit_draw(s),
            "audit_bought": s.get_meta(AUDIT_BOUGHT),
            "stopped_after_stage": s.get_meta("stopped_after_stage"),
            "unspent_reviews": s.get_meta("unspent_reviews"),
            **_continued(s, run_dir),
        }


def _weighted_blind(s: RunStore, weighing: dict[str, Any] | None) -> dict[str, Any] | None:
    """The weighing's summary, each blind measurement with its shares right as the estimate counts them:
    each audit row weighted (1 - pi)/pi (`training.audit_weights`; equal for a uniform draw)."""
    for b in ((weighing or {}).get("blind") or {}).values():
        if b.get("ids") and len(b["ids"]) == len(b.get("right") or []):
            w = audit_weights(s, np.array(b["ids"], np.int64))
            b["share_right"] = float(np.average(b["right"], weights=w))
            if len(b.get("answer_ok") or []) == len(w):  # kept since 2026-12-07
                b["share_answer_right"] = float(np.average(b["answer_ok"], weights=w))
    return weighing


def _continued(s: RunStore, run_dir: Path) -> dict[str, Any]:
    """What a run that continues an earlier batch (`--from`) took from it, its drift test, and the chain of
    batches, earliest first (each read-only; a run directory since moved or deleted ends the chain)."""
    where = s.get_meta(FROM_RUN)
    if where is None:
        return {}
    carried, reused = s.carried_totals()
    chain = [_batch(s, run_dir)]
    seen = {str(Path(run_dir).resolve())}
    while where is not None and len(chain) < MAX_CHAIN and where not in seen and (Path(where) / "run.db").is_file():
        seen.add(where)
        with RunStore.existing(where) as earlier:
            chain.append(_batch(earlier, Path(where)))
            where = earlier.get_meta(FROM_RUN)
    return {"from_run": s.get_meta(FROM_RUN), "carried_reviews": carried, "reused_reviews": reused,
            "drift": s.get_meta(DRIFT), "chain": chain[::-1], "chain_cut": where if where is not None else None}


def _batch(s: RunStore, run_dir: Path) -> dict[str, Any]:
    """One batch of a chain: rows, reviews spent, estimate, drift, specialist versions."""
    overall = (((s.get_meta("trust") or {}).get("estimates") or {}).get("overall") or {})
    drift = s.get_meta(DRIFT) or {}
    return {"run_dir": str(run_dir), "rows": s.n_rows, "reviews": s.count_reviews(),
            "estimated_accuracy": overall.get("accuracy"), "low": overall.get("low"), "high": overall.get("high"),
            "drift_auc": drift.get("auc"), "drifted": drift.get("drifted"),
            "dropped": (drift.get("estimate") or {}).get("dropped"),
            "versions": {r.name: r.version for r in read_registry(s) if r.status != "dropped"}}


def _second_looks(s: RunStore) -> dict[str, int]:
    """Flagged rows sent on to the next reviewer of a cascade, and how many it has decided."""
    sent, decided = s.marked_and_decided(SENT_ON)
    return {"sent": sent, "decided": decided}


def _estimate(trust: dict[str, Any] | None, audit_rows: int) -> dict[str, Any]:
    """The estimated accuracy of the output (fractions in [0, 1]) and what it rests on."""
    est = (trust or {}).get("estimates") or {}
    overall = est.get("overall") or {}
    return {"estimated_accuracy": overall.get("accuracy"), "estimated_accuracy_low": overall.get("low"),
            "estimated_accuracy_high": overall.get("high"), "audit_rows": audit_rows,
            "estimates": est or None, "calibrated_on": (trust or {}).get("calibrated_on"),
            "unmeasured": (trust or {}).get("unmeasured") or {},
            "unmeasured_rows": overall.get("unmeasured_rows") or 0}


def _audit_draw(s: RunStore) -> dict[str, Any]:
    """How the audit was drawn (`hard`: favouring hard rows, each weighted (1 - pi)/pi; `uniform`), the largest
    weight of a row in it against a uniform draw's, and how many audit rows a stage picked as hard."""
    drawn = s.get_meta(AUDIT_INCLUSION)
    n = len(s.routed(AUDIT))
    if not n:
        return {"audit_sampling": None}
    out: dict[str, Any] = {"audit_sampling": "uniform", "audit_picked": len(s.audit_hard())}
    if drawn and drawn.get("ids"):
        low, uniform = min(drawn["pi"]), n / drawn["pool"]
        out.update(audit_sampling="hard", audit_max_weight=round((1 - low) / low / ((1 - uniform) / uniform), 3))
    return out


def _no_audit(task: dict[str, Any], rows: int) -> str | None:
    """Why the run has no audit sample and what to set (`budget.no_audit_reason`), from its task."""
    from .budget import no_audit_reason
    from .task import ReviewSpec

    try:
        review = ReviewSpec.model_validate(task.get("review") or {})
    except ValueError:  # a task of another version: no reason to give
        return None
    return no_audit_reason(review, rows) if rows else None


def unmeasured_note(info: dict[str, Any]) -> str | None:
    """`trust.unmeasured_note` of a run's status."""
    return trust.unmeasured_note(info.get("unmeasured") or {}, info.get("estimated_accuracy"),
                                 info.get("unmeasured_rows") or 0)


def _specialists(records: list[Any], k: int) -> list[dict[str, Any]]:
    """Each specialist with its vote weight (what `soft` voting gives it) and its audit accuracy."""
    import numpy as np

    from .voting import log_odds_weights

    out = [r.to_dict() for r in records]
    active = [d for d in out if d["status"] == "active"]
    acc = np.array([d["validation_accuracy"] if d["validation_rows"] else np.nan for d in active], dtype=float)
    seen = np.array([d["validation_rows"] or 0 for d in active], dtype=float)
    for d, w in zip(active, log_odds_weights(acc, seen, k) if active else [], strict=True):
        d["weight"] = round(float(w), 4)
        if w > 0 and (d["note"] or "").startswith("weighs nothing for now"):  # the bootstrap's verdict, since revised
            d["note"] = (f"weighed nothing after the bootstrap ({d['note'].split(': ', 1)[-1]}); measured since on "
                         f"{int(d['validation_rows'])} rows in all: {d['validation_accuracy']:.1%}, above chance")
    return out


def _rollbacks(stages: list[dict[str, Any]]) -> dict[str, int]:
    verdicts = [m["promoted"] for st in stages if not st.get("final") for m in st["specialists"].values()
                if "promoted" in m]
    return {"candidates": len(verdicts), "rolled_back": sum(not v for v in verdicts)}


def _count_by(pairs: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v, n in pairs:
        out[v] = out.get(v, 0) + n
    return out


def _llm_cost(usage: LLMUsage | None, rows: int, *, llm_reviewed: int = 0, review_cost: float = 0.0) -> dict[str, Any] | None:
    """What the run's LLM calls cost: in all, per input row and per row the LLM reviewed."""
    if usage is None:
        return None
    out = usage.to_dict()
    out["rows"] = rows
    out["cost_per_row_usd"] = usage.per_row(rows)
    if llm_reviewed:
        out["llm_reviewed_rows"] = llm_reviewed
        out["cost_per_reviewed_row_usd"] = review_cost / llm_reviewed
    return out


def _set_status(s: RunStore, task: dict[str, Any]) -> dict[str, Any]:
    """A multi-label run (`multilabel.run`): rows, reviews, stages, the estimates on the audit."""
    done = s.is_done("finalize")
    pending = s.count_reviews(pending=True)
    by_source = s.review_totals()
    meta = (s.get_meta("set_estimate") or {}) if done else {}
    return {
        "kind": "multi-label",
        "task": task.get("name"),
        "input": s.get_meta("input_path"),
        "state": "complete" if done else ("waiting for reviews" if pending else "labeling"),
        "rows": s.n_rows,
        "texts": s.n_input_texts,
        "skipped": s.n_skipped,
        "reviews": sum(n for n, _ in by_source.values()),
        "reviews_by_source": {src: n for src, (n, _) in by_source.items()},
        "pending_reviews": pending,
        "budget": task.get("review", {}).get("budget"),
        "budget_plan": s.get_meta("budget_plan"),
        "stages": s.stages(),
        "sources": s.source_counts() if done else {},
        "estimates": meta.get("estimates"),
        "no_estimate": meta.get("why"),
        "calibrated_on": meta.get("calibrated_on"),
        "measured_against": meta.get("against"),
        "audit_rows": len(s.routed(AUDIT)),
        "specialists": meta.get("specialists"),
    }


def _baseline_status(meta: dict[str, Any], usage: LLMUsage | None) -> dict[str, Any]:
    rows = int(meta.get("rows", 0))
    return {
        "kind": "baseline",
        "task": meta.get("task"),
        "input": meta.get("input"),
        "output": meta.get("output"),
        "method": meta.get("method"),
        "models": meta.get("models", []),
        "state": "complete" if meta.get("done") else "labeling (rerun the same command to resume)",
        "rows": rows if meta.get("done") else None,
        "sources": meta.get("sources", {}),
        "llm": _llm_cost(usage, rows),
    }


# -- rendering (`labeljury status`) ----------------------------------------------------------------
def render(info: dict[str, Any], run_dir: Path | str) -> Any:
    """A rich renderable of `run_status`'s answer."""
    from rich.console import Group
    from rich.table import Table

    t = Table(title=f"run {run_dir}", show_header=False)
    keys = ("task", "input", "state", "rows", "texts", "skipped", "reviews", "pending_reviews", "budget")
    if info.get("kind") == "baseline":
        keys = ("kind", "method", "models", "task", "input", "output", "state", "rows")
    if info.get("kind") == "multi-label":
        keys = ("kind", *keys)
    for key in keys:
        value = info.get(key)
        t.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    for key, value in _cost_rows(info.get("llm")):
        t.add_row(key, value)
    if info.get("kind") == "multi-label":
        from .multilabel.trust import Estimate

        for e in info.get("estimates") or []:
            t.add_row("estimated " + e["metric"].replace("_", " "), Estimate(**e).detail())
        if info.get("measured_against"):
            t.add_row("measured against", info["measured_against"])
        if info.get("state") == "complete" and not info.get("estimates"):
            t.add_row("estimate", f"none: {info.get('no_estimate')}")
        if info.get("calibrated_on"):
            t.add_row("confidence", f"calibrated on {info['calibrated_on']} (out-of-fold predictions)")
        for sp in info.get("specialists") or []:  # each alone, where none of them learned
            t.add_row(f"specialist {sp['name']}", f"alone: micro-F1 {sp['micro_f1']:.3f}, macro-F1 {sp['macro_f1']:.3f} "
                      f"on the {sp['rows']} audit rows (out of fold; its {sp['labels']} labels)")
        return Group(t, *_sources(info.get("sources") or {}, None))
    if info.get("kind") == "baseline":
        return Group(t, *_sources(info.get("sources") or {}, None))
    t.add_row("estimated accuracy", _estimate_line(info))
    if info.get("audit_bought"):
        t.add_row("audit", trust.audit_line(info["audit_bought"]))
    if info.get("state") == "complete" and info.get("calibrated_on"):
        t.add_row("confidence", confidence_line(info))
    for line in weighing_lines(info):
        t.add_row(*line)
    corrected = max((st.get("audit_corrected_rows") or 0 for st in info.get("stages") or []), default=0)
    unmeasured = sorted(info.get("unmeasured") or {})
    sp = Table(title="specialists (audit accuracy: of the current version on the audit rows, each predicted by a "
                     "version or copy that never trained on it"
               + (f"; {corrected} of their answers from a weighed reviewer, corrected for its mistakes"
                  + (f": agreement with {', '.join(unmeasured)}, whose accuracy is unmeasured)" if unmeasured else ")")
                  if corrected else ")"))
    for col in ("name", "status", "version", "audit accuracy", "vote weight", "note"):
        sp.add_column(col)
    for s in info["specialists"]:
        acc = s["audit_accuracy"] if s.get("audited") else None
        sp.add_row(s["name"], s["status"], str(s["version"]),
                   "" if acc is None else f"{acc:.1%} of {s['audit_rows']}",
                   "" if s.get("weight") is None else f"{s['weight']:.2f}", s["note"] or "")
    if info.get("stopped_after_stage") is not None:
        t.add_row("stopped early", f"after stage {info['stopped_after_stage'] + 1}: the stages no longer raised the "
                                   f"vote's accuracy on the audit; {info.get('unspent_reviews') or 0} reviews unspent")
    for line in continued_lines(info):
        t.add_row(*line)
    est = (info.get("estimates") or {}).get("by_source") or None
    return Group(t, sp, *_stages(info.get("stages") or [], info.get("rollbacks") or {}),
                 *_sources(info.get("sources") or {}, est), *_chain(info.get("chain") or []))


def continued_lines(info: dict[str, Any]) -> list[tuple[str, str]]:
    """A run that continues an earlier batch: what it learned from, its drift test, an estimate drop."""
    if not info.get("from_run"):
        return []
    out = [("continues", f"{info['from_run']}: learned from its {info['carried_reviews']:,} reviewed rows"
                         + (f"; {info['reused_reviews']:,} of them in this input keep their earlier label (source "
                            "earlier:<reviewer>), not asked again" if info.get("reused_reviews") else ""))]
    if info.get("chain_cut"):
        out.append(("history", f"the batches before {info['chain_cut']} are not shown: that run directory is not "
                               "there any more (moved or deleted)"))
    drift = info.get("drift") or {}
    if drift.get("tested"):
        if drift.get("drifted"):
            out.append(("drift", f"DRIFTED: this batch's texts are told apart from the earlier ones with AUC "
                                 f"{drift['auc']:.2f} (0.5: alike); texts most unlike them: "
                                 + " | ".join(repr(e[:60]) for e in drift.get("examples", [])[:3])))
        else:
            out.append(("drift", f"none: this batch's texts are like the earlier ones (AUC {drift['auc']:.2f}, 0.5: alike)"))
    elif drift:
        out.append(("drift", f"not tested: {drift.get('why')}"))
    est = drift.get("estimate") or {}
    if est.get("dropped"):
        lost = est.get("labels_lost") or []
        out.append(("WARNING", f"labels less accurate than the earlier batch's beyond doubt: {est['now']:.1%} against "
                               f"{est['earlier']:.1%} [{est['earlier_low']:.1%}, {est['earlier_high']:.1%}]"
                               + (f"; labels that lost accuracy: {', '.join(lost)}" if lost else "")))
    return out


def _chain(chain: list[dict[str, Any]]) -> list[Any]:
    from rich.table import Table

    if len(chain) < 2:
        return []
    t = Table(title="batches of this chain (earliest first)")
    for col in ("batch", "run directory", "rows", "reviews", "estimated accuracy", "drift", "versions"):
        t.add_column(col)
    for i, b in enumerate(chain, 1):
        est = ("" if b["estimated_accuracy"] is None else
               f"{b['estimated_accuracy']:.1%}" + ("" if b["low"] is None else f" ({b['low']:.1%} - {b['high']:.1%})"))
        drift = "" if b["drift_auc"] is None else (("DRIFTED" if b["drifted"] else "none") + f" (AUC {b['drift_auc']:.2f})")
        if b.get("dropped"):
            drift += "; accuracy DROPPED"
        t.add_row(str(i), b["run_dir"], f"{b['rows']:,}", f"{b['reviews']:,}", est, drift,
                  ", ".join(f"{n} v{v}" for n, v in b["versions"].items()))
    return [t]


def confidence_line(info: dict[str, Any]) -> str:
    """What annotation_confidence of the voted rows is calibrated on, or why it is not."""
    on = info.get("calibrated_on")
    if on == "audit":
        return "annotation_confidence calibrated on the audit rows no stage picked"
    if on == "reviewed":
        return "annotation_confidence calibrated on the reviewed rows, voted by copies that never trained on them"
    who = ", ".join(sorted(info.get("unmeasured") or {}))
    return ("annotation_confidence is the vote's own probability, NOT calibrated: "
            + (f"every reviewed row was answered by {who}, whose accuracy nothing independent measured, so "
               "nothing can say how often the vote is right; let people answer an audit to calibrate it"
               if who else "too few audit or reviewed rows to calibrate it on"))


def weighing_lines(info: dict[str, Any]) -> list[tuple[str, str]]:
    """The weighed reviewers' estimated accuracy, the answers the vote outweighed, the flags."""
    w = info.get("weighing") or {}
    out = []
    unmeasured = info.get("unmeasured") or {}
    for kind, acc in (w.get("accuracy") or {}).items():
        checked = (w.get("checked") or {}).get(kind, 0)
        if kind in unmeasured:  # agreement with a vote that learned from it is no measurement
            said = (f"accuracy unmeasured: the weighing puts it at about {acc:.0%} from its agreement with the "
                    f"vote on its {w['rows'][kind]} rows"
                    + (f" ({checked} of them, not a random sample, checked by a trusted reviewer)" if checked else "")
                    + ", which is not evidence: the vote learned from it")
        elif (blind := (w.get("blind") or {}).get(kind)):
            answers = blind.get("share_answer_right", blind["answer_right"] / blind["rows"])
            weighed = blind.get("share_right", sum(blind["right"]) / blind["rows"])
            said = (f"measured on {blind['rows']} audit rows it answered blind beside a trusted reviewer (a random "
                    f"sample of the rows it was sent): its answers {answers:.0%} right, "
                    f"the labels weighed from them {weighed:.0%} right (what the "
                    f"{w['rows'][kind] - w['checked'].get(kind, 0)} rows it decided are credited with)")
        else:
            basis = f"{checked} checked by a trusted reviewer" if checked else "from its agreement with the vote"
            said = f"about {acc:.0%} right on its {w['rows'][kind]} rows ({basis})"
        out.append((f"reviewer {kind}", f"{said}; {w.get('overruled', 0)} answers outweighed by the vote"))
    for kind, d in (w.get("degenerate") or {}).items():
        out.append((f"WARNING: reviewer {kind}", degenerate_line(kind, d)))
    sent = info.get("second_looks") or {}
    if info.get("flagged") or sent.get("sent"):
        line = f"{info.get('flagged', 0)} reviewed rows the vote contradicts (annotation_flag)"
        if sent.get("sent"):
            line += (f"; {sent['sent']} sent on to the next reviewer for a second look, "
                     f"{sent['decided']} decided there")
        else:
            line += ": worth a second look"
        out.append(("flagged", line))
    return out


def _drawn(info: dict[str, Any]) -> str:
    """How the audit the estimate rests on was drawn, for its line."""
    if info.get("audit_sampling") != "hard":
        return ""
    picked = info.get("audit_picked") or 0
    return (f" (drawn favouring hard rows, each weighted by the unreviewed rows it stands for, "
            f"at most {info.get('audit_max_weight', 0):.1f}x a uniform draw's; the {info['audit_rows'] - picked} no stage "
            f"picked as hard measure)")


def _estimate_line(info: dict[str, Any]) -> str:
    acc = info.get("estimated_accuracy")
    note = unmeasured_note(info)
    if acc is None:
        if note is not None and info.get("state") == "complete":
            return note
        return (f"not estimated: no audit sample: {info.get('no_audit') or 'review.audit'}"
                if not info.get("audit_rows") else "when the run is complete")
    low, high = info.get("estimated_accuracy_low"), info.get("estimated_accuracy_high")
    if note is not None and low is not None:  # part of the output is unmeasured: no point to ship on
        return f"between {low:.1%} and {high:.1%} (95%), from {info['audit_rows']} audit rows{_drawn(info)}; {note}"
    interval = "" if low is None else f" (95% interval {low:.1%} - {high:.1%})"
    line = f"{acc:.1%}{interval}, from {info['audit_rows']} audit rows{_drawn(info)}"
    return line if note is None else f"{line}; {note}"


def _stages(stages: list[dict[str, Any]], rollbacks: dict[str, int]) -> list[Any]:
    """Continual learning, stage by stage: per trainable specialist, accuracy on the gate's rows (the
    audit) of the current version -> the new one, and whether the new one was promoted or rolled back."""
    if not stages:
        return []
    from rich.table import Table

    names = sorted({n for st in stages for n, m in st["specialists"].items() if "promoted" in m})
    gate = "audit" if any(st.get("gate") == "audit" for st in stages) else "held-out"
    t = Table(title=f"continual learning ({gate} accuracy: current -> new version; "
                    f"{rollbacks.get('rolled_back', 0)} of {rollbacks.get('candidates', 0)} candidates rolled back)")
    for col in ("stage", "train rows", f"{gate} rows", "vote on audit", *names, "seconds"):
        t.add_column(col)

    def cell(m: dict[str, Any] | None) -> str:
        if not m or "promoted" not in m:
            return ""
        fmt = lambda a: "-" if a is None else f"{a:.0%}"  # noqa: E731
        verdict = "promoted" if m["promoted"] else "rolled back"
        return f"{fmt(m.get('accuracy_before'))} -> {fmt(m.get('accuracy_after'))} {verdict}"

    for st in stages:
        rows = st.get("audit_rows") if st.get("gate") == "audit" else st.get("holdout_rows")
        vote = st.get("audit_vote_accuracy")
        train = str(st["train_rows"])
        if st.get("reviewed_rows", st["train_rows"]) > st["train_rows"]:  # continual.max_train_rows
            train += f" of {st['reviewed_rows']}"
        t.add_row("final refit" if st.get("final") else str(st["stage"]), train, str(rows or 0),
                  "" if vote is None else f"{vote:.1%}", *(cell(st["specialists"].get(n)) for n in names),
                  f"{st['seconds']:.1f}")
    return [t]


def _sources(sources: dict[str, int], estimates: dict[str, Any] | None) -> list[Any]:
    if not sources:
        return []
    from rich.table import Table

    src = Table(title="annotation sources" + (" (estimated accuracy, 95% interval)" if estimates else ""))
    src.add_column("source")
    src.add_column("rows")
    if estimates:
        src.add_column("estimated accuracy")
    for k, v in sorted(sources.items()):
        row = [k, str(v)]
        if estimates:
            e = estimates.get(k) or {}
            acc = e.get("accuracy")
            interval = "" if e.get("low") is None or e.get("method") == "exact" else f" ({e['low']:.1%} - {e['high']:.1%})"
            if e.get("unmeasured_rows"):  # decided by a reviewer of unmeasured accuracy: no point to show
                interval = "unmeasured" if e["unmeasured_rows"] >= e["rows"] else f"{e['low']:.1%} - {e['high']:.1%}"
                row.append(interval)
            else:
                row.append("" if acc is None else f"{acc:.1%}{interval}")
        src.add_row(*row)
    return [src]


def _cost_rows(llm: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The LLM cost lines of `status` (none when the run made no LLM call)."""
    if not llm:
        return []
    rows = [("LLM cost", f"${llm['cost_usd']:.4f} ({llm['calls']} calls, {llm['tokens']} tokens)")]
    if llm.get("cost_per_row_usd") is not None:
        rows.append(("LLM cost per row", f"${llm['cost_per_row_usd']:.6f}"))
    if llm.get("cost_per_reviewed_row_usd") is not None:
        rows.append(("LLM cost per reviewed row", f"${llm['cost_per_reviewed_row_usd']:.6f} ({llm['llm_reviewed_rows']} rows)"))
    return rows

