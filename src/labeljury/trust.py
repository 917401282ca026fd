"""Trust in the labels without gold: calibrated confidence, and the accuracy of the output estimated
from the audit sample, with a 95% interval.

Everything here is arrays in, arrays out; `pipeline.calibrate` gathers them from the run store.

Calibration. `annotation_confidence` of a row labeled by the vote is the probability that its label is
right: Platt scaling of "the vote was right" on the vote's confidence and source (`consensus`, `vote`),
fitted on the audit rows no stage picked: a random sample of exactly the rows the vote labels (each
weighted by (1 - pi)/pi, pi its probability of being drawn), and no stage's version trained on them. With too small an audit it is fitted on the reviewed rows'
cross-fitted votes instead (each voted by versions trained without it): their distribution is that
of the hard rows, so they were measured to calibrate worse (ECE 0.07 against 0.02), and serve only
as a fallback.

Estimate. The audit is a random sample of the texts, each drawn with a known probability pi: by
default favouring the rows the first versions find hard (`sampling`, `review.audit_sampling: hard`),
else uniform. It competes for hardness in every stage like any row but is never asked again, so the
audit rows no stage picked, each counted (1 - pi)/pi times, stand for the rows left unreviewed. On those rows,
prediction-powered inference (Angelopoulos et al., 2023; with unequal probabilities, active statistical
inference, Zrnic & Candes 2024) corrects the calibrated confidences' sum by their mean error on the
audit, with cross-fitted calibrators so the correction is unbiased:

    correct rows of a group G  =  known-correct rows of G (reviewed, audited)
                                + sum over G's unreviewed rows of c^
                                + (G's unreviewed rows) * (1 - pi)/pi-weighted mean over G's unpicked audit rows of (c - c^)

with rows also weighted by how often their text occurs, and a normal interval from the correction's
standard error (the Hajek ratio's linearised variance). A hard row is where the vote is most often
wrong, so drawing it more often both fixes more labels and measures the correction where it varies
most; the uniform part of each probability bounds every weight (`sampling`). The calibrated confidences only narrow the interval: biased ones are corrected.
Reviewed rows count as right: the estimate is against the reviewer that answered the audit, except
where that reviewer's answers are weighed (an LLM, often wrong). Then "the vote agreed with its
answer" is not "the vote was right", and both steps correct for its confusion matrix C[true, answer]
(`weighing`): the calibrator is fitted by EM on the agreement, P(agree) = p C[l, l] + (1 - p) b_l
(b_l: how often it answers l when l is wrong), and the estimate's correction uses C^-1[answer, l],
whose expectation over the reviewer's noise is exactly "l is right" (Natarajan et al., 2013), so the
estimate stays unbiased given C. The rows such a reviewer decided count as right with their belief.

What is not measured is not credited. A weighed reviewer's C is estimated from its agreement with a vote
that learned from it, which is not evidence of accuracy: unless a trusted reviewer also answered enough
audit rows it answered (`weighing.MIN_MEASURED_ROWS`), its accuracy is unmeasured. Then the audit rows it
answered are no yardstick (with no others the run says the accuracy cannot be estimated, and why), and
the rows it decided count anywhere from all wrong to all right in the interval (`Sums.unmeasured`): wider,
and honest. The point estimate still reads their belief.

What is measured is credited with what measured it. In a cascade whose last reviewer is trusted, a weighed
reviewer also answers, blind, the audit rows a stage would have sent it (`ReviewDesk.ask_blind`): a random
sample of the rows it decides (each weighted (1 - pi)/pi), each with a trusted answer. The rows it decided are credited with the
share of those rows whose weighed label (decided by a confusion matrix fitted without that row's truth)
is right, and that share's Wilson interval joins the audit's in quadrature (`Blind`, `Sums.measured`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, astuple, dataclass, replace
from typing import Any

import numpy as np

from .sources import CONSENSUS, UNREVIEWED
from .stats import Z95, wilson_interval

MIN_POINTS = 30  # an audit with fewer unpicked rows calibrates on the cross-fitted reviewed rows
MIN_AUDIT = 10  # a group with fewer unpicked audit rows gets a plain (Wilson) interval, or none


# -- calibration -------------------------------------------------------------------------------------
GROUPS = UNREVIEWED


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Calibrator:
    """Platt scaling of a vote's confidence, with the source as a second feature:
    P(right) = sigmoid(a * logit(confidence) + b * [source is consensus] + c). Two sources, three
    numbers: a few hundred audit rows fit it without the jitter of an isotonic step function
    (measured: ECE 0.02 against 0.04 on financial-sentiment)."""

    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    points: int = 0

    def __call__(self, confidence: np.ndarray, group: np.ndarray) -> np.ndarray:
        z = self.a * _logit(confidence) + self.b * (np.asarray(group) == CONSENSUS) + self.c
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibrator:
        return cls(**d)


IDENTITY = Calibrator()  # the raw confidence: what a run without an audit keeps


NOISY_EM_ITERATIONS = 100


@dataclass(frozen=True)
class ReferenceNoise:
    """How a noisy reference (a weighed reviewer's answers to the audit) relates to the truth, per
    audit row: P(it answers the row's label | the label is right) and (| it is wrong)."""

    agree_if_right: np.ndarray
    agree_if_wrong: np.ndarray

    def take(self, mask: np.ndarray) -> ReferenceNoise:
        return ReferenceNoise(self.agree_if_right[mask], self.agree_if_wrong[mask])


def _platt(X: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None) -> Calibrator:
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=10.0).fit(X, y, sample_weight=weight)
    return Calibrator(float(m.coef_[0, 0]), float(m.coef_[0, 1]), float(m.intercept_[0]), len(X) if weight is None
                      else len(X) // 2)


def fit_calibrator(confidence: np.ndarray, correct: np.ndarray, group: np.ndarray,
                   noise: ReferenceNoise | None = None, weight: np.ndarray | None = None) -> Calibrator:
    """Logistic regression of `correct` (0/1) on [logit(confidence), source is consensus]; lightly
    regularised so a small or one-sided sample stays near the identity. With `noise`, `correct` is
    agreement with a noisy reference, and the fit is EM over whether each row was really right.
    `weight`: each row's (an audit drawn with unequal probabilities: (1 - pi)/pi), so that the fit is the one
    over the rows the audit stands for."""
    y = np.asarray(correct, dtype=np.float64)
    w = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=np.float64) / np.mean(weight)
    if len(y) < 2 or y.min() == y.max():
        p = (y.sum() + 0.5) / (len(y) + 1)  # all right (or all wrong): a constant, short of certainty
        return Calibrator(0.0, 0.0, float(np.log(p / (1 - p))), len(y))
    X = np.c_[_logit(confidence), np.asarray(group) == CONSENSUS]
    cal = _platt(X, y, None if weight is None else w)
    if weight is not None:
        cal = replace(cal, points=len(y))
    if noise is None:
        return cal
    a = np.clip(noise.agree_if_right, 1e-3, 1.0)
    b = np.clip(noise.agree_if_wrong, 0.0, a - 1e-3)
    XX, yy = np.r_[X, X], np.r_[np.ones(len(y)), np.zeros(len(y))]
    for _ in range(NOISY_EM_ITERATIONS):
        p = cal(confidence, group)
        # P(right | agreed or not, p): what each row says about its own label once the reference's noise is known
        right = np.where(y == 1, p * a / (p * a + (1 - p) * b),
                         p * (1 - a) / np.maximum(p * (1 - a) + (1 - p) * (1 - b), 1e-12))
        new = replace(_platt(XX, yy, np.r_[w * right, w * (1 - right)]), points=len(y))
        done = max(abs(new.a - cal.a), abs(new.b - cal.b), abs(new.c - cal.c)) < 1e-5
        cal = new
        if done:
            break
    return cal


def cross_fitted(confidence: np.ndarray, correct: np.ndarray, group: np.ndarray, folds: np.ndarray,
                 noise: ReferenceNoise | None = None, weight: np.ndarray | None = None) -> np.ndarray:
    """Each point's calibrated confidence by a calibrator fitted without its fold: what the
    estimate's correction needs to stay unbiased."""
    out = np.zeros(len(confidence))
    for f in np.unique(folds):
        train = folds != f
        out[~train] = fit_calibrator(confidence[train], correct[train], group[train],
                                     None if noise is None else noise.take(train),
                                     None if weight is None else weight[train])(confidence[~train], group[~train])
    return out


def unbiased_correct(agreed_label: np.ndarray, answer: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """For rows whose label is `agreed_label` (-1: no label) and whose noisy reference answered
    `answer`, C^-1[answer, label]: a value whose mean over the reference's noise is 1 where the label
    is right and 0 where it is wrong (C[true, answer] the reference's confusion matrix)."""
    inv = np.linalg.inv(np.asarray(confusion, dtype=np.float64))
    out = inv[answer, np.maximum(agreed_label, 0)]
    return np.where(agreed_label >= 0, out, 0.0)


def accuracy_against(pred: np.ndarray, answer: np.ndarray,
                     noisy: Sequence[tuple[np.ndarray, np.ndarray]] = (), weight: np.ndarray | None = None) -> float:
    """The share of `pred` that is right, measured against the reviewers' `answer`s: where a mask of
    `noisy` says a weighed reviewer with confusion matrix C gave the answer, by C^-1 (unbiased given
    C) instead of by agreement; clipped to [0, 1]. `weight`: each row's (audit rows: (1 - pi)/pi)."""
    pred, answer = np.asarray(pred), np.asarray(answer)
    if not len(pred):
        return float("nan")
    value = (pred == answer).astype(np.float64)
    for mask, C in noisy:
        value[mask] = unbiased_correct(pred[mask], answer[mask], C)
    return float(np.clip(np.average(value, weights=weight), 0.0, 1.0))


def reference_noise(label: np.ndarray, confusion: np.ndarray, prior: np.ndarray) -> ReferenceNoise:
    """Per row with label l: P(answer l | l right) = C[l, l], and P(answer l | l wrong), the other
    classes weighted by their `prior` share."""
    C = np.asarray(confusion, dtype=np.float64)
    k = len(C)
    lab = np.maximum(np.asarray(label), 0)
    right = C[lab, lab]
    others = np.tile(np.asarray(prior, dtype=np.float64), (len(lab), 1))
    others[np.arange(len(lab)), lab] = 0.0
    others /= np.maximum(others.sum(axis=1, keepdims=True), 1e-12)
    wrong = (others * C[:, lab].T).sum(axis=1) if k > 1 else np.zeros(len(lab))
    return ReferenceNoise(right, wrong)


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: the |accuracy - confidence| of equal-width confidence bins,
    weighted by their share of rows."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    if not len(c):
        return float("nan")
    idx = np.minimum((c * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(y[m].mean() - c[m].mean())
    return float(total / len(c))


class CalibrationBins:
    """`ece` over rows that come in batches: per equal-width bin, the rows, their summed confidence
    and their summed correctness (the same number as `ece` on all rows at once, in O(bins) memory)."""

    def __init__(self, bins: int = 15):
        self.bins = bins
        self.rows = np.zeros(bins)
        self.confidence = np.zeros(bins)
        self.correct = np.zeros(bins)

    def add(self, confidence: np.ndarray, correct: np.ndarray) -> None:
        c = np.asarray(confidence, dtype=np.float64)
        idx = np.minimum((c * self.bins).astype(int), self.bins - 1)
        self.rows += np.bincount(idx, minlength=self.bins)
        self.confidence += np.bincount(idx, c, self.bins)
        self.correct += np.bincount(idx, np.asarray(correct, dtype=np.float64), self.bins)

    def reliability(self) -> list[dict[str, float]]:
        """What `reliability` gives for the same rows and bins."""
        b = self.bins
        return [{"low": i / b, "high": (i + 1) / b, "confidence": float(self.confidence[i] / self.rows[i]),
                 "accuracy": float(np.clip(self.correct[i] / self.rows[i], 0, 1)), "rows": int(self.rows[i])}
                for i in range(b) if self.rows[i]]

    def ece(self) -> float:
        total = self.rows.sum()
        if not total:
            return float("nan")
        has = self.rows > 0
        gap = np.abs(self.correct[has] / self.rows[has] - self.confidence[has] / self.rows[has])
        return float((self.rows[has] * gap).sum() / total)


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 10,
                weight: np.ndarray | None = None) -> list[dict[str, float]]:
    """Per confidence bin: mean confidence, accuracy, rows (for a reliability diagram). `correct` may
    be a noise-corrected value (its mean estimates the accuracy; clipped to [0, 1] for display);
    `weight`: each row's in the means (an audit drawn with unequal probabilities: (1 - pi)/pi)."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=np.float64)
    w = np.ones(len(c)) if weight is None else np.asarray(weight, dtype=np.float64)
    idx = np.minimum((c * bins).astype(int), bins - 1)
    return [{"low": b / bins, "high": (b + 1) / bins, "confidence": float(np.average(c[idx == b], weights=w[idx == b])),
             "accuracy": float(np.clip(np.average(y[idx == b], weights=w[idx == b]), 0, 1)), "rows": int((idx == b).sum())}
            for b in range(bins) if (idx == b).any()]


# -- the estimate ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    """Estimated accuracy of a group of output rows, with its 95% interval (None: not estimable)."""

    accuracy: float | None
    low: float | None
    high: float | None
    rows: int  # output rows in the group
    audit_rows: int  # unpicked audit rows that measured it
    method: str  # "ppi", "wilson", "exact" (every row known), "model" (no audit row: calibration only)
    unmeasured_rows: int = 0  # rows decided by a reviewer whose accuracy is unmeasured: bounded, not credited
    blind_rows: int = 0  # audit rows a weighed reviewer answered blind that measured the rows it decided

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Audit:
    """The audit texts no stage picked, as they would have come out: their `weight` (rows holding
    each), their vote's `source` and `label`, cross-fitted `calibrated` confidence, and `correct` (the
    vote was right: 0/1, or its noise-corrected value where a weighed reviewer answered)."""

    weight: np.ndarray
    calibrated: np.ndarray
    correct: np.ndarray
    source: np.ndarray
    label: np.ndarray


@dataclass
class Blind:
    """The audit rows a weighed reviewer answered blind beside a trusted one (`weighing`): for each, the
    label the weighing decides from its answer (`label`), the source that row would have (`source`:
    reviewed:<it>, or vote:over-<it>) and whether that label is right (`correct`, 0/1). They are a
    uniform sample of the rows a stage sent that reviewer, so they measure the rows it decided."""

    label: np.ndarray
    source: np.ndarray
    correct: np.ndarray
    weight: np.ndarray | None = None  # each row's ((1 - pi)/pi: `sampling`); None: equal


@dataclass(frozen=True)
class Sums:
    """What the estimate needs of a group of output texts: `rows` (their weight: rows holding them),
    `known_right` (the weight of the known ones, times the belief that each is right), `unknown` (the
    weight of the others), `unknown_calibrated` (their weight times c^); `unmeasured` (the weight of the
    known ones decided by a reviewer whose accuracy is unmeasured) and `unmeasured_right` (their weight
    times their belief: part of `known_right`); `measured` and `measured_right`, the same of the known
    ones decided by a weighed reviewer measured on blind audit answers (`Blind`)."""

    rows: float = 0.0
    known_right: float = 0.0
    unknown: float = 0.0
    unknown_calibrated: float = 0.0
    unmeasured: float = 0.0
    unmeasured_right: float = 0.0
    measured: float = 0.0
    measured_right: float = 0.0

    def __add__(self, other: Sums) -> Sums:
        return Sums(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))


class Tally:
    """The output's `Sums` per (source, label), added a batch of texts at a time: the estimate of a
    whole run without holding its rows."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str | None], Sums] = {}

    def add(self, weight: np.ndarray, known: np.ndarray, calibrated: np.ndarray, source: Sequence[str],
            label: Sequence[str | None], known_right: np.ndarray | None = None,
            unmeasured: np.ndarray | None = None, measured: np.ndarray | None = None) -> None:
        """Texts with `weight` (rows holding each), `known` (its label is known: reviewed or audited;
        right with probability `known_right`, 1 by default; `unmeasured`: a known one whose reviewer's
        accuracy is unmeasured), `calibrated` c^ (read where not known), their `source` and `label`
        (None: no label)."""
        w = np.asarray(weight, dtype=np.float64)
        if not len(w):
            return
        known = np.asarray(known, bool)
        right = np.ones(len(w)) if known_right is None else np.asarray(known_right, dtype=np.float64)
        keys = [(s, lab) for s, lab in zip(source, label, strict=True)]
        index: dict[tuple[str, str | None], int] = {}
        group = np.array([index.setdefault(key, len(index)) for key in keys], np.int64)
        g = len(index)
        cal = np.asarray(calibrated, dtype=np.float64)
        um = known & (np.zeros(len(w), bool) if unmeasured is None else np.asarray(unmeasured, bool))
        ms = known & ~um & (np.zeros(len(w), bool) if measured is None else np.asarray(measured, bool))
        sums = np.stack([np.bincount(group, w, g), np.bincount(group, np.where(known, w * right, 0.0), g),
                         np.bincount(group, np.where(known, 0.0, w), g),
                         np.bincount(group, np.where(known, 0.0, w * cal), g),
                         np.bincount(group, np.where(um, w, 0.0), g),
                         np.bincount(group, np.where(um, w * right, 0.0), g),
                         np.bincount(group, np.where(ms, w, 0.0), g),
                         np.bincount(group, np.where(ms, w * right, 0.0), g)], axis=1)
        for key, i in index.items():
            self.groups[key] = self.groups.get(key, Sums()) + Sums(*(float(x) for x in sums[i]))

    def sums(self, source: str | None = None, label: str | None = None) -> Sums:
        """The sums over every text, or those of one `source`, or of one `label`."""
        out = Sums()
        for (s, lab), v in self.groups.items():
            if (source is None or s == source) and (label is None or lab == label):
                out = out + v
        return out

    @property
    def sources(self) -> list[str]:
        return sorted({s for s, _ in self.groups})


def estimate(sums: Sums, audit: Audit, rows: np.ndarray | None = None, blind: Blind | None = None,
             blind_rows: np.ndarray | None = None) -> Estimate:
    """The estimate over a group of texts with `sums`, measured on the audit texts `rows` (a mask
    over the unpicked audit texts: those that would have fallen in the group; all by default). The rows
    a reviewer of unmeasured accuracy decided widen the interval to what they could be: all wrong at its
    low end, all right at its high end. The rows a weighed reviewer decided whose blind answers measured
    it are credited with the share right among the `blind_rows` (a mask over `blind`) that fall in the
    group, with its Wilson interval added in quadrature (two independent samples); with fewer than
    MIN_AUDIT of them they are bounded like unmeasured rows."""
    if sums.measured:
        sel = (np.ones(len(blind.correct), bool) if blind_rows is None else blind_rows) if blind is not None else None
        n = 0 if sel is None else int(sel.sum())
        if n < MIN_AUDIT:  # too few blind answers in this group to measure it: bounded, not credited
            sums = replace(sums, unmeasured=sums.unmeasured + sums.measured, measured=0.0, measured_right=0.0,
                           unmeasured_right=sums.unmeasured_right + sums.measured_right)
        else:
            assert blind is not None and sel is not None
            return _with_blind(sums, audit, rows, blind.correct[sel], None if blind.weight is None else blind.weight[sel])
    est = _estimate(sums, audit, rows)
    if not sums.unmeasured or est.accuracy is None or est.low is None or est.high is None:
        return est if not sums.unmeasured else Estimate(est.accuracy, est.low, est.high, est.rows, est.audit_rows,
                                                        est.method, int(round(sums.unmeasured)))
    total = sums.rows
    low, high = est.low, est.high
    low, high = np.clip([low - sums.unmeasured_right / total, high + (sums.unmeasured - sums.unmeasured_right) / total],
                        0, 1)
    return Estimate(est.accuracy, float(low), float(high), est.rows, est.audit_rows, est.method + "+bounds",
                    int(round(sums.unmeasured)))


def _with_blind(sums: Sums, audit: Audit, rows: np.ndarray | None, correct: np.ndarray,
                weight: np.ndarray | None = None) -> Estimate:
    """`estimate` with the measured reviewer's rows credited with the (weighted) share right of `correct`."""
    base = replace(sums, known_right=sums.known_right - sums.measured_right, measured=0.0, measured_right=0.0)
    est = estimate(base, audit, rows)  # its rows counted as wrong here; their share right added below
    n = len(correct)
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
    p = float(np.average(correct, weights=w))
    lo, hi = wilson_interval(p, max(1, int(w.sum() ** 2 / (w**2).sum())))  # Kish's effective sample size
    share = sums.measured / sums.rows
    acc = None if est.accuracy is None else est.accuracy + share * p
    low = high = None
    if est.low is not None and est.high is not None and acc is not None:
        assert est.accuracy is not None
        low = acc - float(np.hypot(est.accuracy - est.low, share * (p - lo)))
        high = acc + float(np.hypot(est.high - est.accuracy, share * (hi - p)))
        low, high = (float(x) for x in np.clip([low, high], 0, 1))
    return Estimate(None if acc is None else float(np.clip(acc, 0, 1)), low, high, est.rows, est.audit_rows,
                    est.method + "+blind", est.unmeasured_rows, n)


def _residual_variance(d: np.ndarray, calibrated: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """The spread of the audit's residuals (correct - c^): (the variance of one row's residual, the audit's
    effective size), both with one pseudo-row right and one wrong at their mean c^ (Agresti-Coull's plus-two,
    for the variance only): an audit that happens to hold no mistake must not make the interval vanish (30
    rows all right, the vote 99.5% sure, say nothing of a 97% truth; without them the interval covered it
    26-59% of the time). The variance of the weighted mean residual is their ratio."""
    mw = float(w.mean())
    c = float(np.average(calibrated, weights=w))
    dd = np.r_[d, 1.0 - c, -c]
    ww = np.r_[w, mw, mw]
    r = float((ww * dd).sum() / ww.sum())
    n = len(dd)
    var_mean = float((ww**2 * (dd - r) ** 2).sum() / ww.sum() ** 2) * n / (n - 1)
    size = float(ww.sum() ** 2 / (ww**2).sum())  # Kish's effective sample size of unequal weights
    return var_mean * size, size


def _t95(df: float) -> float:
    """The Student t quantile of a two-sided 95% interval on `df` degrees of freedom (the normal's beyond 1e6)."""
    from scipy.stats import t

    return Z95 if df > 1e6 else float(t.ppf(0.975, max(df, 1.0)))


def _estimate(sums: Sums, audit: Audit, rows: np.ndarray | None = None) -> Estimate:
    asel = np.ones(len(audit.weight), bool) if rows is None else rows
    total = sums.rows
    n_rows = int(round(total))
    if total == 0:
        return Estimate(None, None, None, 0, 0, "none")
    k, w_u, s_u = sums.known_right, sums.unknown, sums.unknown_calibrated
    if w_u == 0:
        return Estimate(k / total, k / total, k / total, n_rows, 0, "exact")
    aw = audit.weight[asel].astype(np.float64)
    n = int(asel.sum())
    if n == 0:
        return Estimate((k + s_u) / total, None, None, n_rows, 0, "model")
    if n >= MIN_AUDIT:
        d = audit.correct[asel] - audit.calibrated[asel]
        r = float((aw * d).sum() / aw.sum())
        per_row, size = _residual_variance(d, audit.calibrated[asel], aw)
        acc = (k + s_u + w_u * r) / total
        # the truth is the accuracy of these very rows, not of the population they come from: the rows left
        # unreviewed carry their own residuals, so the error is the audit's mean residual minus theirs, of
        # variance S^2 (1/n_audit + 1/n_unreviewed) (a sample against its complement, drawn without replacement)
        var = per_row * (1.0 / size + 1.0 / w_u)
        half = _t95(size - 1) * w_u * np.sqrt(var) / total
        # both ends clipped into [0, 1]: a correction that overshoots 1 must not leave low above high
        low, high = np.clip([acc - half, acc + half], 0, 1)
        return Estimate(float(np.clip(acc, 0, 1)), float(low), float(high), n_rows, n, "ppi")
    # a handful of audit rows: the plain share right among them, with its Wilson interval
    p = float(np.clip((aw * audit.correct[asel]).sum() / aw.sum(), 0, 1))
    lo, hi = wilson_interval(p, n)
    return Estimate((k + w_u * p) / total, (k + w_u * lo) / total, (k + w_u * hi) / total, n_rows, n, "wilson")


def unmeasured_note(unmeasured: dict[str, int], estimated: float | None, rows: int) -> str | None:
    """Why the estimate is missing, or its interval wide, because the weighed reviewers in `unmeasured`
    ({reviewer: audit rows it answered}) have no measured accuracy, and what would measure it; None when
    nothing rests on such a reviewer. `rows`: the output rows they decided."""
    audited = sorted(k for k, n in unmeasured.items() if n)
    if estimated is None:
        if not audited:
            return None
        who = ", ".join(audited)
        n = sum(unmeasured[k] for k in audited)
        # what people answering those rows would buy: the worst case of a share's interval on n rows
        buys = Z95 * np.sqrt(0.25 / n) * 100
        return (f"cannot be estimated: every audit row was answered by {who}, whose accuracy nothing independent "
                f"has measured (its agreement with specialists that learned from it is not evidence); to measure "
                f"it, let people answer the audit: put {{kind: human}} (or gold) after {who} in `reviewer:` and "
                f"rerun (the audit goes to the last reviewer), then answer its {n} rows with `labeljury review`: "
                f"they measure the rows the vote labeled to within ±{buys:.1f} points at worst, and {who}'s own "
                f"rows by its blind answers to those of them a stage sends it")
    if not rows:
        return None
    if not unmeasured:  # only rows an earlier run's weighed reviewer decided, reused (`--from`)
        return (f"the {rows} rows whose label an earlier run's weighed reviewer gave (source earlier:<reviewer>) "
                "count anywhere from all wrong to all right in the interval: nothing in this run measured that reviewer")
    who = ", ".join(sorted(unmeasured))
    return (f"the {rows} rows {who} decided count anywhere from all wrong to all right in the interval, since "
            f"its accuracy is unmeasured: nothing independent checked a random sample of its answers")


def estimates(tally: Tally, audit: Audit, labels: Sequence[str], blind: Blind | None = None) -> dict[str, Any]:
    """Overall, per source and per class (the output label)."""
    return {
        "overall": estimate(tally.sums(), audit, blind=blind).to_dict(),
        "by_source": {src: estimate(tally.sums(source=src), audit, audit.source == src, blind,
                                    None if blind is None else blind.source == src).to_dict()
                      for src in tally.sources},
        "by_class": {lab: estimate(tally.sums(label=lab), audit, audit.label == lab, blind,
                                   None if blind is None else blind.label == lab).to_dict() for lab in labels},
    }


def audit_line(b: dict[str, Any]) -> str:
    """One line on what the audit cost and bought (`pipeline.finalize`)."""
    how = "drawn favouring hard rows" if b["sampling"] == "hard" else "drawn uniformly"
    interval = "" if b.get("half_width") is None else f"; it measures the labels to within ±{100 * b['half_width']:.1f} points"
    picked = f", {b['picked']} of them rows a stage then picked as hard" if b.get("picked") else ""
    head = f"the audit took {b['rows']} of the {b['reviews']} reviews ({b['rows'] / max(b['reviews'], 1):.0%}), {how}{picked}"
    if b.get("unmeasured"):  # answered, at least in part, by a reviewer nothing measured
        by = ", ".join(b["unmeasured"])
        fixed = f"; a trusted reviewer's answers fixed {b['fixed']} labels the vote got wrong" if b["fixed"] else ""
        return (f"{head}: answered by {by}, whose accuracy nothing measured, they changed {b['changed']} labels of the "
                f"vote ({b['changed'] / b['rows']:.0%} of them), for the better or not{fixed}{interval}")
    return (f"{head}: their answers fixed {b['fixed']} labels the vote got wrong ({b['fixed'] / b['rows']:.0%} "
            f"of them){interval}{audit_price(b)}")


def audit_price(b: dict[str, Any]) -> str:
    """What the audit cost in labels: reviews of the rows the stages picked as hard fixed a label at their own
    rate; the audit's, at a lower one. The difference, at the hard rows' rate, is the accuracy the interval cost
    (measured: it accounts for the whole gap to a run without an audit, BENCHMARKS.md section 21)."""
    if not b.get("hard_rows") or not b.get("rows_labeled"):
        return ""
    rate = b["hard_fixed"] / b["hard_rows"]
    fewer = b["rows"] * rate - b["fixed"]
    if fewer <= 0:
        return ""
    return (f"; a review of a row a stage picked fixed a label {rate:.0%} of the time, so as many hard rows would "
            f"have fixed about {fewer:.0f} more labels ({100 * fewer / b['rows_labeled']:.1f} points of accuracy): "
            "the price of the estimate; `review.audit` sets the audit's size (a smaller one costs less and "
            "measures less precisely)")
