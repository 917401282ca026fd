"""The bar to beat for multi-label tasks (issue "multi-label tasks"): the 30-line active-learning script a
user would write, with no ensemble, routing or calibration.

Frozen all-MiniLM-L6-v2 sentence embeddings (labeljury's shared encoder) and one-vs-rest logistic
regression: the budget B = round(r * N) rows; a random tenth of B is reviewed first, then 8 rounds of
uncertainty sampling each review the unreviewed rows whose labels the head is least sure of (the smallest
mean |p - 0.5| over the labels: least confident on average), with the head refitted on every reviewed row
so far (the last round takes what is left of B). Reviewed rows keep their gold set; every other row gets
the labels with p >= 0.5, or the likeliest one when none reaches it. Scores over all N rows: micro-F1,
macro-F1 (over the labels that occur in the split, gold or predicted) and exact-set accuracy.

The data: ../shared/data/goemotions and ../shared/data/reuters (`text`, `labels` joined by `|`); skipped
when absent. Embeddings are cached in benchmarks/results/emb_ml_<set>-<split>-<digest>.npy.

    python benchmarks/multilabel_baseline.py                               # test splits, 10% and 20%, seed 0
    python benchmarks/multilabel_baseline.py --splits test,train --seeds 0,1,2

Results: benchmarks/results/multilabel_baseline.json; a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import DATA_DIR, RESULTS_DIR, parse_percents, write_results  # noqa: E402

SETS = ("goemotions", "reuters")
# The issue's measurement of this recipe: micro-F1 / macro-F1 on the test splits at 10% and 20%
ISSUE_TABLE = {"goemotions": {10: (0.385, 0.181), 20: (0.491, 0.315)},
               "reuters": {10: (0.594, 0.111), 20: (0.716, 0.257)}}


def read_sets(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, Y (n, k) 0/1, label names sorted) of a CSV with `text` and `labels` joined by `|`."""
    import pandas as pd

    df = pd.read_csv(path, keep_default_na=False, dtype=str)
    sets = [[x for x in s.split("|") if x] for s in df["labels"]]
    names = sorted({x for s in sets for x in s})
    index = {n: i for i, n in enumerate(names)}
    Y = np.zeros((len(df), len(names)), np.int8)
    for r, s in enumerate(sets):
        Y[r, [index[x] for x in s]] = 1
    return df["text"].tolist(), Y, names


def embeddings(name: str, split: str, texts: list[str]) -> np.ndarray:
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12]
    path = RESULTS_DIR / f"emb_ml_{name}-{split}-{digest}.npy"
    if path.is_file():
        return np.load(path)
    from labeljury.specialists import DEFAULT_ENCODER, get_encoder

    t0 = time.perf_counter()
    E = get_encoder(DEFAULT_ENCODER).encode(texts)
    print(f"  encoded {len(texts)} texts in {time.perf_counter() - t0:.1f} s -> {path}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, E)
    return E


def fit_predict_proba(E: np.ndarray, Y: np.ndarray, train: np.ndarray, rows: np.ndarray, C: float = 1.0) -> np.ndarray:  # noqa: N803
    """(len(rows), k) P(label) of one-vs-rest logistic regressions (inverse regularisation `C`) fitted on rows
    `train` of features `E` (dense or sparse); a label with one value among them (no positive yet, or no
    negative) predicts that value."""
    from sklearn.linear_model import LogisticRegression

    P = np.zeros((len(rows), Y.shape[1]))
    for j in range(Y.shape[1]):
        y = Y[train, j]
        if y.min() == y.max():
            P[:, j] = float(y[0])
            continue
        P[:, j] = LogisticRegression(max_iter=1000, C=C).fit(E[train], y).predict_proba(E[rows])[:, 1]
    return P


def active_learning(E: np.ndarray, Y: np.ndarray, share: float, seed: int, rounds: int = 8,
                    init_share: float = 0.1, uncertainty: str = "mean") -> tuple[np.ndarray, int]:
    """The predicted sets (n, k) over all rows (reviewed ones: gold) and the rows reviewed. `uncertainty`:
    "mean" (least confident on average: the smallest mean |p - 0.5|) or "min" (the least sure single label)."""
    n = len(Y)
    budget = min(n, int(round(share * n)))
    rng = np.random.default_rng(seed)
    reviewed = np.zeros(n, bool)
    reviewed[rng.choice(n, min(budget, max(int(init_share * budget), 3)), replace=False)] = True
    per_round = max(0, budget - int(reviewed.sum())) // rounds
    for r in range(rounds):
        k = per_round if r < rounds - 1 else budget - int(reviewed.sum())
        pool = np.flatnonzero(~reviewed)
        if k <= 0 or not len(pool):
            continue
        P = fit_predict_proba(E, Y, np.flatnonzero(reviewed), pool)
        sure = np.abs(P - 0.5)
        sure = sure.mean(axis=1) if uncertainty == "mean" else sure.min(axis=1)
        reviewed[pool[np.argsort(sure, kind="stable")[:k]]] = True
    pred = Y.copy()
    rest = np.flatnonzero(~reviewed)
    if len(rest):
        P = fit_predict_proba(E, Y, np.flatnonzero(reviewed), rest)
        S = (P >= 0.5).astype(np.int8)
        none = S.sum(axis=1) == 0
        S[np.flatnonzero(none), P[none].argmax(axis=1)] = 1
        pred[rest] = S
    return pred, int(reviewed.sum())


def scores(Y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """labeljury's own multi-label scores (`labelsets.multilabel_scores`, what `labeljury eval --multi-label`
    reports): micro-F1, macro-F1 over the labels present (gold or predicted), exact-set accuracy, Hamming loss."""
    from labeljury.labelsets import multilabel_scores

    s = multilabel_scores(Y, pred)
    return {"micro_f1": s["micro_f1"], "macro_f1": s["macro_f1"], "exact": s["exact_set_accuracy"],
            "hamming": s["hamming_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--splits", default="test")
    ap.add_argument("--budgets", default="10,20", help="percent of rows reviewed")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--uncertainty", choices=("mean", "min"), default="mean",
                    help="mean: the smallest mean |p - 0.5| over the labels; min: the least sure single label")
    ap.add_argument("--out", help="results JSON (default benchmarks/results/multilabel_baseline.json)")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results: dict[str, Any] = {"benchmark": "multilabel_baseline", "when": dt.datetime.now().isoformat(timespec="seconds"),
                               "command": " ".join(sys.argv), "runs": []}
    lines = []
    for name in args.sets.split(","):
        for split in args.splits.split(","):
            path = DATA_DIR / name / f"{split}.csv"
            if not path.is_file():
                print(f"skipping {name}/{split}: {path} is absent", file=sys.stderr)
                continue
            texts, Y, names = read_sets(path)
            E = embeddings(name, split, texts)
            for b in parse_percents(args.budgets):
                runs = []
                for seed in seeds:
                    t0 = time.perf_counter()
                    pred, n_rev = active_learning(E, Y, b / 100, seed, uncertainty=args.uncertainty)
                    runs.append({"seed": seed, "reviewed": n_rev, "seconds": round(time.perf_counter() - t0, 1),
                                 **scores(Y, pred)})
                mean = {m: float(np.mean([r[m] for r in runs])) for m in ("micro_f1", "macro_f1", "exact", "hamming")}
                results["runs"].append({"set": name, "split": split, "rows": len(Y), "labels": len(names),
                                        "uncertainty": args.uncertainty,
                                        "percent": b, **mean, "seeds": runs})
                issue = ISSUE_TABLE.get(name, {}).get(int(b)) if split == "test" else None
                lines.append(f"| {name} | {split} | {len(Y)} | {len(names)} | {b:g}% | {mean['micro_f1']:.3f} | "
                             f"{mean['macro_f1']:.3f} | {mean['exact']:.3f} | "
                             + (f"{issue[0]:.3f} / {issue[1]:.3f}" if issue else "-") + " |")
                print(lines[-1], file=sys.stderr)
    path = write_results("multilabel_baseline.json", results, args.out)
    print(f"Multi-label active-learning baseline, mean of seeds {seeds}:\n")
    print("| set | split | rows | labels | budget | micro-F1 | macro-F1 | exact set | the issue's micro / macro |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|")
    print("\n".join(lines))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
