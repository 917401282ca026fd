"""The bar to beat (issue "Continual learning", section "The bar to beat"): a 30-line active-learning
script with no ensemble, routing or replay.

Frozen all-MiniLM-L6-v2 sentence embeddings (L2-normalised) and a scikit-learn LogisticRegression:
the budget B = round(r * N) rows; a random 10% of B (at least 3 rows) is reviewed first, then 8 stages
of margin sampling each review the unreviewed rows with the smallest top-1 minus top-2 probability
gap of a head refitted on every reviewed row so far (the last stage takes what is left of B).
Reviewed rows take their gold label; every other row gets the final head's prediction. Accuracy is
over all N rows, the mean over seeds 0, 1, 2.

Embeddings come from labeljury's shared encoder (`get_encoder(DEFAULT_ENCODER)`), cached in
benchmarks/results/emb_<dataset>[-limitN].npy; `--emb-cache DIR` reads `DIR/emb_<dataset>.npy`
instead (e.g. /work/scratch/research, same model), taking its first N rows with `--limit`.

    python benchmarks/active_learning_baseline.py
    python benchmarks/active_learning_baseline.py --datasets financial-sentiment --emb-cache /work/scratch/research
    python benchmarks/active_learning_baseline.py --limit 1500 --budgets 10,20 --seeds 0

Results: benchmarks/results/active_learning_baseline[-limitN].json; a markdown table on stdout.
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

from benchlib import RESULTS_DIR, limit_suffix, parse_percents, pick_datasets, read_frame, write_results  # noqa: E402

# The issue's table ("measured on this machine"), accuracy % by share of rows reviewed.
ISSUE_TABLE = {
    "financial-sentiment": {5: 77.5, 10: 80.8, 15: 83.5, 20: 86.3, 26: 89.0, 40: 93.4},
    "tweet-sentiment": {5: 64.6, 10: 69.1, 15: 71.8, 20: 75.2, 26: 78.8, 40: 85.6},
}


def active_learning(E: np.ndarray, y: np.ndarray, share: float, seed: int,
                    stages: int = 8, init_share: float = 0.1) -> tuple[float, int]:
    """Accuracy over all rows and rows reviewed, for one budget share and seed."""
    from sklearn.linear_model import LogisticRegression

    n = len(y)
    budget = min(n, int(round(share * n)))
    rng = np.random.default_rng(seed)
    reviewed = np.zeros(n, bool)
    reviewed[rng.choice(n, min(budget, max(int(init_share * budget), 3)), replace=False)] = True
    per_stage = max(0, budget - int(reviewed.sum())) // stages
    for stage in range(stages):
        k = per_stage if stage < stages - 1 else budget - int(reviewed.sum())
        pool = np.flatnonzero(~reviewed)
        if k <= 0 or not len(pool):
            continue
        if len(np.unique(y[reviewed])) < 2:  # nothing to fit yet: review at random
            pick = rng.choice(pool, min(k, len(pool)), replace=False)
        else:
            head = LogisticRegression(max_iter=1000).fit(E[reviewed], y[reviewed])
            proba = np.sort(head.predict_proba(E[pool]), axis=1)
            pick = pool[np.argsort(proba[:, -1] - proba[:, -2], kind="stable")[:k]]
        reviewed[pick] = True
    pred = y.copy()
    if (~reviewed).any():
        if len(np.unique(y[reviewed])) < 2:
            pred[~reviewed] = y[reviewed][0]
        else:
            pred[~reviewed] = LogisticRegression(max_iter=1000).fit(E[reviewed], y[reviewed]).predict(E[~reviewed])
    return float((pred == y).mean()), int(reviewed.sum())


def embeddings(ds, texts: list[str], limit: int | None, emb_cache: str | None) -> tuple[np.ndarray, str]:
    if emb_cache:
        path = Path(emb_cache) / f"emb_{ds.name}.npy"
        if not path.is_file():
            sys.exit(f"--emb-cache: {path} does not exist")
        E = np.load(path, mmap_mode="r")
        if len(E) < len(texts):
            sys.exit(f"--emb-cache: {path} has {len(E)} rows, the dataset {len(texts)}")
        return np.asarray(E[: len(texts)], dtype=np.float32), str(path)
    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:12]
    path = RESULTS_DIR / f"emb_{ds.name}{limit_suffix(limit)}-{digest}.npy"
    if path.is_file():
        return np.load(path), str(path)
    from labeljury.specialists import DEFAULT_ENCODER, get_encoder

    t0 = time.perf_counter()
    E = get_encoder(DEFAULT_ENCODER).encode(texts)
    print(f"  encoded {len(texts)} texts in {time.perf_counter() - t0:.1f} s -> {path}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, E)
    return E, str(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", help="comma-separated (default: financial-sentiment,tweet-sentiment)")
    p.add_argument("--budgets", default="5,10,15,20,26,40", help="percent of rows reviewed (default 5,10,15,20,26,40)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--limit", type=int, help="only the first N rows of each dataset (quick checks)")
    p.add_argument("--emb-cache", help="folder with emb_<dataset>.npy of all-MiniLM-L6-v2 (row order of the file)")
    p.add_argument("--out", help="results JSON (default benchmarks/results/active_learning_baseline[-limitN].json)")
    args = p.parse_args()
    budgets = parse_percents(args.budgets)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    datasets = pick_datasets(args.datasets, ["financial-sentiment", "tweet-sentiment"])
    if not datasets:
        sys.exit("no dataset found under ../shared/data; nothing to benchmark")

    results: dict[str, Any] = {"benchmark": "active_learning_baseline", "when": dt.datetime.now().isoformat(timespec="seconds"),
                               "limit": args.limit, "seeds": seeds, "command": " ".join(sys.argv), "datasets": {}}
    for ds in datasets:
        df = read_frame(ds, args.limit)
        texts = ["" if not isinstance(t, str) else t for t in df[ds.text_column].tolist()]
        y = df[ds.label_column].astype(str).to_numpy()
        E, source = embeddings(ds, texts, args.limit, args.emb_cache)
        rows = {}
        for b in budgets:
            runs = []
            for seed in seeds:
                t0 = time.perf_counter()
                acc, n_rev = active_learning(E, y, b / 100, seed)
                runs.append({"seed": seed, "accuracy": acc, "reviewed": n_rev, "seconds": round(time.perf_counter() - t0, 2)})
            accs = [r["accuracy"] for r in runs]
            rows[f"{b:g}"] = {"percent": b, "mean_accuracy": float(np.mean(accs)), "std_accuracy": float(np.std(accs)),
                              "review_rate": float(np.mean([r["reviewed"] for r in runs]) / len(y)), "runs": runs}
            print(f"  {ds.name} {b:g}%: {100 * np.mean(accs):.1f}", file=sys.stderr)
        results["datasets"][ds.name] = {"rows": len(y), "embeddings": source, "budgets": rows}
        path = write_results(f"active_learning_baseline{limit_suffix(args.limit)}.json", results, args.out)

    print(f"Active-learning baseline, accuracy % over all rows, mean of seeds {seeds}"
          + (f", first {args.limit} rows" if args.limit else "") + ":\n")
    print("| dataset | rows | " + " | ".join(f"{b:g}%" for b in budgets) + " |")
    print("|---|---:|" + "---:|" * len(budgets))
    for name, d in results["datasets"].items():
        print(f"| {name} | {d['rows']} | " + " | ".join(f"{100 * d['budgets'][f'{b:g}']['mean_accuracy']:.1f}" for b in budgets) + " |")
        if name in ISSUE_TABLE and not args.limit:
            print(f"| {name} (issue's table) | | " + " | ".join(
                f"{ISSUE_TABLE[name][b]:.1f}" if b in ISSUE_TABLE[name] else "—" for b in budgets) + " |")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
