"""Finalize: one label per text — the reviewer's where there is one, else the vote of the final
specialist versions — with its confidence (a calibrated probability: `pipeline.calibrate`, `trust`)
and provenance (`annotation_source`); and the estimated accuracy of the whole output.

The calibrator is fitted first (on the audit rows); then the vote streams a chunk at a time: each
chunk's labels are written, and its sums added to the estimate's tally, before the next is read, so
memory holds one chunk whatever the number of rows. The labels and the estimate are committed in one
transaction: a run killed here leaves the previous final labels, or none, never half of them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import trust
from ..scoring import Vote
from ..sources import AUDIT_BOUGHT, AUDIT_INCLUSION, FINALIZE, HARD, WEIGHED, outweighed, reviewer_of, skipped
from ..store import RunStore
from ..training import audited
from ..voting import hard_votes
from ..weighing import degenerate_line
from .calibrate import Calibration, audit_reviewers, fit_calibration, vote_groups

if TYPE_CHECKING:
    from ..context import RunContext

STEP = FINALIZE

Record = tuple[int, str | None, float | None, str, str | None, float | None, str]


def finalize(ctx: RunContext) -> None:
    store, scorer, labels = ctx.store, ctx.scorer, ctx.labels
    # answers that arrived after the run finished (people, with --finish) make a new final labeling
    signature = store.reviews_signature()
    if store.is_done(STEP) and store.get_meta("finalized_reviews") == signature:
        return
    scorer.ensure()
    store.index_rows_by_text()
    calibration = fit_calibration(ctx)
    tally = trust.Tally()
    unmeasured = ctx.weigher.unmeasured()

    def records() -> Iterator[Record]:
        for vote in scorer.votes("final labels"):
            yield from _chunk_records(store, vote, labels, calibration, tally, unmeasured, calibration.measured)

    meta: dict = {}

    def described() -> dict:
        meta.update(trust=calibration.to_meta(tally, labels), finalized_reviews=signature)
        return meta

    store.put_final(records(), meta=described)
    overall = ((meta["trust"].get("estimates") or {}).get("overall") or {})
    _audit_bought(ctx, calibration, overall)
    note = trust.unmeasured_note(calibration.unmeasured or {}, overall.get("accuracy"), overall.get("unmeasured_rows") or 0)
    if note is not None:
        ctx.progress.log(f"estimated accuracy: {note}")
    if calibration.fitted_on == "none" and unmeasured:
        ctx.progress.log(f"annotation_confidence is the vote's own probability, not calibrated: the reviewed rows "
                         f"were answered by {', '.join(sorted(unmeasured))}, whose accuracy nothing independent "
                         "measured; let people answer an audit to calibrate it")
    for kind, d in ((store.get_meta("weighing") or {}).get("degenerate") or {}).items():
        ctx.progress.log(f"WARNING: reviewer {kind} {degenerate_line(kind, d)}")


def _audit_bought(ctx: RunContext, calibration: Calibration, overall: dict) -> None:
    """What the audit cost (its reviews) and bought (the labels its reviews fixed: rows the vote, out of
    fold, labeled otherwise; the estimate's interval), said in the run log and kept for `status`."""
    store = ctx.store
    audit_ids, audit_y = audited(store)
    if not len(audit_ids) or calibration.audit_votes is None:
        return
    index = {lab: i for i, lab in enumerate(ctx.labels)}
    differs = np.array([calibration.audit_votes.get(int(t), -1) != index.get(y, -2)
                        for t, y in zip(audit_ids.tolist(), audit_y, strict=True)], bool)
    # an answer of a reviewer whose accuracy nothing measured differs from the vote: a change, not a fix
    unmeasured = sorted(k for k, n in (calibration.unmeasured or {}).items() if n)
    by_unmeasured = np.isin(audit_reviewers(store, audit_ids), unmeasured) if unmeasured else np.zeros(len(differs), bool)
    spent = store.count_reviews()
    half = (None if overall.get("low") is None or overall.get("high") is None
            else (overall["high"] - overall["low"]) / 2)
    bought = {"rows": int(len(audit_ids)), "reviews": int(spent), "fixed": int((differs & ~by_unmeasured).sum()),
              "changed": int((differs & by_unmeasured).sum()), "unmeasured": unmeasured,
              "half_width": half, "picked": len(store.audit_hard()),
              "sampling": "hard" if store.get_meta(AUDIT_INCLUSION) else "uniform",
              # the hard rows' fixes are counted against trusted answers and the votes that picked them: not where a
              # reviewer is weighed (its answers are no truth, and the weighing replaces those votes by cross-fitted ones)
              **({} if unmeasured or ctx.weigher.weighed else _hard_fix_rate(store, index)),
              "rows_labeled": int(store.n_rows)}
    store.set_meta(AUDIT_BOUGHT, bought)
    ctx.progress.log(trust.audit_line(bought))


def _hard_fix_rate(store: RunStore, index: dict[str, int]) -> dict[str, Any]:
    """How often a review of a row a stage picked as hard fixed a label: the share of those rows whose vote,
    when the stage picked them, differs from the answer (what the audit's reviews would have fixed, at that
    rate, had they gone to hard rows instead: BENCHMARKS.md, section 21). Empty without such rows."""
    hard = store.routed(HARD)
    answered = {t: r.label for t, r in store.reviews(hard).items() if r.label is not None}
    priors = store.priors(list(answered))
    ids = [t for t in answered if t in priors and answered[t] in index]
    if not ids:
        return {}
    wrong = sum(int(np.argmax(priors[t])) != index[answered[t]] for t in ids)
    return {"hard_rows": len(ids), "hard_fixed": int(wrong)}


def _chunk_records(store: RunStore, vote: Vote, labels: list[str], calibration: Calibration,
                   tally: trust.Tally, unmeasured: frozenset[str] = frozenset(),
                   measured: frozenset[str] = frozenset()) -> list[Record]:
    """The final records of one chunk's texts; their sums go to `tally` (a row decided by weighing the
    answer of a reviewer in `unmeasured` is not credited with its belief, one in `measured` is credited
    with what its blind audit answers measured: see `trust`)."""
    a, b = int(vote.ids[0]), int(vote.ids[-1]) + 1
    reviews = store.reviews(range(a, b), include_pending=True)  # a pending one still says where the row waits
    verdicts = store.verdicts(range(a, b))
    result = vote.result
    groups = vote_groups(vote)
    calibrated = calibration.calibrated(vote)
    votes_json = _votes_json(vote, labels)
    n = len(vote.ids)
    source: list[str] = [""] * n
    label: list[str | None] = [None] * n
    known = np.zeros(n, bool)
    known_right = np.ones(n)  # a weighed reviewer's rows are right with the belief in their label
    unmeasured_row = np.zeros(n, bool)
    measured_row = np.zeros(n, bool)
    out: list[Record] = []
    for i, t in enumerate(range(a, b)):
        lab = int(result.label[i])
        voted = None if lab < 0 else labels[lab]
        vconf = None if lab < 0 else round(float(result.confidence[i]), 6)
        r = reviews.get(t)
        if r is not None and r.label is not None and not r.pending:
            known[i] = True
            v = verdicts.get(t)
            if v is not None and v.answer is not None:  # a weighed answer: the belief in the decision
                known_right[i] = v.belief
                unmeasured_row[i] = reviewer_of(r.source) in unmeasured
                measured_row[i] = reviewer_of(r.source) in measured
                over = v.label != r.label  # the vote outweighed the answer
                source[i] = outweighed(reviewer_of(r.source)) if over else r.source
                label[i] = v.label if over else r.label
                out.append((t, label[i], round(float(v.belief), 6), source[i], voted, vconf, votes_json[i]))
            else:
                source[i], label[i] = r.source, r.label
                if r.reason == WEIGHED:
                    # an earlier run's weighed answer, reused: nothing in this run measured that reviewer,
                    # so the estimate counts the row anywhere from wrong to right (see `trust`)
                    known_right[i] = float(r.confidence if r.confidence is not None else 1.0)
                    unmeasured_row[i] = True
                out.append((t, r.label, r.confidence, r.source, voted, vconf, votes_json[i]))
        elif voted is None:
            source[i] = r.source if r is not None else skipped("no-vote")
            out.append((t, None, None, source[i], None, None, votes_json[i]))
        else:
            source[i], label[i] = (r.source if r is not None else str(groups[i])), voted
            out.append((t, voted, round(float(calibrated[i]), 6), source[i], voted, vconf, votes_json[i]))
    tally.add(store.row_counts(a, b), known, calibrated, source, label, known_right, unmeasured_row, measured_row)
    return out


def _votes_json(vote: Vote, labels: list[str]) -> list[str]:
    """Each row's specialist labels as JSON ({name: label or null}); one string per distinct pattern."""
    hv = hard_votes(vote.P) if len(vote.names) else np.zeros((len(vote.ids), 0), np.int16)
    names = vote.names
    cache: dict[bytes, str] = {}
    out = []
    for row in hv:
        key = row.tobytes()
        text = cache.get(key)
        if text is None:
            text = cache[key] = json.dumps({nm: None if int(x) < 0 else labels[int(x)] for nm, x in zip(names, row)})
        out.append(text)
    return out
