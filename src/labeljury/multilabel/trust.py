"""Trust in a multi-label run's output: confidences calibrated on the audit, and an estimate of the output's
micro-F1 and exact-set accuracy with a 95% interval.

The audit is a uniform sample of the texts. Every row a stage ranks, audit rows included, is scored by heads
that did not learn from it (`run.SetAnnotator._route_stage`), so the audit rows no stage picks are a uniform
sample of the rows the vote labels: what makes them a fair measure of those rows. They are predicted by heads
trained on everything but their part of the audit (4/5 of it): the output's heads learned from all of it, so
what is measured here errs low by what the last part teaches.

- `Calibration`: two maps fitted on those audit rows: an isotonic one for a label's probability (every
  (row, label) pair pooled: a predicted 0.8 for a label is right 80% of the time, over the labels), and a
  logistic curve for the row's set probability (the chance the whole set is right). Per-label maps would need
  positives of every label in the audit; most labels of a 100-label task have none there.
- `estimate`: the output's micro-F1 (over all its rows: reviewed ones count as their reviewer's sets,
  taken as right) and exact-set accuracy. Each is a ratio of totals; the unreviewed rows' totals are
  estimated from the audit rows' mean counts, and the interval is the ratio's linearised standard error
  with both sources of chance (which rows the audit drew, and the luck of the rows left unreviewed:
  1/n_audit + 1/n_rest), Student's t on n_audit - 1 degrees of freedom. In a cascade (an LLM, then a trusted
  reviewer) the rows the LLM decided are not taken as right: they count as often right as its sets were on the
  audit rows a stage would have picked, which it answered as it answers a hard row (`Settled`); that second
  sample's chance widens the interval, and the smaller sample sets the degrees of freedom.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ESTIMATE = "set_estimate"  # the run store's meta key: the estimates, the calibration, what they rest on
MIN_AUDIT = 30  # fewer audit rows than this measure nothing: no calibration, no estimate
MIN_SETTLED = 10  # audit rows that measure the rows an LLM decided (first in a cascade): fewer, no estimate


@dataclass(frozen=True)
class Settled:
    """The rows an untrusted reviewer decided (an LLM, first in a cascade) and the audit rows that measure it:
    audit rows a stage would have picked (a uniform sample of the rows it sends on), which the LLM answered as
    it answers a hard row, settled (its confidence high enough), and the trusted reviewer answered too."""

    T: np.ndarray  # (m, labels) the trusted reviewer's sets of the measuring rows
    L: np.ndarray  # (m, labels) the LLM's sets of them
    weights: np.ndarray  # (m,) their input-row counts
    texts: int  # the texts the LLM decided
    rows: int  # their input rows
    reviewer: str = "llm"


@dataclass(frozen=True)
class Estimate:
    """One metric of the output, estimated on `audit_rows` audit rows: `value` in [`low`, `high`] (95%)."""

    metric: str
    value: float
    low: float
    high: float
    audit_rows: int
    unreviewed_rows: int
    reviewed_rows: int
    settled_rows: int = 0  # of the reviewed rows, those the LLM decided: counted at its measured agreement
    settled_measured: int = 0  # the audit rows that measured it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        return f"{self.metric.replace('_', ' ')} {self.detail()}"

    def detail(self) -> str:
        if not self.settled_rows:
            reviewed = f"the {self.reviewed_rows} reviewed rows count as right"
        else:
            reviewed = (f"the {self.reviewed_rows - self.settled_rows} rows the trusted reviewer answered count as "
                        f"right, the {self.settled_rows} the LLM decided as right as it was on {self.settled_measured} "
                        "audit rows a stage picked")
        return (f"{100 * self.value:.2f}% [{100 * self.low:.1f}, {100 * self.high:.1f}] (95%; {self.audit_rows} audit "
                f"rows measure the {self.unreviewed_rows} rows the vote labeled, {reviewed})")


class Calibration:
    """Isotonic maps from the vote's probabilities to how often they are right on the audit rows."""

    def __init__(self, set_method: str = "platt") -> None:
        # the row's map: "platt" (a logistic curve on the log-odds: two numbers, steady on a few hundred audit
        # rows; ECE of the row confidence 0.027 against isotonic's 0.046 on GoEmotions, BENCHMARKS.md section 20)
        # or "isotonic"
        self.set_method = set_method
        self.label_map: Any = None
        self.set_map: Any = None

    def fit(self, P: np.ndarray, T: np.ndarray, S: np.ndarray) -> Calibration:  # noqa: N803
        """`P` the vote's per-label probabilities on the audit rows, `T` their reviewed sets, `S` the decided
        sets (all (rows, labels))."""
        from sklearn.isotonic import IsotonicRegression

        from .vote import set_probability

        self.label_map = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(P.ravel(), T.ravel())
        exact = (T == S).all(axis=1).astype(np.float64)
        p_set = set_probability(P, S)
        if self.set_method == "platt" and 0 < exact.sum() < len(exact):
            from sklearn.linear_model import LogisticRegression

            self.set_map = _Platt(LogisticRegression(C=1e4).fit(_logit(p_set)[:, None], exact))
        else:
            self.set_map = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p_set, exact)
        return self

    def labels(self, P: np.ndarray) -> np.ndarray:  # noqa: N803
        return P if self.label_map is None else self.label_map.predict(P.ravel()).reshape(P.shape)

    def sets(self, p_set: np.ndarray) -> np.ndarray:
        return p_set if self.set_map is None else self.set_map.predict(p_set)

    def to_dict(self) -> dict[str, Any]:
        def points(m: Any) -> Any:
            if isinstance(m, _Platt):
                return {"platt": [float(m.model.coef_[0, 0]), float(m.model.intercept_[0])]}
            return None if m is None else [m.X_thresholds_.tolist(), m.y_thresholds_.tolist()]

        return {"label": points(self.label_map), "set": points(self.set_map)}


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(q / (1 - q))


class _Platt:
    def __init__(self, model: Any):
        self.model = model

    def predict(self, p: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(_logit(np.asarray(p))[:, None])[:, 1]


def _t95(df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, max(1, df)))


def proxy_counts(P: np.ndarray, S: np.ndarray, weights: np.ndarray) -> np.ndarray:  # noqa: N803
    """(rows, 3): what the probabilities `P` expect of the sets `S`, per row times its weight: 2 x true
    positives, 2 x true positives + false positives + false negatives, and the chance the set is right."""
    from .vote import set_probability

    w = np.asarray(weights, dtype=np.float64)
    tp = (P * S).sum(axis=1)
    fp = ((1 - P) * S).sum(axis=1)
    fn = (P * (1 - S)).sum(axis=1)
    return np.stack([2 * w * tp, w * (2 * tp + fp + fn), w * set_probability(P, S)], axis=1)


def _ratio(metric: str, a: np.ndarray, b: np.ndarray, a_hat: np.ndarray, b_hat: np.ndarray, reviewed: float,
           n_rest: int, rest_hat: tuple[float, float], rows: tuple[int, ...],
           settled: tuple[np.ndarray, np.ndarray, int] | None = None) -> Estimate:
    """sum(a) / sum(b) over the output: `reviewed` for the rows a trusted reviewer answered (right: a = b), the
    proxies' totals `rest_hat` over the rows the vote labeled, corrected by the audit's mean residuals
    (a - a_hat, b - b_hat), and, for the `settled` texts an LLM decided, their count times the mean of the
    measuring rows' (a, b): a second sample, whose chance adds to the interval."""
    n = len(a)
    ra, rb = a - a_hat, b - b_hat
    A = reviewed + rest_hat[0] + n_rest * ra.mean()  # noqa: N806
    B = reviewed + rest_hat[1] + n_rest * rb.mean()  # noqa: N806
    if settled is not None:
        sa, sb, k = settled
        A, B = A + k * sa.mean(), B + k * sb.mean()  # noqa: N806
    value = min(1.0, max(0.0, A / B)) if B > 0 else 1.0
    z = ra - value * rb
    s = float(z.std(ddof=1)) if n > 1 else 0.0
    var = (n_rest / B) ** 2 * s * s * (1.0 / n + (1.0 / n_rest if n_rest else 0.0)) if B > 0 else 0.0
    df = n - 1
    if settled is not None and B > 0:
        zs = sa - value * sb
        m = len(zs)
        var += (k / B) ** 2 * (float(zs.var(ddof=1)) if m > 1 else 0.0) / m
        df = min(df, m - 1)  # the smaller sample sets the tails
    half = _t95(df) * math.sqrt(var)
    return Estimate(metric, float(value), max(0.0, float(value - half)), min(1.0, float(value + half)), *rows)


def estimate(T: np.ndarray, S: np.ndarray, P: np.ndarray | None, weights: np.ndarray,  # noqa: N803
             reviewed_sizes: np.ndarray, reviewed_weights: np.ndarray, n_rest: int, rest_rows: int,
             rest_proxy: np.ndarray | None = None, settled: Settled | None = None) -> list[Estimate]:
    """Micro-F1 and exact-set accuracy of the output, by prediction-powered inference.

    `T`, `S`, `P`: the audit rows' reviewed sets, voted sets and the vote's probabilities (texts x labels),
    `weights` their input-row counts; `reviewed_sizes`, `reviewed_weights`: the set size and row count of
    every reviewed text (audit rows included: the output gives them their reviewed set); `n_rest`,
    `rest_rows`: the texts and input rows the vote labels; `rest_proxy`: the sum of `proxy_counts` over those
    rows, the probabilities from heads of the same kind as the audit's. The probabilities' expectations
    carry what they know of every row (a text with many labels expects many); the audit corrects their
    mistakes, so the estimate is unbiased whatever the probabilities, and narrower the better they are. A
    few texts with many labels weigh much in micro-F1 and a small audit often draws none: without the
    proxies, the estimate then errs high. `P` None: no proxies (the audit's plain counts). `settled`: the rows
    an LLM decided, first in a cascade (then `reviewed_*` are the trusted reviewer's rows only)."""
    w = np.asarray(weights, dtype=np.float64)
    tp = (T & S).sum(axis=1)
    fp = ((1 - T) & S).sum(axis=1)
    fn = (T & (1 - S)).sum(axis=1)
    exact = (T == S).all(axis=1)
    hat = proxy_counts(P, S, w) if P is not None else np.zeros((len(T), 3))
    rest_hat = np.zeros(3) if P is None or rest_proxy is None else np.asarray(rest_proxy, dtype=np.float64)
    rw = np.asarray(reviewed_weights, dtype=np.float64)
    a_rev = float(2 * (rw * reviewed_sizes).sum())
    s_f1 = s_exact = None
    rows: tuple[int, ...] = (len(T), rest_rows, int(rw.sum()))
    if settled is not None:
        sw = np.asarray(settled.weights, dtype=np.float64)
        stp = (settled.T & settled.L).sum(axis=1)
        sfp = ((1 - settled.T) & settled.L).sum(axis=1)
        sfn = (settled.T & (1 - settled.L)).sum(axis=1)
        s_f1 = (2 * sw * stp, sw * (2 * stp + sfp + sfn), settled.texts)
        # the exact-set ratio's denominator is the rows: known for the settled texts too
        s_exact = (sw * (settled.T == settled.L).all(axis=1), np.full(len(sw), settled.rows / max(1, settled.texts)),
                   settled.texts)
        rows = (len(T), rest_rows, int(rw.sum()) + settled.rows, settled.rows, len(settled.T))
    f1 = _ratio("micro_f1", 2 * w * tp, w * (2 * tp + fp + fn), hat[:, 0], hat[:, 1], a_rev, n_rest,
                (rest_hat[0], rest_hat[1]), rows, s_f1)
    # the rows are known: the denominator needs no estimate
    exact_set = _ratio("exact_set_accuracy", w * exact, w, hat[:, 2], w, float(rw.sum()), n_rest,
                       (rest_hat[2], float(rest_rows)), rows, s_exact)
    return [f1, exact_set]


def specialist_scores(names: Sequence[str], each: Sequence[np.ndarray], T: np.ndarray,  # noqa: N803
                      allow_empty: bool) -> list[dict[str, Any]]:
    """Each specialist's own sets (`each`: its out-of-fold probabilities on the audit rows no stage picked, as the
    vote's) against the reviewed sets `T`, on the labels it scores: how much each brings, measured where none of
    them learned."""
    from ..labelsets import multilabel_scores
    from .vote import decide

    out = []
    for name, P in zip(names, each, strict=True):  # noqa: N806
        scored = ~np.isnan(P).all(axis=0)
        S = decide(np.nan_to_num(P[:, scored]), allow_empty)  # noqa: N806
        sc = multilabel_scores(T[:, scored], S)
        out.append({"name": name, "micro_f1": float(sc["micro_f1"]), "macro_f1": float(sc["macro_f1"]),
                    "labels": int(scored.sum()), "rows": int(len(T))})
    return out
