"""Weighing a reviewer that is often wrong: its answer is one more vote, with a confusion matrix.

An LLM reviewer is right on about 65-75% of hard rows (the paper's own GPT-3.5 numbers); obeying it
makes every fourth reviewed label wrong and teaches the specialists those mistakes. For each reviewer
whose answers are weighed (by default `llm`; `gold`, `file`, `human` and `label-studio` are obeyed), the
decided label of a row it answered is the posterior

    P(y | answer, vote) ~ prior(y) * C[y, answer]

where `prior` is the vote's distribution taken before the row was reviewed (by specialists that had not
learned from it: `RunStore.priors`, written by `record_priors`, `cross_fit_priors` and `audit_priors`
below) and C the reviewer's confusion matrix, P(answer | true label). C is
estimated by expectation-maximisation over every row the reviewer answered (Dawid-Skene with the vote
as the other annotator), with the rows a trusted reviewer also answered (a cascade's people, the audit)
entering as known truth, and a Dirichlet prior toward DEFAULT_ACCURACY so that a few rows cannot make
it perfect or useless. The specialists learn from the reviewer's own answers, each once: learning from
the decided labels instead, leaving out the doubtful ones, or weighting each answer by the belief in it
were measured, and lost (BENCHMARKS.md, section 7; `Trainer(train_weights=True)` keeps the last one for
benchmarks). Uniform noise leaves the most likely label of a logistic regression where it was;
relabeling by the vote feeds the vote's own mistakes back into it.

The pipeline calls `Weigher.weigh` as a step after every round of review (`RunContext.review`); it is
the only writer of verdicts and of the weighing's summary (`weighing` in the run's meta).

Separately, every reviewed row whose label the prior contradicts with confidence is flagged for a
second look, by cleanlab's label-issue finder (`find_label_issues`) on those out-of-sample priors.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .scoring import Scorer
from .sources import AUDIT, CROSS_FIT_PRIORS, SENT_ON, reviewer_of
from .store import RunStore, Verdict

WEIGHED_BY_DEFAULT = frozenset({"llm"})
DEFAULT_ACCURACY = 0.7  # the prior belief in a weighed reviewer before its answers say otherwise
PRIOR_STRENGTH = 10.0  # ... worth this many rows per class
PRIOR_MIX = 0.1  # the vote is not calibrated: its distribution is mixed with uniform before use
FLAG_MIN_ROWS = 30  # fewer reviewed rows with a prior than this: no flags (cleanlab needs counts)
# A weighed reviewer's accuracy counts as measured only on audit rows (a random sample) that it and a trusted
# reviewer both answered, at least this many of them: its agreement with a vote that learned from it never does.
# A few suffice: the estimate gives the share right among them a Wilson interval, as wide as they are few.
MIN_MEASURED_ROWS = 10
# A reviewer that gives one label to nearly every row it answers, where the specialists see a mix, is broken
# (a prompt that does not fit, a model that cannot follow it): said loudly, whatever its weighing says.
DEGENERATE_SHARE = 0.95
DEGENERATE_MIN_ROWS = 30
DEGENERATE_GAP = 0.3  # the vote gives that label to at most DEGENERATE_SHARE - this of the same rows
EM_ITERATIONS = 50
TEMPERATURES = tuple(np.round(np.arange(0.25, 2.01, 0.125), 3))


@dataclass
class Weighing:
    """What weighing the reviewers found; summarised in `status`."""

    accuracy: dict[str, float] = field(default_factory=dict)  # reviewer -> estimated accuracy
    confusion: dict[str, list[list[float]]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)  # reviewer -> rows it answered
    checked: dict[str, int] = field(default_factory=dict)  # ... of which a trusted reviewer answered too
    overruled: int = 0
    flagged: int = 0
    # reviewer -> its answers to audit rows a stage would have sent it, answered blind beside a trusted
    # reviewer: {"rows", "answer_right" (its own answer right), "answer" (each row's), "answer_ok" (each row's
    # answer right, 0/1), "decided" (the label the weighing decides, each row's by a confusion matrix fitted
    # without it), "right" (0/1 of each)}
    blind: dict[str, dict[str, Any]] = field(default_factory=dict)
    # reviewer -> {label, share of its answers, share the vote gives that label on the same rows}
    degenerate: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        return {"accuracy": {k: round(v, 4) for k, v in self.accuracy.items()}, "confusion": self.confusion,
                "rows": self.rows, "checked": self.checked, "overruled": int(self.overruled),
                "untrained": 0, "flagged": int(self.flagged),  # untrained: kept for the readers of older runs
                "degenerate": self.degenerate, "blind": self.blind}


def degenerate_answers(answer: np.ndarray, prior: np.ndarray, labels: Sequence[str]) -> dict[str, Any] | None:
    """{label, share, vote_share} when one label is nearly every answer (`DEGENERATE_SHARE`) of at least
    `DEGENERATE_MIN_ROWS` rows while the vote, on the same rows, gives it far fewer; else None."""
    if len(answer) < DEGENERATE_MIN_ROWS:
        return None
    counts = np.bincount(answer, minlength=len(labels))
    top = int(counts.argmax())
    share = counts[top] / len(answer)
    vote_share = float((prior.argmax(axis=1) == top).mean())
    if share < DEGENERATE_SHARE or vote_share > share - DEGENERATE_GAP:
        return None
    return {"label": labels[top], "share": round(float(share), 4), "vote_share": round(vote_share, 4),
            "rows": int(len(answer))}


def _em(prior: np.ndarray, answer: np.ndarray, truth: np.ndarray, k: int, C0: np.ndarray, strength: float,
        iterations: int) -> tuple[np.ndarray, np.ndarray, float]:
    onehot = np.eye(k)[answer]
    known = truth >= 0
    C = C0.copy()
    for _ in range(iterations):
        q = prior * C[:, answer].T
        q /= q.sum(axis=1, keepdims=True)
        q[known] = np.eye(k)[truth[known]]
        counts = q.T @ onehot  # (true, answer)
        new = (counts + strength * C0) / (counts.sum(axis=1, keepdims=True) + strength)
        done = np.abs(new - C).max() < 1e-6
        C = new
        if done:
            break
    joint = prior * C[:, answer].T
    loglik = float(np.log(joint[~known].sum(axis=1)).sum())
    q = joint / joint.sum(axis=1, keepdims=True)
    q[known] = np.eye(k)[truth[known]]
    return C, q, loglik


def fit_confusion(prior: np.ndarray, answer: np.ndarray, truth: np.ndarray, k: int,
                  accuracy: float = DEFAULT_ACCURACY, strength: float = PRIOR_STRENGTH,
                  iterations: int = EM_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """(C, posterior): the reviewer's confusion matrix C[true, answer] and each row's posterior over the
    true label, from the rows' priors (n, k), the reviewer's answers (n,) and known truth (n,; -1
    unknown), by EM with a Dirichlet prior (`strength` pseudo-rows a class at `accuracy`).

    The vote's distribution is not calibrated (typically overconfident), so it is tempered,
    prior ** t renormalised, with the temperature t that makes the answers most likely: how often the
    reviewer agrees with the vote at each level of the vote's confidence tells both how right the
    reviewer is and how far to believe the vote."""
    off = (1.0 - accuracy) / max(k - 1, 1)
    C0 = np.full((k, k), off) + np.eye(k) * (accuracy - off)
    logp = np.log(np.clip(prior, 1e-6, None))
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for t in TEMPERATURES:
        tempered = np.exp(t * (logp - logp.max(axis=1, keepdims=True)))
        tempered /= tempered.sum(axis=1, keepdims=True)
        C, q, loglik = _em(tempered, answer, truth, k, C0, strength, iterations)
        if best is None or loglik > best[0]:
            best = (loglik, C, q)
    assert best is not None
    return best[1], best[2]


def answer_noise(store: RunStore, ids: Sequence[int], k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For rows `ids` whose review came from a weighed reviewer (one the last weighing estimated a
    confusion matrix for): [(mask over `ids`, its C[true, answer])], one per such reviewer; the rows a
    trusted reviewer answered are in no mask. Empty when no weighing ran or none of them is weighed."""
    confusion = (store.get_meta("weighing") or {}).get("confusion") or {}
    if not confusion or not len(ids):
        return []
    reviews = store.reviews(ids)
    kinds = np.array([reviewer_of(reviews[int(t)].source) if int(t) in reviews else "" for t in ids], dtype=object)
    out = []
    for kind in sorted(set(kinds.tolist()) & set(confusion)):
        C = np.asarray(confusion[kind], dtype=np.float64)
        if C.shape == (k, k) and abs(np.linalg.det(C)) >= 1e-6:  # else its answers say nothing: taken as given
            out.append((kinds == kind, C))
    return out


def weighed_kinds(specs: Sequence[Any], reviewer: Any = None) -> frozenset[str]:
    """The reviewers whose answers are weighed: a spec's `weigh` when set, else the default by kind;
    a reviewer object passed to the API says so with a `weigh` attribute."""
    kinds = set()
    for spec in specs:
        w = getattr(spec, "weigh", None)
        if w or (w is None and spec.kind in WEIGHED_BY_DEFAULT):
            kinds.add(spec.kind)
    for r in [reviewer, *(m for m, _ in getattr(reviewer, "reviewers", []))]:
        if r is not None and getattr(r, "weigh", None) is not None:
            (kinds.add if r.weigh else kinds.discard)(r.kind)
    return frozenset(kinds)


@dataclass
class _Reviewed:
    """The answered rows with a label of the task, as arrays (text ids ascending): a million reviews
    are a few arrays, not a million objects."""

    ids: np.ndarray
    answer: np.ndarray  # label index
    label: list[str]
    kind: np.ndarray  # the reviewer that decided each (object array of shared strings)
    confidence: np.ndarray  # NaN: none stated
    prior: np.ndarray  # (n, k) the vote's prior, mixed with uniform (uniform where there is none)
    has_prior: np.ndarray

    def at(self, t: int) -> int | None:
        i = int(np.searchsorted(self.ids, t))
        return i if i < len(self.ids) and self.ids[i] == t else None


def _reviewed(store: RunStore, labels: list[str]) -> _Reviewed:
    index = {lab: i for i, lab in enumerate(labels)}
    k = len(labels)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    kinds: dict[str, str] = {}
    for batch in store.review_batches():  # in batches, kept as arrays
        batch = [row for row in batch if row[1] in index]
        parts.append((np.array([row[0] for row in batch], dtype=np.int64),
                      np.array([index[row[1]] for row in batch], dtype=np.int64),
                      np.array([kinds.setdefault(row[2], reviewer_of(row[2])) for row in batch], dtype=object),
                      np.array([np.nan if row[3] is None else row[3] for row in batch], dtype=np.float64)))
    ids_arr, answer, kind, conf = (np.concatenate([p[i] for p in parts]) if parts else np.zeros(0, dt)
                                   for i, dt in enumerate((np.int64, np.int64, object, np.float64)))
    label = [labels[a] for a in answer.tolist()]
    ids = ids_arr
    uniform = np.full(k, 1.0 / k)
    prior = np.tile(uniform, (len(ids), 1))
    has = np.zeros(len(ids), bool)
    for stored in store.prior_batches():  # in batches: memory is a batch of JSON, not all of it
        t = np.array([row[0] for row in stored], dtype=np.int64)
        at = np.minimum(np.searchsorted(ids_arr, t), max(len(ids) - 1, 0))
        mine = (ids_arr[at] == t) if len(ids) else np.zeros(len(t), bool)
        has[at[mine]] = True
        parsed = [json.loads(stored[j][1]) for j in np.flatnonzero(mine).tolist()]
        shaped = np.array([isinstance(p, list) and len(p) == k for p in parsed], bool)
        if shaped.any():
            p = np.array([x for x, ok in zip(parsed, shaped, strict=True) if ok], dtype=float).reshape(-1, k)
            ok = np.isfinite(p).all(axis=1) & (p.sum(axis=1) > 0)
            rows = at[mine][shaped][ok]
            prior[rows] = p[ok] / p[ok].sum(axis=1, keepdims=True)
    prior = (1 - PRIOR_MIX) * prior + PRIOR_MIX * uniform  # the vote is not calibrated: mixed with uniform
    return _Reviewed(ids_arr, answer, label, kind, conf, prior, has)


def weigh(store: RunStore, labels: Sequence[str], weighed: Collection[str], learn_measured: bool = False) -> Weighing:
    """Decide every reviewed row's label (see the module doc) and store the verdicts. `learn_measured`: the
    specialists learn the decided label, not the answer, of a reviewer its blind audit answers measured."""
    labels = list(labels)
    k = len(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    rv = _reviewed(store, labels)
    # every reviewer's answer to the rows more than one answered (a cascade's later reviewers, a second look)
    answers = store.answers(answered_twice=True) if weighed else {}
    audit = set(store.routed(AUDIT)) if weighed else set()
    out = Weighing()
    verdicts: dict[int, Verdict] = {}
    for kind in sorted(weighed):
        at = np.flatnonzero(rv.kind == kind)
        if not len(at):
            continue
        # rows it decided, then flagged and sent on to a trusted reviewer who decided them (a second
        # look), are known truth for its confusion: which rows are sent on depends only on what is
        # observed (its answer and the prior), so the estimate stays unbiased. Their label is the
        # trusted one: no verdict is kept for them.
        # So are the audit rows it answered blind beside a trusted reviewer (`ReviewDesk.ask_blind`):
        # a random sample of the rows a stage sends it (the estimate weighs each (1 - pi)/pi).
        checked, is_blind = [], []
        for t, said in answers.items():
            i = rv.at(t) if SENT_ON in said or t in audit else None
            if i is not None and rv.kind[i] not in weighed and kind in said and said[kind].label in index:
                checked.append(i)
                is_blind.append(t in audit and SENT_ON not in said)
        decided_here = len(at)
        rows = np.concatenate([at, np.array(checked, dtype=np.int64)])
        truth = np.full(len(rows), -1)
        for r, i in enumerate(rows.tolist()):  # a trusted reviewer's answer to the same row is the truth
            t = int(rv.ids[i])
            trusted = [rv.label[i]] if r >= decided_here else [
                a.label for rev, a in answers.get(t, {}).items()
                if rev != kind and rev not in weighed and a.label in index]
            if trusted:
                truth[r] = index[trusted[0]]
        ans = np.array([rv.answer[i] if r < decided_here else index[answers[int(rv.ids[i])][kind].label]
                        for r, i in enumerate(rows.tolist())], dtype=np.int64)
        C, q = fit_confusion(rv.prior[rows], ans, truth, k)
        blind_at = decided_here + np.flatnonzero(np.array(is_blind, bool))
        if len(blind_at):
            out.blind[kind] = {**_blind_measurement(rv.prior[rows], ans, truth, k, blind_at),
                               "ids": rv.ids[rows[blind_at]].tolist()}
        out.confusion[kind] = [[round(float(x), 4) for x in row] for row in C]
        # its accuracy on the rows it answered: the mean posterior that its answer is right
        out.accuracy[kind] = float(q[np.arange(len(rows)), ans].mean())
        out.rows[kind], out.checked[kind] = len(rows), int((truth >= 0).sum())
        broken = degenerate_answers(ans, rv.prior[rows], labels)
        if broken is not None:
            out.degenerate[kind] = broken
        relabel = learn_measured and out.blind.get(kind, {}).get("rows", 0) >= MIN_MEASURED_ROWS
        for r, i in enumerate(at.tolist()):
            decided = int(q[r].argmax())
            # the specialists learn from its own answer (see the module doc), weighted, when weights are
            # used, by the belief that the answer is right
            verdicts[int(rv.ids[i])] = Verdict(labels[decided], float(q[r, decided]), rv.label[i], False,
                                               labels[decided] if relabel else rv.label[i], float(q[r, ans[r]]))
            out.overruled += int(decided != ans[r])
    for i in _label_issues(rv):
        t = int(rv.ids[i])
        if SENT_ON in answers.get(t, {}) and rv.kind[i] not in weighed:
            continue  # flagged before, and a trusted reviewer has had the second look
        # an obeyed reviewer's row keeps its label (no answer recorded: nothing was weighed)
        conf = rv.confidence[i]
        v = verdicts.get(t) or Verdict(rv.label[i], 1.0 if np.isnan(conf) else float(conf), None, False, rv.label[i], 1.0)
        verdicts[t] = replace(v, flagged=True)
        out.flagged += 1
    store.put_verdicts(verdicts)
    store.set_meta("weighing", out.to_meta())
    return out


def _blind_measurement(prior: np.ndarray, answer: np.ndarray, truth: np.ndarray, k: int, blind: np.ndarray,
                       folds: int = 2) -> dict[str, Any]:
    """How often the weighing's decision is right on the blind rows (positions `blind` of the rows
    weighed): each fold's rows decided by a confusion matrix fitted with the other folds' truth and
    without theirs, so that no row's own truth helps decide it (cross-fitting); and how often the
    reviewer's own answer is."""
    y = truth[blind]
    decided = np.zeros(len(blind), np.int64)
    fold = np.arange(len(blind)) % folds  # the blind rows come in no particular order of label
    for f in range(folds):
        hidden = blind[fold == f]
        t = truth.copy()
        t[hidden] = -1
        _, q = fit_confusion(prior, answer, t, k)
        decided[fold == f] = q[hidden].argmax(axis=1)
    return {"rows": int(len(blind)), "answer_right": int((answer[blind] == y).sum()),
            "answer": answer[blind].tolist(), "answer_ok": (answer[blind] == y).astype(int).tolist(),
            "decided": decided.tolist(), "right": (decided == y).astype(int).tolist()}


def _label_issues(rv: _Reviewed) -> list[int]:
    """Positions of the reviewed rows whose label the out-of-sample vote contradicts with confidence
    (cleanlab)."""
    at = np.flatnonzero(rv.has_prior)
    if len(at) < FLAG_MIN_ROWS:
        return []
    given = rv.answer[at]
    if len(set(given.tolist())) < 2:
        return []
    from cleanlab.filter import find_label_issues

    P = rv.prior[at]
    try:
        with warnings.catch_warnings():
            # a rare class gets fewer flags, which is all the flags can be: said per class, it is noise
            warnings.filterwarnings("ignore", message="May not flag all label issues", category=UserWarning)
            issues = find_label_issues(labels=given, pred_probs=P, filter_by="prune_by_noise_rate")
    except (ValueError, IndexError):  # a class nobody gave: too few rows to say
        return []
    # only where the vote is confident: a row that is merely hard is not a suspect
    confident = P.max(axis=1) >= 0.6
    return at[np.asarray(issues, bool) & confident].tolist()


def measured_rows(store: RunStore, kind: str, weighed: Collection[str]) -> int:
    """Audit rows that reviewer `kind` and a trusted (not weighed) reviewer both answered with a label."""
    audit = store.routed(AUDIT)
    if not audit:
        return 0
    n = 0
    for said in store.answers(audit).values():
        if kind in said and said[kind].label is not None and any(
                rev not in weighed and rev != SENT_ON and a.label is not None for rev, a in said.items()):
            n += 1
    return n


def degenerate_line(kind: str, d: dict[str, Any]) -> str:
    """What `status` and the run say of a reviewer `degenerate_answers` found."""
    return (f"answers {d['label']!r} to {d['share']:.0%} of its {d['rows']} rows, where the specialists give it "
            f"{d['vote_share']:.0%}: it looks broken (a prompt it cannot follow, labels that do not fit, a model too "
            "weak for the task); check a few of its answers (`--details`: annotation_review) before trusting its rows")


class Weigher:
    """The weighing step of a run: `weigh` after each round of review, and the better priors it weighs
    against before the final refit (`cross_fit_priors`) and at the end (`audit_priors`). `weighed` names
    the reviewers whose answers are weighed (`weighed_kinds`); the others are obeyed."""

    def __init__(self, store: RunStore, labels: Sequence[str], weighed: frozenset[str], learn_measured: bool = False):
        self.store = store
        self.labels = list(labels)
        self.weighed = weighed
        self.learn_measured = learn_measured

    def weigh(self) -> Weighing | None:
        """Decide the reviewed rows' labels anew from every answer so far (cheap: reviewed rows only)."""
        return weigh(self.store, self.labels, self.weighed, self.learn_measured) if self.labels else None

    def unmeasured(self) -> frozenset[str]:
        """The weighed reviewers whose accuracy nothing independent has measured (see MIN_MEASURED_ROWS):
        the rows they decide, and an audit they answer, cannot be credited with any accuracy."""
        return frozenset(k for k in self.weighed if measured_rows(self.store, k, self.weighed) < MIN_MEASURED_ROWS)

    def cross_fit_priors(self, scorer: Scorer, trainer: Any, progress: Any) -> None:
        """Before the final refit, when some reviewer's answers are weighed: a better prior for every
        reviewed row than the vote it had when it was picked: the fixed voters' predictions and the
        out-of-fold probabilities of fresh copies of each refitted head (trained on the other reviewed
        rows), averaged. The answers are weighed again against it, so the final refit learns from the
        decided labels. (Fine-tuned transformers are left out: five fits each would cost too much.)"""
        from .specialists import Updatable

        s = self.store
        if not self.weighed or s.is_done(CROSS_FIT_PRIORS):
            return
        audit = set(s.routed(AUDIT))
        answers = {t: r.label for t, r in s.reviews().items() if r.label is not None and t not in audit}
        ids = np.array(sorted(answers), np.int64)
        if len(ids):
            y = [answers[int(t)] for t in ids]
            P, names = scorer.tensor(ids)
            columns = []
            with progress.bar("weighing the reviewers: cross-fitted priors", len(names)) as bar:
                for j, name in enumerate(names):
                    model = scorer.registry.models[name]
                    if not model.trainable:
                        columns.append(P[:, j])
                    elif not isinstance(model, Updatable):
                        oof = trainer.cross_val_proba(name, ids, y)
                        if oof is not None:
                            columns.append(oof)
                    bar.advance()
            if columns:
                stacked = np.stack(columns, axis=1)
                has = ~np.isnan(stacked).any(axis=2)
                mean = np.where(has[..., None], np.nan_to_num(stacked), 0).sum(axis=1)
                mean /= np.maximum(has.sum(axis=1, keepdims=True), 1)
                ok = has.any(axis=1)
                s.put_priors({int(t): mean[i] for i, t in enumerate(ids) if ok[i]}, replace=True)
                self.weigh()
        s.mark_done(CROSS_FIT_PRIORS)

    def audit_priors(self, scorer: Scorer) -> None:
        """The audit rows get the final vote as their prior: out of fold where the final refit also
        learned from the audit (`Scorer.audit_vote`), so no row's prior saw its own answer."""
        audit = np.asarray(self.store.routed(AUDIT), dtype=np.int64)
        if len(audit):
            v = scorer.audit_vote(audit)
            self.store.put_priors({int(t): v.result.posterior[i] for i, t in enumerate(v.ids)
                                   if v.result.label[i] >= 0}, replace=True)
