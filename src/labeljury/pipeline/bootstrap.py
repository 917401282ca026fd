"""Bootstrap: the rows reviewed first — a small diverse sample that starts the specialists, every
specialist judged on it — and the audit sample, which measures.

- `route_audit_by_hardness` (the default, once version 1 exists): the audit, drawn with known
  probabilities favouring the rows the first versions find hard (`sampling`, `review.audit_sampling`);
- `route_audit` (`audit_sampling: uniform`, before the bootstrap): drawn uniformly at random from the
  unique texts;
- `route_bootstrap`: k-means over the embeddings picks the sample (`routing.select_bootstrap`) among
  at most `BOOTSTRAP_POOL` rows drawn from those not in the audit;
- `validate`: a specialist with labels of its own gets the label map the reviews support best; each
  specialist's accuracy on the sample (trainable ones by cross-validation) becomes its first vote
  weight. A fixed specialist is dropped only when it is worse than chance beyond doubt (the upper end
  of the 95% Wilson interval of its accuracy is below chance: a dozen rows prove nothing), and never
  when it is the run's last voter. A trainable one is never dropped: below chance its vote weighs
  nothing, and it comes back as the stages measure it on more reviewed rows;
- `fit_first_versions`: version 1 of each trainable specialist, fitted on the sample.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..engine import Engine
from ..progress import Progress
from ..registry import Promotion, Registry
from ..routing import HardestFirst, hardness, select_bootstrap
from ..sampling import inclusion_probabilities, systematic_sample
from ..scoring import Features, Scorer
from ..sources import AUDIT, AUDIT_INCLUSION, BOOTSTRAP, CARRIED, ROUTE_AUDIT, ROUTE_BOOTSTRAP, VALIDATE
from ..specialists import MappedSpecialist, Specialist, Updatable
from ..stats import wilson_interval
from ..store import CHUNK, RunStore
from ..training import Trainer, bounded_rows, reviewed
from ..voting import hard_labels
from .encode import encode_ids

if TYPE_CHECKING:
    from ..context import RunContext

ROUTE_STEP = ROUTE_BOOTSTRAP
AUDIT_STEP = ROUTE_AUDIT
VALIDATE_STEP = VALIDATE
BOOTSTRAP_POOL = 50_000  # k-means for the bootstrap runs on at most this many embeddings
VALIDATE_CARRIED = 1000  # rows an earlier run reviewed that validate the specialists of a run continuing it


def route_audit(store: RunStore, n: int, seed: int) -> None:
    """Route `n` rows drawn uniformly at random to review as the audit (once): among the input's texts
    that no earlier run reviewed (`--from`: those keep their earlier label)."""
    if store.is_done(AUDIT_STEP):
        return
    rng = np.random.default_rng(seed * 1_000_003 + 104_729)
    pool = _unreviewed_input(store)
    # positions into the pool: when it is every text of the input (no earlier run, or one that reviewed none
    # of them), the same draw as a run that continues none
    ids = pool[np.sort(rng.choice(len(pool), min(n, len(pool)), replace=False))] if n else np.zeros(0, np.int64)
    store.add_routing(ids.tolist(), AUDIT, None, stage=0, done_step=AUDIT_STEP)


def route_audit_by_hardness(ctx: RunContext, n: int) -> None:
    """Route `n` rows to review as the audit (once), drawn with known unequal probabilities that favour
    the rows the first versions find hard (`sampling`; `Tuning.audit_tilt` of each probability spread by
    hardness, the rest evenly, so a row's weight is at most 1 / (1 - tilt) times a uniform draw's): among the input's texts not reviewed yet
    (the bootstrap's, an earlier run's). Each one's probability is kept (`AUDIT_INCLUSION`): the audit
    counts a row (1 - pi)/pi times wherever it measures (`training.audit_weights`)."""
    store, tilt = ctx.store, ctx.tuning.audit_tilt
    if store.is_done(AUDIT_STEP):
        return
    pool = np.setdiff1d(_unreviewed_input(store), np.array(store.routed(), np.int64))
    ids = np.zeros(0, np.int64)
    pi = np.zeros(0)
    if n and len(pool):
        h = np.zeros(len(pool))
        if ctx.registry.voters():
            strategy = HardestFirst(ctx.task.review.policy, ctx.task.review.threshold)
            for v in ctx.scorer.votes("drawing the audit"):
                at = np.searchsorted(pool, v.ids)
                inside = at < len(pool)
                inside[inside] = pool[at[inside]] == v.ids[inside]
                h[at[inside]] = hardness(v.result, v.P, strategy.policy)[inside]
        pi_all = inclusion_probabilities(h, min(n, len(pool)), tilt)
        drawn = systematic_sample(pi_all, np.random.default_rng(ctx.seed * 1_000_003 + 104_729))
        ids, pi = pool[drawn], pi_all[drawn]
    store.set_meta(AUDIT_INCLUSION, {"ids": ids.tolist(), "pi": [round(float(p), 9) for p in pi],
                                     "tilt": tilt, "pool": int(len(pool))})
    store.add_routing(ids.tolist(), AUDIT, None, stage=0, done_step=AUDIT_STEP)


def route_bootstrap(store: RunStore, n: int, features: Features, encoder: str, seed: int, progress: Progress,
                    engine: Engine | None = None) -> None:
    """Route `n` diverse rows to review (once), none of them in the audit. The sampler asks for the
    embeddings of the rows its k-means fits on only: from the run store when the specialists' encoder
    pass stored them, else computed for those rows alone (a run whose specialists read no embeddings
    then never encodes the whole input)."""
    if store.is_done(ROUTE_STEP):
        return
    ids = np.zeros(0, np.int64)
    if n:
        rng = np.random.default_rng(seed)
        pool = np.setdiff1d(_unreviewed_input(store), np.array(store.routed(AUDIT), np.int64))
        if len(pool) > BOOTSTRAP_POOL:
            pool = np.sort(rng.choice(pool, BOOTSTRAP_POOL, replace=False))

        def embed(rows: np.ndarray) -> np.ndarray:
            wanted = pool[rows]
            if all(store.has_embeddings(encoder, c) for c in np.unique(wanted // CHUNK).tolist()):
                return features.embeddings(encoder, wanted)
            return encode_ids(store, encoder, wanted, progress, engine)

        ids = pool[select_bootstrap(embed, n, seed=seed, n_rows=len(pool))]
    store.add_routing(ids.tolist(), BOOTSTRAP, None, stage=0, done_step=ROUTE_STEP)


def _unreviewed_input(store: RunStore) -> np.ndarray:
    """The input's text ids, but those an earlier run reviewed (`--from`)."""
    ids = np.arange(store.n_input_texts)
    carried = store.routed(CARRIED)
    return np.setdiff1d(ids, np.array(carried, np.int64)) if carried else ids


def validate(ctx: RunContext) -> None:
    store, registry, trainer, scorer, labels, progress = (ctx.store, ctx.registry, ctx.trainer, ctx.scorer,
                                                          ctx.labels, ctx.progress)
    if store.is_done(VALIDATE_STEP):
        return
    rows = np.array(store.routed(BOOTSTRAP), np.int64)
    carried = np.array(store.routed(CARRIED), np.int64)
    if len(carried) and store.learns_from_carried:  # a later batch: the earlier reviewed rows validate too (a sample)
        rng = np.random.default_rng(ctx.seed + 11)
        rows = np.union1d(rows, rng.choice(carried, min(VALIDATE_CARRIED, len(carried)), replace=False))
    ids, y = reviewed(store, rows)
    k = len(labels)
    chance = 1.0 / k
    for name, model in list(registry.models.items()):
        _recheck_label_map(registry, model, scorer, ids, y, k, progress)
        scored = _validation_accuracy(trainer, scorer, model, ids, y, labels)
        if scored is None:
            registry.record_validation(name, None, 0, note="not validated: too few reviewed rows")
            continue
        acc, n = scored
        high = wilson_interval(acc, n)[1]
        if not model.trainable and high < chance and len(registry.models) > 1:
            registry.drop(name, acc, n, note=f"dropped: accuracy {acc:.3f} on {n} bootstrap rows (95% interval up "
                                             f"to {high:.3f}) is below chance {chance:.3f}")
            progress.log(f"dropped specialist {name}: bootstrap accuracy {acc:.1%} (at most {high:.1%}) < chance "
                         f"{chance:.1%}")
        else:
            note = (f"weighs nothing for now: accuracy {acc:.3f} on {n} bootstrap rows is not above chance"
                    if acc <= chance else None)
            registry.record_validation(name, acc, n, note=note)
    store.mark_done(VALIDATE_STEP)


def fit_first_versions(ctx: RunContext) -> None:
    """Version 1 of each trainable specialist not fitted yet, on every reviewed row (at most
    `continual.max_train_rows` of them, a uniform sample)."""
    registry, trainer = ctx.registry, ctx.trainer
    ids, _ = reviewed(ctx.store)
    if not ids.size:
        return
    ids = bounded_rows(ids, np.zeros(0, np.int64), ctx.continual.max_train_rows, ctx.seed)
    for name in registry.trainable():
        if registry.versions[name] == 0:
            model = trainer.fit(trainer.new(name), ids)
            registry.save_checkpoint(model, 1)  # type: ignore[arg-type]
            registry.commit([Promotion(name, model, 1, ids)])


def _recheck_label_map(registry: Registry, model: Specialist, scorer: Scorer, ids: np.ndarray, y: list[str],
                       k: int, progress: Progress) -> None:
    """A model with labels of its own keeps its label map only if it agrees with the reviewed rows
    about as well as the best possible map; else it switches to the best one."""
    if not isinstance(model, MappedSpecialist) or len(ids) < 2 * k:
        return
    from ..controller.validate import recheck_label_map

    check = recheck_label_map(model, scorer.features.rows(model, ids), y)
    if check is not None and not check.accepted:
        registry.set_label_map(model.name, model.label_map.mapping)
        progress.log(f"specialist {model.name}: {check.note()}")


def _validation_accuracy(trainer: Trainer, scorer: Scorer, model: Specialist, ids: np.ndarray, y: list[str],
                         labels: list[str]) -> tuple[float, int] | None:
    """(accuracy, rows it voted on) on the bootstrap rows; None when there are too few."""
    k = len(labels)
    if len(ids) < 2 * k:
        return None
    if model.trainable and isinstance(model, Updatable):
        return None  # cross-validating a fine-tuned transformer costs k fine-tunes: the stages validate it
    y_idx = np.array([labels.index(v) for v in y])
    if model.trainable:
        pred = trainer.cross_val_predict(model.name, ids, y)
    else:
        pred = hard_labels(scorer.proba(model, ids))
    voted = pred >= 0
    if voted.sum() < 2 * k:
        return None
    return float((pred[voted] == y_idx[voted]).mean()), int(voted.sum())
