"""Weighing a reviewer that is often wrong: its answer is one more vote, with a confusion matrix.

An LLM reviewer is right on about 65-75% of hard rows (the paper's own GPT-3.5 numbers); obeying it
makes every fourth reviewed label wrong and teaches the specialists those mistakes. For each reviewer
whose answers are weighed (by default `llm`; `gold`, `file`, `human` and `label-studio` are obeyed), the
decided label of a row it answered is the posterior

    P(y | answer, vote) ~ prior(y) * C[y, answer]

where `prior` is the vote's distribution taken before the row was reviewed (by specialists that had not
learned from it: `RunStore.priors`) and C the reviewer's confusion matrix, P(answer | true label). C is
estimated by expectation-maximisation over every row the reviewer answered (Dawid-Skene with the vote
as the other annotator), with the rows a trusted reviewer also answered (a cascade's people, the audit)
entering as known truth, and a Dirichlet prior toward DEFAULT_ACCURACY so that a few rows cannot make
it perfect or useless. What the specialists learn from is set by TRAIN_ON / TRAIN_BELIEF (see there:
pruning and relabeling were measured, and lost).

Separately, every reviewed row whose label the prior contradicts with confidence is flagged for a
second look, by cleanlab's label-issue finder (`find_label_issues`) on those out-of-sample priors.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..store import RunStore
from .desk import SENT_ON, reviewer_of

WEIGHED_BY_DEFAULT = frozenset({"llm"})
DEFAULT_ACCURACY = 0.7  # the prior belief in a weighed reviewer before its answers say otherwise
PRIOR_STRENGTH = 10.0  # ... worth this many rows per class
PRIOR_MIX = 0.1  # the vote is not calibrated: its distribution is mixed with uniform before use
# What the specialists learn from a weighed reviewer's rows: its own answer ("answer"), or the decided
# label ("decided"); rows whose label to learn from is believed less than TRAIN_BELIEF are left out.
# Measured (BENCHMARKS.md, section 7), financial-sentiment, 26% to a 73%-right reviewer: learning from
# the decided labels and leaving out those under 0.5 gave 77.9% overall, the answers without those
# under 0.2 78.4%, the answers, all of them, 79.8%. Uniform noise leaves the most likely label of a
# logistic regression where it was; relabeling by the vote feeds the vote's own mistakes back into it.
TRAIN_ON = "answer"
TRAIN_BELIEF = 0.0
# With TRAIN_WEIGHTS each row learned from a weighed reviewer counts as much as it is believed (its
# stored weight: the posterior that the label trained on is right). Measured (BENCHMARKS.md, section
# 7), 26% to a reviewer at GPT-3.5's accuracy, against every answer counted once: financial +0.12
# (uniform noise) / -0.19 (hard), tweets -0.68 / -0.29 points. Down-weighting the answers the vote
# doubts is again a way of feeding the vote's own mistakes back into it: off by default.
TRAIN_WEIGHTS = False
FLAG_MIN_ROWS = 30  # fewer reviewed rows with a prior than this: no flags (cleanlab needs counts)
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
    untrained: int = 0
    flagged: int = 0

    def to_meta(self) -> dict[str, Any]:
        return {"accuracy": {k: round(v, 4) for k, v in self.accuracy.items()}, "confusion": self.confusion,
                "rows": self.rows, "checked": self.checked, "overruled": int(self.overruled),
                "untrained": int(self.untrained), "flagged": int(self.flagged)}


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
    reviews = store.reviews_of(ids)
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
    cursor = store.conn.execute("SELECT text_id, label, source, confidence FROM reviews WHERE pending=0 "
                                "ORDER BY text_id")
    while batch := cursor.fetchmany(50_000):  # in batches, kept as arrays
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
    cursor = store.conn.execute("SELECT text_id, probs FROM priors ORDER BY text_id")
    while stored := cursor.fetchmany(50_000):  # in batches: memory is a batch of JSON, not all of it
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


def weigh(store: RunStore, labels: Sequence[str], weighed: Collection[str]) -> Weighing:
    """Decide every reviewed row's label (see the module doc) and store the verdicts."""
    labels = list(labels)
    k = len(labels)
    index = {lab: i for i, lab in enumerate(labels)}
    rv = _reviewed(store, labels)
    # every reviewer's answer to the rows more than one answered (a cascade's later reviewers, a second look)
    answers = store.answers_of_rows_answered_twice() if weighed else {}
    out = Weighing()
    verdicts: dict[int, list[Any]] = {}  # text id -> [label, belief, answer, flagged, train, weight]
    for kind in sorted(weighed):
        at = np.flatnonzero(rv.kind == kind)
        if not len(at):
            continue
        # rows it decided, then flagged and sent on to a trusted reviewer who decided them (a second
        # look), are known truth for its confusion: which rows are sent on depends only on what is
        # observed (its answer and the prior), so the estimate stays unbiased. Their label is the
        # trusted one: no verdict is kept for them.
        checked = []
        for t, said in answers.items():
            i = rv.at(t) if SENT_ON in said else None
            if i is not None and rv.kind[i] not in weighed and said.get(kind, {}).get("label") in index:
                checked.append(i)
        decided_here = len(at)
        rows = np.concatenate([at, np.array(checked, dtype=np.int64)])
        truth = np.full(len(rows), -1)
        for r, i in enumerate(rows.tolist()):  # a trusted reviewer's answer to the same row is the truth
            t = int(rv.ids[i])
            trusted = [rv.label[i]] if r >= decided_here else [
                a["label"] for rev, a in answers.get(t, {}).items()
                if rev != kind and rev not in weighed and a["label"] in index]
            if trusted:
                truth[r] = index[trusted[0]]
        ans = np.array([rv.answer[i] if r < decided_here else index[answers[int(rv.ids[i])][kind]["label"]]
                        for r, i in enumerate(rows.tolist())], dtype=np.int64)
        C, q = fit_confusion(rv.prior[rows], ans, truth, k)
        out.confusion[kind] = [[round(float(x), 4) for x in row] for row in C]
        # its accuracy on the rows it answered: the mean posterior that its answer is right
        out.accuracy[kind] = float(q[np.arange(len(rows)), ans].mean())
        out.rows[kind], out.checked[kind] = len(rows), int((truth >= 0).sum())
        for r, i in enumerate(at.tolist()):
            decided = int(q[r].argmax())
            belief = float(q[r, decided])
            trained = ans[r] if TRAIN_ON == "answer" else decided
            keep = q[r, trained] >= TRAIN_BELIEF
            train = labels[trained] if keep else None
            weight = float(q[r, trained])  # kept whether or not training uses it
            verdicts[int(rv.ids[i])] = [labels[decided], belief, rv.label[i], False, train, weight]
            out.overruled += int(decided != ans[r])
            out.untrained += int(not keep)
    for i in _label_issues(rv):
        t = int(rv.ids[i])
        if SENT_ON in answers.get(t, {}) and rv.kind[i] not in weighed:
            continue  # flagged before, and a trusted reviewer has had the second look
        # an obeyed reviewer's row keeps its label (no answer recorded: nothing was weighed)
        conf = rv.confidence[i]
        verdicts.setdefault(t, [rv.label[i], 1.0 if np.isnan(conf) else float(conf), None, False, rv.label[i], 1.0])
        verdicts[t][3] = True
        out.flagged += 1
    store.put_verdicts((t, *v) for t, v in sorted(verdicts.items()))
    store.set_meta("weighing", out.to_meta())
    return out


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
        issues = find_label_issues(labels=given, pred_probs=P, filter_by="prune_by_noise_rate")
    except (ValueError, IndexError):  # a class nobody gave: too few rows to say
        return []
    # only where the vote is confident: a row that is merely hard is not a suspect
    confident = P.max(axis=1) >= 0.6
    return at[np.asarray(issues, bool) & confident].tolist()
