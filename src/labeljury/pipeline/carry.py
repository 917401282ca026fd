"""Carry: a run that continues an earlier one (`labeljury run ... --from EARLIER.run`) on a new batch.

- `check_earlier`: the earlier run must be complete and of the same task (labels, instructions, examples,
  specialists); only the budget, the reviewers and how fast things run may differ. One line otherwise.
- `carry` (once, after ingest): every row the earlier run learned from (its reviewed rows, the audit's
  too: for this batch they are labeled data, and a chain's earlier batches come along, since the earlier
  run carried them) becomes training data here, with the label the earlier run learned (a weighed
  reviewer's verdict); a text this batch holds too keeps that label, is not asked again, and its source
  says so (`earlier:<reviewer>`). A uniform sample of the earlier input (and of its own reference) is kept
  to compare the new batch with. The earlier run directory is only read.
- `test_drift` (once, after encode): a classifier two-sample test on the encoder's embeddings: a logistic
  regression told to tell the reference from the new batch, cross-fitted; its AUC out of fold is 0.5 when
  nothing changed. Drift is an AUC significant beyond noise (z > DRIFT_Z under the null) and large enough
  to matter (>= DRIFT_AUC). A batch that has not drifted skips the bootstrap sample (its reviews go to
  the stages, where the earlier specialists pick the hard rows); one that has keeps it, as a fresh run.
- `compare_estimates` (after finalize): this batch's estimated accuracy against the earlier run's; a
  drop beyond both intervals is said loudly, with the labels that lost accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..budget import BudgetPlan
from ..errors import RunStoreError
from ..progress import Progress
from ..sources import CARRY, DRIFT, FINALIZE, FROM_RUN, REFERENCE, earlier, reviewer_of
from ..store import CHUNK, RunStore
from ..task import Task
from .encode import encode_ids

REFERENCE_ROWS = 1000  # the earlier input's uniform sample a new batch is compared with (and of the batch)
DRIFT_Z = 4.0  # the AUC's z-score under "nothing changed" beyond which it is not noise
DRIFT_AUC = 0.6  # and the AUC that matters: smaller shifts within a source are normal
DRIFT_EXAMPLES = 5
MIN_DRIFT_ROWS = 50
TASK_KEYS = ("labels", "instructions", "examples", "specialists")  # what must match the earlier run's


def check_earlier(earlier_dir: Path, task: Task) -> dict[str, Any]:
    """The earlier run's task (JSON), after checking that this run may continue it."""
    if not (earlier_dir / "run.db").is_file():
        raise RunStoreError(f"--from {str(earlier_dir)!r} is not a run directory (no run.db); pass the run directory "
                            "of the earlier batch (by default its output's name + .run)")
    with RunStore.existing(earlier_dir) as s:
        if not s.is_done(FINALIZE):
            raise RunStoreError(f"--from {str(earlier_dir)!r} is a run that has not finished; finish it first (rerun "
                                "it, with --finish to go on without the answers it waits for)")
        earlier_task = s.get_meta("task") or {}
    ours = task.model_dump(mode="json")
    for key in TASK_KEYS:
        if earlier_task.get(key) != ours.get(key):
            raise RunStoreError(f"--from {str(earlier_dir)!r} was a run of another task: its {key} differ from this "
                                f"task file's; a run continues an earlier one of the same {', '.join(TASK_KEYS)} "
                                "(the budget, the reviewers and the engine may change)")
    return earlier_task


def selected_specialists(earlier_dir: Path) -> list[dict[str, Any]] | None:
    """The specialists the LLM meta-controller chose for the earlier run (None: the task's own list)."""
    with RunStore.existing(earlier_dir) as s:
        return s.get_meta("selected_specialists")


def carry(store: RunStore, earlier_dir: Path, progress: Progress, seed: int, cap: int | None = None) -> None:
    """Bring the earlier run's reviewed rows and its reference sample into `store` (once): every one this
    input holds (reused), and of the others at most `cap` (`continual.max_train_rows`: what a refit can learn
    from; the earlier batch's own rows first), so that a long chain does not encode ever more texts."""
    if store.is_done(CARRY):
        return
    with RunStore.existing(earlier_dir) as s:
        ids, labels = s.learned_labels(include_audit=True, include_carried=True)
        sources = {t: r.source for t, r in s.reviews(ids.tolist()).items()}
        # a weighed reviewer's answer: the label learned is the weighing's verdict, believed so much
        beliefs = {t: v.belief for t, v in s.verdicts(ids.tolist()).items() if v.answer is not None}
        texts = s.texts_by_id(ids.tolist())
        n_input = s.n_input_texts
        rng = np.random.default_rng(seed * 7919 + 17)
        own = rng.choice(n_input, min(REFERENCE_ROWS, n_input), replace=False) if n_input else np.zeros(0, np.int64)
        inherited = np.array(s.routed(REFERENCE), np.int64)
        # the earlier batch's own sample, and as much again of what it inherited: older batches count less
        if len(inherited) > len(own):
            inherited = rng.choice(inherited, len(own), replace=False)
        ref_ids = np.union1d(own, inherited).tolist()
        reference = [x for x, _ in s.texts_by_id(ref_ids).values()]
    keep = [i for i, t in enumerate(ids.tolist()) if t in texts]
    reused, _ = store.add_carried(
        [texts[int(ids[i])][0] for i in keep], [labels[i] for i in keep],
        [earlier(reviewer_of(sources.get(int(ids[i]), "reviewed:unknown"))) for i in keep],
        [beliefs.get(int(ids[i])) for i in keep], reference, cap=cap,
        newest=[int(ids[i]) < n_input for i in keep], seed=seed)
    carried, _ = store.carried_totals()
    progress.log(f"continuing {earlier_dir}: {carried:,} reviewed rows learned from it"
                 + (f" (of its {len(keep):,}: continual.max_train_rows bounds them)" if carried < len(keep) else "")
                 + (f" ({reused:,} of them are in this input too: their earlier label is reused, not asked again)"
                    if reused else ""))


def test_drift(store: RunStore, features: Any, encoder: str, seed: int, progress: Progress,
               engine: Any = None) -> dict[str, Any]:
    """The drift test of this batch against the earlier reference sample (see the module doc), stored once."""
    saved = store.get_meta(DRIFT)
    if saved is not None:
        return saved
    ref = np.array(sorted(store.routed(REFERENCE)), np.int64)
    n_input = store.n_input_texts
    rng = np.random.default_rng(seed * 104_729 + 3)
    new = np.sort(rng.choice(n_input, min(REFERENCE_ROWS, n_input), replace=False)) if n_input else np.zeros(0, np.int64)
    if min(len(ref), len(new)) < MIN_DRIFT_ROWS:
        result: dict[str, Any] = {"tested": False, "why": f"too few texts to compare ({len(ref)} earlier, {len(new)} new; "
                                                          f"the test needs {MIN_DRIFT_ROWS} of each)"}
    else:
        X = np.vstack([_embeddings(store, features, encoder, ref, progress, engine),
                       _embeddings(store, features, encoder, new, progress, engine)])
        y = np.r_[np.zeros(len(ref)), np.ones(len(new))]
        p = _out_of_fold(X, y, seed)
        auc = _auc(p, y)
        n0, n1 = len(ref), len(new)
        z = (auc - 0.5) / math.sqrt((n0 + n1 + 1) / (12 * n0 * n1))
        newest = np.argsort(-p[n0:], kind="stable")[:DRIFT_EXAMPLES]
        examples = [store.texts_by_id([int(new[i])])[int(new[i])][0][:200] for i in newest.tolist()]
        result = {"tested": True, "auc": round(float(auc), 4), "z": round(float(z), 2), "reference_rows": n0,
                  "batch_rows": n1, "encoder": encoder, "drifted": bool(z > DRIFT_Z and auc >= DRIFT_AUC),
                  "examples": examples}
    store.set_meta(DRIFT, result)
    if result.get("drifted"):
        progress.log(f"DRIFT: this batch differs from what the earlier run learned from (its texts are told apart "
                     f"from the earlier ones with AUC {result['auc']:.2f}); the bootstrap sample is kept as in a fresh "
                     f"run. Texts most unlike the earlier ones: {' | '.join(repr(e[:80]) for e in result['examples'][:3])}")
    elif result["tested"]:
        progress.log(f"no drift: this batch's texts are like the earlier ones (AUC {result['auc']:.2f}, chance 0.5); "
                     "the earlier specialists start, without a bootstrap sample")
    else:
        progress.log(f"drift not tested: {result['why']}")
    return result


def without_bootstrap(plan: BudgetPlan) -> BudgetPlan:
    """The plan with the bootstrap's reviews spread over the stages instead (the earlier specialists
    already vote: their hard rows teach more than a diverse sample)."""
    if not plan.bootstrap or not plan.stages:
        return plan
    hard = plan.hard + plan.bootstrap
    n = len(plan.stages)
    base, extra = divmod(hard, n)
    return BudgetPlan(total=plan.total, bootstrap=0, audit=plan.audit,
                      stages=tuple(base + (i < extra) for i in range(n)))


def compare_estimates(store: RunStore, progress: Progress) -> dict[str, Any] | None:
    """This batch's estimate against the earlier run's (stored in the drift record); a drop beyond both
    intervals is logged as a WARNING naming the labels whose own estimate dropped so too."""
    where = store.get_meta(FROM_RUN)
    ours = ((store.get_meta("trust") or {}).get("estimates") or {})
    if where is None or not ours.get("overall") or not (Path(where) / "run.db").is_file():
        return None
    with RunStore.existing(where) as s:
        theirs = ((s.get_meta("trust") or {}).get("estimates") or {})
    if not theirs.get("overall") or theirs["overall"].get("low") is None or ours["overall"].get("high") is None:
        return None

    def dropped(a: dict[str, Any], b: dict[str, Any]) -> bool:
        return None not in (a.get("high"), b.get("low")) and a["high"] < b["low"]

    lost = sorted(lab for lab, e in (ours.get("by_class") or {}).items()
                  if dropped(e, (theirs.get("by_class") or {}).get(lab) or {}))
    result = {"earlier": theirs["overall"].get("accuracy"), "earlier_low": theirs["overall"].get("low"),
              "earlier_high": theirs["overall"].get("high"), "now": ours["overall"].get("accuracy"),
              "dropped": dropped(ours["overall"], theirs["overall"]), "labels_lost": lost}
    drift = dict(store.get_meta(DRIFT) or {})
    drift["estimate"] = result
    store.set_meta(DRIFT, drift)
    if result["dropped"]:
        progress.log(f"WARNING: this batch's labels are less accurate than the earlier batch's beyond doubt: estimated "
                     f"{result['now']:.1%} [{ours['overall']['low']:.1%}, {ours['overall']['high']:.1%}] against "
                     f"{result['earlier']:.1%} [{result['earlier_low']:.1%}, {result['earlier_high']:.1%}]"
                     + (f"; labels that lost accuracy: {', '.join(lost)}" if lost else "")
                     + ". Check the batch (labeljury report), or give it more reviews")
    return result


def _embeddings(store: RunStore, features: Any, encoder: str, ids: np.ndarray, progress: Progress,
                engine: Any) -> np.ndarray:
    if all(store.has_embeddings(encoder, c) for c in np.unique(ids // CHUNK).tolist()):
        return np.asarray(features.embeddings(encoder, ids), np.float32)
    return encode_ids(store, encoder, ids, progress, engine)


def _out_of_fold(X: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """P(new batch) of each row, from a logistic regression fitted on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    p = np.zeros(len(y))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(X, y):
        model = LogisticRegression(C=1.0, max_iter=1000).fit(X[train], y[train])
        p[test] = model.predict_proba(X[test])[:, 1]
    return p


def _auc(p: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))
