"""What a multi-label labeljury should do beyond the 30-line baseline (issue "multi-label tasks"): design
measurements, before the pipeline labels sets.

The baseline's loop (`multilabel_baseline.active_learning`: a random tenth of the budget, 8 rounds of
uncertainty sampling, reviewed rows keep their gold sets, the rest the labels with p >= threshold, the likeliest
one when none reaches it), with one part swapped at a time:
- `--heads`: `embedding` (one-vs-rest logistic regression on all-MiniLM-L6-v2 embeddings: the baseline) or
  `embedding,tfidf` (the mean of that and one-vs-rest logistic regression on word 1-2-gram tf-idf, C = 10: the
  soft vote of two of labeljury's heads);
- `--hardness`: `mean` (the smallest mean |p - 0.5| over the labels: the baseline; the same order as the expected
  number of wrong labels, sum of min(p, 1 - p)) or `set` (the chance the whole set is wrong, labels taken as
  independent: 1 - prod max(p, 1 - p));
- `--thresholds`: `none` (0.5), `global` (one threshold, the best micro-F1 on the reviewed rows' 5-fold
  out-of-fold probabilities) or `label` (each label's best F1 there, for labels with 3+ positives).
Scores by `labelsets.multilabel_scores`, over all rows of the test split.

    python benchmarks/multilabel_design.py --sets goemotions,reuters --budgets 10,20 --seeds 0 \
        --configs embedding:mean:none,embedding+tfidf:mean:none,embedding+tfidf:set:none

- `COMBINE` (optional): how two heads' probabilities combine: `mean` (default) or `max`;
- `FIRST` (optional): the first tenth of the budget `random` (default) or `names`: half of it the rows most
  similar to each label's name in turn (all-MiniLM-L6-v2), so that a rare label has positives from the start.

A config is HEADS:HARDNESS:THRESHOLDS[:COMBINE[:FIRST]], HEADS joined by `+`. A markdown table on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import DATA_DIR, parse_percents  # noqa: E402
from multilabel_baseline import embeddings, fit_predict_proba, read_sets, scores  # noqa: E402

GRID = np.linspace(0.05, 0.95, 19)


def probs(feats: list, Y: np.ndarray, train: np.ndarray, rows: np.ndarray, combine: str = "mean") -> np.ndarray:
    P = np.stack([fit_predict_proba(X, Y, train, rows, C) for X, C in feats])
    return P.mean(axis=0) if combine == "mean" else P.max(axis=0)


def by_names(E: np.ndarray, names: list[str], m: int) -> np.ndarray:
    """`m` rows, taken in turn for each label among the texts most similar to the label's name (all-MiniLM-L6-v2
    cosine): rows where each label is likely, before any is reviewed."""
    from labeljury.specialists import DEFAULT_ENCODER, get_encoder

    L = get_encoder(DEFAULT_ENCODER).encode([n.replace("-", " ").replace("_", " ") for n in names])
    sims = (E / np.linalg.norm(E, axis=1, keepdims=True)) @ (L / np.linalg.norm(L, axis=1, keepdims=True)).T
    order = np.argsort(-sims, axis=0)
    out: list[int] = []
    seen: set[int] = set()
    depth = 0
    while len(out) < m:
        for j in range(len(names)):
            r = int(order[depth, j])
            if r not in seen and len(out) < m:
                seen.add(r)
                out.append(r)
        depth += 1
    return np.array(out)


def thresholds(feats: list, Y: np.ndarray, train: np.ndarray, mode: str, seed: int) -> np.ndarray:
    t = np.full(Y.shape[1], 0.5)
    if mode == "none":
        return t
    from sklearn.model_selection import KFold

    P = np.zeros((len(train), Y.shape[1]))
    for a, b in KFold(5, shuffle=True, random_state=seed).split(train):
        P[b] = probs(feats, Y, train[a], train[b])
    Yr = Y[train]
    if mode == "global":
        t[:] = max(GRID, key=lambda g: scores(Yr, (P >= g).astype(np.int8))["micro_f1"])
        return t
    for j in range(Y.shape[1]):
        if Yr[:, j].sum() >= 3:
            f1 = [2 * ((P[:, j] >= g) & (Yr[:, j] == 1)).sum() / max(1, (P[:, j] >= g).sum() + Yr[:, j].sum()) for g in GRID]
            t[j] = GRID[int(np.argmax(f1))]
    return t


def run(feats: list, Y: np.ndarray, share: float, seed: int, hardness: str, thr: str, rounds: int = 8,
        combine: str = "mean", first: str = "random", E: np.ndarray | None = None, names: list[str] | None = None) -> dict:
    n = len(Y)
    budget = int(round(share * n))
    rng = np.random.default_rng(seed)
    rev = np.zeros(n, bool)
    m = max(int(0.1 * budget), 3)
    if first == "names":  # half the first tenth by the labels' names, half at random
        rev[by_names(E, names, m // 2)] = True
        rev[rng.choice(np.flatnonzero(~rev), m - int(rev.sum()), replace=False)] = True
    else:
        rev[rng.choice(n, m, replace=False)] = True  # the baseline's random first tenth
    per = (budget - int(rev.sum())) // rounds
    for r in range(rounds):
        k = per if r < rounds - 1 else budget - int(rev.sum())
        pool = np.flatnonzero(~rev)
        P = probs(feats, Y, np.flatnonzero(rev), pool, combine)
        h = (0.5 - np.abs(P - 0.5)).mean(1) if hardness == "mean" else 1 - np.prod(np.maximum(P, 1 - P), axis=1)
        rev[pool[np.argsort(-h, kind="stable")[:k]]] = True
    pred, rest, train = Y.copy(), np.flatnonzero(~rev), np.flatnonzero(rev)
    P = probs(feats, Y, train, rest, combine)
    t = thresholds(feats, Y, train, thr, seed)
    S = (P >= t).astype(np.int8)
    none = S.sum(1) == 0
    S[np.flatnonzero(none), (P[none] / t).argmax(1)] = 1
    pred[rest] = S
    return scores(Y, pred)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="goemotions,reuters")
    ap.add_argument("--budgets", default="10,20")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--configs", default="embedding:mean:none,embedding+tfidf:mean:none,embedding+tfidf:set:none")
    args = ap.parse_args()
    from sklearn.feature_extraction.text import TfidfVectorizer

    seeds = [int(s) for s in args.seeds.split(",")]
    print("| set | budget | heads | hardness | thresholds | combine | first tenth | micro-F1 | macro-F1 | exact set |\n"
          "|---|---:|---|---|---|---|---|---:|---:|---:|")
    for name in args.sets.split(","):
        path = DATA_DIR / name / "test.csv"
        if not path.is_file():
            print(f"skipping {name}: {path} is absent", file=sys.stderr)
            continue
        texts, Y, names = read_sets(path)
        heads = {"embedding": (embeddings(name, "test", texts), 1.0),
                 "tfidf": (TfidfVectorizer(sublinear_tf=True, min_df=2, ngram_range=(1, 2), max_features=50_000)
                           .fit_transform(texts), 10.0)}
        for b in parse_percents(args.budgets):
            for config in args.configs.split(","):
                parts = config.split(":") + ["mean", "random"][len(config.split(":")) - 3:]
                used, hardness, thr, combine, first = parts[:5]
                t0 = time.perf_counter()
                rs = [run([heads[h] for h in used.split("+")], Y, b / 100, s, hardness, thr, combine=combine, first=first,
                          E=heads["embedding"][0], names=names) for s in seeds]
                m = {k: float(np.mean([r[k] for r in rs])) for k in ("micro_f1", "macro_f1", "exact")}
                print(f"| {name} | {b:g}% | {used} | {hardness} | {thr} | {combine} | {first} | {m['micro_f1']:.3f} | {m['macro_f1']:.3f} | "
                      f"{m['exact']:.3f} |", flush=True)
                print(f"  ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
