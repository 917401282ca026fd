"""Calibrate: the data `trust` needs, from the run store and the final vote.

- the final vote of the audit rows no stage picked (no version trained on them, and the vote never
  saw their labels): they fit the calibrator and measure the estimate;
- with too small an audit, cross-fitted votes of the reviewed rows: each fold's rows voted by fresh
  copies of the trainable specialists fitted on the other folds (skipped when a specialist is a
  fine-tuned transformer: five fine-tunes are not worth a calibration point);
- per text, how often it occurs, its source, and whether its label is known (reviewed or audited).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import trust
from ..registry import Registry
from ..review.weigh import answer_noise
from ..scoring import Scorer, Vote
from ..specialists import Updatable
from ..store import RunStore
from ..training import Trainer, audited, reviewed

FOLDS = 5
UNREVIEWED = ("consensus", "vote")


@dataclass
class Trust:
    """The calibrator, the calibrated confidence of every text's vote, and the estimates."""

    calibrator: trust.Calibrator
    fitted_on: str  # "audit" (the unpicked audit rows), "reviewed" (cross-fitted reviewed rows) or "none"
    calibrated: np.ndarray  # (n_texts,) calibrated confidence of each text's vote
    estimates: dict[str, Any] | None
    reliability: list[dict[str, float]]  # calibrated confidence against accuracy on the unpicked audit rows
    audit_rows: int

    def to_meta(self) -> dict[str, Any]:
        return {"calibrator": self.calibrator.to_dict(), "calibrated_on": self.fitted_on, "estimates": self.estimates,
                "reliability": self.reliability, "audit_rows": self.audit_rows}


def vote_groups(vote: Vote) -> np.ndarray:
    """`consensus` where every specialist voted and agreed, else `vote`: the two calibrated sources."""
    full = vote.result.unanimous & (vote.result.n_votes == len(vote.names))
    return np.where(full, "consensus", "vote")


def fit_trust(store: RunStore, scorer: Scorer, trainer: Trainer, registry: Registry, labels: list[str],
              vote: Vote, final_source: np.ndarray, final_label: np.ndarray, known: np.ndarray, seed: int,
              known_right: np.ndarray | None = None) -> Trust:
    """The calibrator (on the audit rows no stage picked: a uniform sample of the rows the vote labels),
    and the estimates of the output whose texts have `final_source`, `final_label` and `known`
    (their label is known: right with probability `known_right`, 1 by default)."""
    k_index = {lab: i for i, lab in enumerate(labels)}
    groups = vote_groups(vote)
    conf = vote.result.confidence.astype(np.float64)
    audit_ids, audit_y = audited(store)
    picked = store.audit_hard()
    unpicked = np.array([t not in picked for t in audit_ids.tolist()], bool)
    u_ids = audit_ids[unpicked]
    u_y = np.array([k_index[v] for v in np.asarray(audit_y, dtype=object)[unpicked]], np.int64)
    u_conf, u_group = conf[u_ids], groups[u_ids]
    u_label = vote.result.label[u_ids]
    u_correct = (u_label == u_y).astype(np.float64)
    noise, u_value = _reference_noise(store, u_ids, u_label, u_y, u_correct, labels, vote)
    if len(u_ids) >= trust.MIN_POINTS:
        calibrator, on = trust.fit_calibrator(u_conf, u_correct, u_group, noise), "audit"
    else:
        o_conf, o_correct, o_group = _cross_fitted_votes(store, scorer, trainer, registry, labels, vote, seed)
        if len(o_conf) >= trust.MIN_POINTS:
            calibrator, on = trust.fit_calibrator(o_conf, o_correct, o_group), "reviewed"
        else:
            calibrator, on = trust.IDENTITY, "none"
    calibrated = calibrator(conf, groups)
    if not len(audit_ids):
        return Trust(calibrator, on, calibrated, None, [], 0)
    if on == "audit" and len(u_ids) >= 2 * FOLDS:
        folds = np.random.default_rng(seed * 1_000_003 + 65_537).permutation(len(u_ids)) % FOLDS
        u_cal = trust.cross_fitted(u_conf, u_correct, u_group, folds, noise)
    else:
        u_cal = calibrated[u_ids]  # not fitted on these rows (or too few to fold): unbiased as it is
    weight = np.zeros(store.n_texts, np.float64)
    for t, n in store.conn.execute("SELECT text_id, COUNT(*) FROM rows WHERE text_id IS NOT NULL GROUP BY text_id"):
        weight[t] = n
    label_names = np.array(labels, dtype=object)
    vote_label = np.where(vote.result.label >= 0, label_names[np.maximum(vote.result.label, 0)], "")
    pop = trust.Population(
        weight=weight, known=known, calibrated=calibrated, source=np.asarray(final_source, dtype=object),
        label=np.asarray(final_label, dtype=object), audit_weight=weight[u_ids], audit_calibrated=u_cal,
        audit_correct=u_value, audit_source=u_group.astype(object), audit_label=vote_label[u_ids],
        known_right=known_right)
    estimates = trust.estimates(pop, labels)
    estimates["basis"] = {"audit_rows": int(len(audit_ids)), "unpicked_audit_rows": int(len(u_ids)),
                          "calibrated_on": on,
                          "noisy_reference_rows": 0 if noise is None else int((noise.agree_if_right < 1).sum())}
    return Trust(calibrator, on, calibrated, estimates, trust.reliability(u_cal, u_value), int(len(audit_ids)))


def _reference_noise(store: RunStore, ids: np.ndarray, label: np.ndarray, answer: np.ndarray, agreed: np.ndarray,
                     labels: list[str], vote: Vote) -> tuple[trust.ReferenceNoise | None, np.ndarray]:
    """Where a weighed reviewer answered audit rows `ids` (its confusion matrix is in the weighing),
    how its answers relate to the truth, and each row's noise-corrected "the vote was right" (see
    `trust`); rows a trusted reviewer answered keep their 0/1. (None, `agreed`) when none did.
    The matrix is the weighing's estimate: where it is off, so are both (measured: BENCHMARKS.md)."""
    k = len(labels)
    noisy = answer_noise(store, ids.tolist(), k)
    if not noisy:
        return None, agreed
    prior = np.bincount(np.maximum(vote.result.label, 0), minlength=k).astype(np.float64) + 1.0
    a, b, value = np.ones(len(ids)), np.zeros(len(ids)), agreed.astype(np.float64).copy()
    for m, C in noisy:
        rn = trust.reference_noise(label[m], C, prior / prior.sum())
        a[m], b[m] = rn.agree_if_right, rn.agree_if_wrong
        value[m] = trust.unbiased_correct(label[m], answer[m], C)
    return trust.ReferenceNoise(a, b), value


def _cross_fitted_votes(store: RunStore, scorer: Scorer, trainer: Trainer, registry: Registry, labels: list[str],
                        vote: Vote, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, right or not, group) of the reviewed rows' votes by versions that never saw them."""
    from sklearn.model_selection import KFold

    ids, y = reviewed(store)
    empty = (np.zeros(0), np.zeros(0), np.zeros(0, dtype="<U9"))
    names = registry.voters()
    if len(ids) < 4 * FOLDS or not names or any(isinstance(registry.models[n], Updatable) for n in names):
        return empty
    y_idx = np.array([labels.index(v) for v in y], np.int64)
    P, names = scorer.tensor(ids)
    for j, name in enumerate(names):
        if not registry.models[name].trainable:
            continue  # a fixed specialist never trained on anything: its stored votes are out of sample
        for train, test in KFold(FOLDS, shuffle=True, random_state=seed).split(ids):
            clone = trainer.fit(trainer.new(name), ids[train])
            P[test, j] = scorer.proba(clone, ids[test])
    result = scorer.aggregate(P, names, ids, fitted=vote.result)
    full = result.unanimous & (result.n_votes == len(names))
    return (result.confidence.astype(np.float64), (result.label == y_idx).astype(np.float64),
            np.where(full, "consensus", "vote"))
