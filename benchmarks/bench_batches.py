"""Batches benchmark (issue "Data that keeps coming"): a dataset cut in order into batches, each labeled
with a fixed review budget (a share of the batch, gold reviewer), as a chain (`--from` the previous
batch's run) and each from scratch; then a drift chain, whose last batch comes from another domain.

- Chains: tweet-sentiment's 17,317 annotate rows cut in order into 5 batches; at each budget, batch 1 is
  one run (a chain starts from scratch), batches 2-5 run twice: `--from` the previous batch's run, and
  from scratch. Recorded per batch: accuracy against the gold labels, reviews spent, the estimate and its
  95% interval (and whether it covers the accuracy), the drift test (AUC, drifted), wall time.
- Drift: after the 10% chain's third batch, a batch of financial-sentiment mapped onto the same labels
  (bearish -> negative, bullish -> positive, neutral) as long as a tweet batch, drawn at random from its
  annotate split (the file is stored in runs of one label: a cut in order would hold one label): labeled
  `--from` the third tweet batch and from scratch at the same budget. The tweet chain itself is the chain
  without a shift.

    python benchmarks/bench_batches.py [--budgets 10,5] [--batches 5] [--keep DIR]

Results: benchmarks/results/bench_batches.json; markdown tables on stdout. Reads ../shared/data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import DATASETS, budget_value, labels_of, task_dict, write_results  # noqa: E402

FIN_MAP = {"bearish": "negative", "bullish": "positive", "neutral": "neutral"}


def one_run(task_path: Path, inp: Path, out_dir: Path, name: str, from_run: Path | None) -> dict[str, Any]:
    import pandas as pd

    import labeljury
    from labeljury.status import run_status

    task = labeljury.load_task(task_path)
    out = out_dir / f"{name}.csv"
    t0 = time.perf_counter()
    labeljury.run(task, inp, out, out_dir / f"{name}.run", from_run=from_run)
    wall = time.perf_counter() - t0
    df = pd.read_csv(out)
    acc = float((df["annotation"].astype(str) == df["label"].astype(str)).mean())
    st = run_status(out_dir / f"{name}.run")
    low, high = st["estimated_accuracy_low"], st["estimated_accuracy_high"]
    drift = st.get("drift") or {}
    return {"name": name, "rows": len(df), "accuracy": round(acc, 4), "reviews": st["reviews"],
            "estimate": st["estimated_accuracy"], "low": low, "high": high,
            "covers": None if low is None else bool(low <= acc <= high),
            "drift_auc": drift.get("auc"), "drifted": drift.get("drifted"),
            "estimate_dropped": (drift.get("estimate") or {}).get("dropped"),
            "carried": st.get("carried_reviews"), "stopped_after_stage": st.get("stopped_after_stage"),
            "unspent": st.get("unspent_reviews"), "wall_s": round(wall, 1)}


def main() -> None:
    import pandas as pd
    import yaml

    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="10,5")
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="the task's seed (the audit, the bootstrap, the folds)")
    ap.add_argument("--keep", default=None, help="keep the run directories here")
    ap.add_argument("--out", default=None)
    ap.add_argument("--stop-early", choices=("default", "on", "off"), default="default",
                    help="review.stop_early of every run (default: the library's: on for a later batch)")
    ap.add_argument("--no-scratch", action="store_true", help="no from-scratch runs of the tweet batches (the drift "
                                                               "pair still runs both)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tweets, fin = DATASETS["tweet-sentiment"], DATASETS["financial-sentiment"]
    if not tweets.path.is_file():
        print(f"skipping: {tweets.path} is absent", file=sys.stderr)
        return
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-batches-"))
    work.mkdir(parents=True, exist_ok=True)
    df = pd.read_csv(tweets.path)
    n = len(df)
    size = -(-n // args.batches)
    batches = []
    for i in range(args.batches):
        p = work / f"batch{i + 1}.csv"
        df.iloc[i * size:(i + 1) * size].to_csv(p, index=False)
        batches.append(p)
    shifted = None
    if fin.path.is_file():
        f = pd.read_csv(fin.path).sample(n=size, random_state=0)
        f["label"] = f["label"].map(FIN_MAP)
        shifted = work / "financial-mapped.csv"
        f.to_csv(shifted, index=False)
    labels = labels_of(tweets)
    results: dict[str, Any] = {"machine": f"{platform.node()}, {os.cpu_count()} cores", "rows": n,
                               "stop_early": args.stop_early, "seed": args.seed,
                               "batch_rows": size, "budgets": {}}
    for pct in [float(x) for x in args.budgets.split(",")]:
        d = work / f"b{pct:g}"
        d.mkdir(exist_ok=True)
        task_path = d / "task.yaml"
        spec = task_dict(tweets, labels, budget_value(pct), seed=args.seed)
        if args.stop_early != "default":
            spec["review"]["stop_early"] = args.stop_early == "on"
        task_path.write_text(yaml.safe_dump(spec))
        chain, scratch = [], []
        prev = None
        for i, b in enumerate(batches, 1):
            r = one_run(task_path, b, d, f"chain{i}", prev)
            chain.append(r)
            prev = d / f"chain{i}.run"
            print(json.dumps({"budget": pct, **r}), flush=True)
            if i > 1 and not args.no_scratch:
                s = one_run(task_path, b, d, f"scratch{i}", None)
                scratch.append(s)
                print(json.dumps({"budget": pct, **s}), flush=True)
            if i == 3 and shifted is not None and pct == 10:
                results["drift"] = {"from": "chain3", "chain": one_run(task_path, shifted, d, "shifted-chain", prev),
                                    "scratch": one_run(task_path, shifted, d, "shifted-scratch", None)}
                print(json.dumps(results["drift"]), flush=True)
        results["budgets"][f"{pct:g}"] = {"chain": chain, "scratch": scratch}
    path = write_results("bench_batches.json", results, args.out)
    print(f"results: {path}")
    for pct, r in results["budgets"].items():
        print(f"\n### {pct}% of each batch reviewed\n\n| batch | chain acc | scratch acc | gain | chain estimate [95%] "
              "| covers | drift AUC | reviews |\n|---|---|---|---|---|---|---|---|")
        for i, c in enumerate(r["chain"]):
            s = r["scratch"][i - 1] if i and r["scratch"] else c
            est = "" if c["estimate"] is None else f"{c['estimate']:.1%} [{c['low']:.1%}, {c['high']:.1%}]"
            print(f"| {i + 1} | {c['accuracy']:.2%} | {s['accuracy']:.2%} | {100 * (c['accuracy'] - s['accuracy']):+.2f} "
                  f"| {est} | {c['covers']} | {c['drift_auc']} | {c['reviews']} |")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
