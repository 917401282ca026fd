"""Calibrate: the data `trust` needs, from the run store and the final vote.

- the final vote of the audit rows no stage picked (no version trained on them, and the vote never
  saw their labels): they fit the calibrator and measure the estimate;
- with too small an audit, cross-fitted votes of the reviewed rows: each fold's rows voted by fresh
  copies of the trainable specialists fitted on the other folds (skipped when a specialist is a
  fine-tuned transformer: five fine-tunes are not worth a calibration point);
- those audit rows as the estimate reads them (`trust.Audit`); finalize adds the output's side, a
  chunk at a time (`trust.Tally`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import trust
from ..scoring import Scorer, Vote
from ..sources import CONSENSUS, VOTE, outweighed, reviewer_of
from ..sources import reviewed as reviewed_by
from ..specialists import Updatable
from ..store import RunStore
from ..training import FOLDS, audit_weights, audited, reviewed
from ..weighing import answer_noise

if TYPE_CHECKING:
    from ..context import RunContext


@dataclass
class Calibration:
    """The calibrator, what it was fitted on, and the audit rows that measure the estimate."""

    calibrator: trust.Calibrator
    fitted_on: str  # "audit" (the unpicked audit rows), "reviewed" (cross-fitted reviewed rows) or "none"
    audit: trust.Audit | None  # the unpicked audit rows (None: no audit)
    reliability: list[dict[str, float]]  # calibrated confidence against accuracy on the unpicked audit rows
    audit_rows: int
    noisy_reference_rows: int = 0
    # the weighed reviewers of unmeasured accuracy: {reviewer: audit rows it answered}; those rows are no
    # yardstick for the estimate, and the rows it decided are not credited (see `trust`)
    unmeasured: dict[str, int] | None = None
    # the blind audit answers of the weighed reviewers whose accuracy they measured: what the rows those
    # reviewers decided are credited with (`trust.Blind`)
    blind: trust.Blind | None = None
    # every audit row's vote as the audit measures it (out of fold where the final refit learned from it):
    # {text id: label index, -1 none}, for the report's confusion matrix
    audit_votes: dict[int, int] | None = None

    @property
    def measured(self) -> frozenset[str]:
        """The weighed reviewers whose decided rows the blind answers measure."""
        return frozenset(reviewer_of(src) for src in ([] if self.blind is None else set(self.blind.source.tolist())))

    def calibrated(self, vote: Vote) -> np.ndarray:
        """The calibrated confidence of each row of `vote`."""
        return self.calibrator(vote.result.confidence.astype(np.float64), vote_groups(vote))

    def to_meta(self, tally: trust.Tally, labels: list[str]) -> dict[str, Any]:
        """What the run store keeps (`trust` in its meta), with the estimates of the output in `tally`."""
        estimates = None
        if self.audit is not None:
            estimates = trust.estimates(tally, self.audit, labels, self.blind)
            estimates["basis"] = {"audit_rows": self.audit_rows, "unpicked_audit_rows": int(len(self.audit.weight)),
                                  "calibrated_on": self.fitted_on, "noisy_reference_rows": self.noisy_reference_rows,
                                  "unmeasured_audit_answers": self.unmeasured or {},
                                  "blind_audit_answers": 0 if self.blind is None else int(len(self.blind.correct))}
        return {"calibrator": self.calibrator.to_dict(), "calibrated_on": self.fitted_on, "estimates": estimates,
                "reliability": self.reliability, "audit_rows": self.audit_rows, "unmeasured": self.unmeasured or {},
                "audit_votes": {str(t): v for t, v in (self.audit_votes or {}).items()}}


def vote_groups(vote: Vote) -> np.ndarray:
    """`consensus` where every specialist voted and agreed, else `vote`: the two calibrated sources."""
    full = vote.result.unanimous & (vote.result.n_votes == len(vote.names))
    return np.where(full, CONSENSUS, VOTE)


def fit_calibration(ctx: RunContext) -> Calibration:
    """The calibrator, on the audit rows no stage picked (a random sample of the rows the vote labels,
    each weighted (1 - pi)/pi, voted by the final versions), and those rows as the estimate reads them."""
    store, scorer, labels, seed = ctx.store, ctx.scorer, ctx.labels, ctx.seed
    k_index = {lab: i for i, lab in enumerate(labels)}
    audit_ids, audit_y = audited(store)
    picked = store.audit_hard()
    unpicked = np.array([t not in picked for t in audit_ids.tolist()], bool)
    u_ids = audit_ids[unpicked]
    u_y = np.array([k_index[v] for v in np.asarray(audit_y, dtype=object)[unpicked]], np.int64)
    u_vote = scorer.audit_vote(u_ids)  # out of fold where the final refit learned from the audit
    u_conf, u_group = u_vote.result.confidence.astype(np.float64), vote_groups(u_vote)
    u_label = u_vote.result.label
    u_correct = (u_label == u_y).astype(np.float64)
    noise, u_value = (_reference_noise(store, u_ids, u_label, u_y, u_correct, labels, scorer)
                      if ctx.tuning.trust_correction else (None, u_correct))
    # the estimate and the calibration rest only on answers of a reviewer of measured accuracy (`trust`):
    # agreement with one whose accuracy nothing measured would calibrate the confidence to that reviewer
    unmeasured_kinds = ctx.weigher.unmeasured()
    answered_by = audit_reviewers(store, u_ids)
    yardstick = ~np.isin(answered_by, list(unmeasured_kinds)) if unmeasured_kinds else np.ones(len(u_ids), bool)
    all_answered_by = audit_reviewers(store, audit_ids)
    unmeasured = {k: int((all_answered_by == k).sum()) for k in sorted(unmeasured_kinds)}
    y_noise = None if noise is None else noise.take(yardstick)
    # a row drawn with probability pi stands for (1 - pi)/pi rows (`sampling`): every mean over the audit weighs it so
    u_w = audit_weights(store, u_ids)
    if yardstick.sum() >= trust.MIN_POINTS:
        calibrator, on = trust.fit_calibrator(u_conf[yardstick], u_correct[yardstick], u_group[yardstick],
                                              y_noise, u_w[yardstick]), "audit"
    else:
        o_conf, o_correct, o_group = _cross_fitted_votes(ctx, unmeasured_kinds)
        if len(o_conf) >= trust.MIN_POINTS:
            calibrator, on = trust.fit_calibrator(o_conf, o_correct, o_group), "reviewed"
        else:
            calibrator, on = trust.IDENTITY, "none"
    if not len(audit_ids):
        return Calibration(calibrator, on, None, [], 0, unmeasured={k: 0 for k in sorted(unmeasured_kinds)} or None)
    m = yardstick
    if on == "audit" and m.sum() >= 2 * FOLDS:
        folds = np.random.default_rng(seed * 1_000_003 + 65_537).permutation(int(m.sum())) % FOLDS
        y_cal = trust.cross_fitted(u_conf[m], u_correct[m], u_group[m], folds, y_noise, u_w[m])
        u_cal = calibrator(u_conf, u_group)
        u_cal[m] = y_cal
    else:
        u_cal = calibrator(u_conf, u_group)  # not fitted on these rows (or too few to fold): unbiased as it is
    label_names = np.array(labels, dtype=object)
    audit = trust.Audit(weight=store.row_counts_of(u_ids[m]) * u_w[m], calibrated=u_cal[m], correct=u_value[m],
                        source=u_group[m].astype(object),
                        label=np.where(u_label[m] >= 0, label_names[np.maximum(u_label[m], 0)], ""))
    if not m.any():  # every audit answer came from a reviewer of unmeasured accuracy: nothing to measure with
        audit = None
    return Calibration(calibrator, on, audit, trust.reliability(u_cal[m], u_value[m], weight=u_w[m]), int(len(audit_ids)),
                       0 if noise is None else int((noise.agree_if_right < 1).sum()), unmeasured or None,
                       _blind(store, labels, ctx.weigher.weighed - unmeasured_kinds),
                       dict(zip(audit_ids.tolist(), scorer.audit_vote(audit_ids).result.label.tolist(), strict=True)))


def _blind(store: RunStore, labels: list[str], measured: frozenset[str]) -> trust.Blind | None:
    """The blind audit answers of the reviewers in `measured`, as the estimate reads them."""
    found = ((store.get_meta("weighing") or {}).get("blind") or {})
    parts = [(kind, found[kind]) for kind in sorted(measured) if (found.get(kind) or {}).get("rows")]
    if not parts:
        return None
    label, source, correct, ids = [], [], [], []
    for kind, b in parts:
        for answer, decided, right in zip(b["answer"], b["decided"], b["right"], strict=True):
            label.append(labels[decided])
            source.append(reviewed_by(kind) if decided == answer else outweighed(kind))
            correct.append(float(right))
        ids += b.get("ids") or [-1] * len(b["right"])  # a run weighed before ids were kept: equal weights
    return trust.Blind(np.array(label, dtype=object), np.array(source, dtype=object), np.array(correct),
                       audit_weights(store, np.array(ids, np.int64)))


def audit_reviewers(store: RunStore, ids: np.ndarray) -> np.ndarray:
    """The reviewer whose answer decided each of audit rows `ids` ("" where none did)."""
    reviews = store.reviews(ids.tolist())
    return np.array([reviewer_of(reviews[int(t)].source) if int(t) in reviews else "" for t in ids], dtype=object)


def _reference_noise(store: RunStore, ids: np.ndarray, label: np.ndarray, answer: np.ndarray, agreed: np.ndarray,
                     labels: list[str], scorer: Scorer) -> tuple[trust.ReferenceNoise | None, np.ndarray]:
    """Where a weighed reviewer answered audit rows `ids` (its confusion matrix is in the weighing),
    how its answers relate to the truth, and each row's noise-corrected "the vote was right" (see
    `trust`); rows a trusted reviewer answered keep their 0/1. (None, `agreed`) when none did.
    The matrix is the weighing's estimate: where it is off, so are both (measured: BENCHMARKS.md)."""
    k = len(labels)
    noisy = answer_noise(store, ids.tolist(), k)
    if not noisy:
        return None, agreed
    prior = np.ones(k)  # the vote's labels over every row (a row without one counts as the first label)
    for v in scorer.votes("the labels' shares, for the reviewer's noise"):
        prior += np.bincount(np.maximum(v.result.label, 0), minlength=k)
    a, b, value = np.ones(len(ids)), np.zeros(len(ids)), agreed.astype(np.float64).copy()
    for m, C in noisy:
        rn = trust.reference_noise(label[m], C, prior / prior.sum())
        a[m], b[m] = rn.agree_if_right, rn.agree_if_wrong
        value[m] = trust.unbiased_correct(label[m], answer[m], C)
    return trust.ReferenceNoise(a, b), value


def _cross_fitted_votes(ctx: RunContext, unmeasured: frozenset[str] = frozenset()
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, right or not, group) of the reviewed rows' votes by versions that never saw them;
    rows decided by a reviewer in `unmeasured` are left out (right or not would be agreement with it)."""
    store, scorer, trainer, registry, labels = ctx.store, ctx.scorer, ctx.trainer, ctx.registry, ctx.labels
    ids, y = reviewed(store)
    if unmeasured and len(ids):
        by = store.reviews(ids.tolist())
        keep = np.array([reviewer_of(by[int(t)].source) not in unmeasured for t in ids], bool)
        ids, y = ids[keep], [v for v, k in zip(y, keep, strict=True) if k]
    empty = (np.zeros(0), np.zeros(0), np.zeros(0, dtype="<U9"))
    names = registry.voters()
    if len(ids) < 4 * FOLDS or not names or any(isinstance(registry.models[n], Updatable) for n in names):
        return empty
    y_idx = np.array([labels.index(v) for v in y], np.int64)
    P, names = scorer.tensor(ids)
    for j, name in enumerate(names):
        if not registry.models[name].trainable:
            continue  # a fixed specialist never trained on anything: its stored votes are out of sample
        for oof in trainer.cross_fit(name, ids, y, stratified=False):
            P[oof.test, j] = scorer.proba(oof.model, ids[oof.test])
    result = scorer.predict(P)
    full = result.unanimous & (result.n_votes == len(names))
    return (result.confidence.astype(np.float64), (result.label == y_idx).astype(np.float64),
            np.where(full, CONSENSUS, VOTE))
