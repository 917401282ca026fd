"""Trust benchmark (issue "Labels you can trust without gold"): calibration of `annotation_confidence`,
the estimated accuracy and its 95% interval against the truth, and what the audit costs.

For each dataset of 3,000+ rows and each budget and seed, the pipeline runs with the gold reviewer and
the default audit (`review.audit` unset), each in a fresh process; embeddings come from a cache made
once per dataset by labeljury's own encoder (`--emb-cache`, default benchmarks/results/), so wall
times exclude the encoder pass. Measured per run, against the gold column: the accuracy of the output,
the ECE (15 bins) of `annotation_confidence` on the rows the vote labeled, the estimate, whether its
interval holds the true accuracy of the labeled rows, its half-width. Then, on the `--cost-datasets`
at `--cost-budget`, the same runs with `review.audit: 0`: the accuracy the audit costs at equal budget.

    python benchmarks/bench_trust.py                                  # ~1.5 h on a 2-core CPU
    python benchmarks/bench_trust.py --datasets financial-sentiment --budgets 20 --seeds 0

Results: benchmarks/results/bench_trust.json and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    RESULTS_DIR,
    budget_value,
    cleanup,
    labels_of,
    make_workdir,
    measure,
    parse_percents,
    pick_datasets,
    task_dict,
    write_results,
)

TRUST_SETS = ["financial-sentiment", "tweet-sentiment", "offensive", "hate", "emotion", "tweeteval-sentiment", "ag-news"]


def embedding_cache(ds: Any, cache_dir: Path, workdir: Path) -> Path:
    path = cache_dir / f"emb_{ds.name}.npy"
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        res = measure({"kind": "encode", "input": str(ds.path), "text_column": ds.text_column, "save": str(path)},
                      workdir)
        if "error" in res:
            sys.exit(f"encoding {ds.name} failed: {res['error']}")
        print(f"  encoded {ds.name}: {res['texts']} texts in {res['encode_seconds']} s", file=sys.stderr)
    return path


def one_run(ds: Any, percent: float, seed: int, audit: int | None, cache: Path, workdir: Path) -> dict[str, Any]:
    task = task_dict(ds, labels_of(ds), budget_value(percent), seed=seed)
    if audit is not None:
        task["review"]["audit"] = audit
    tag = f"{ds.name}-{percent:g}-{seed}-{'default' if audit is None else audit}"
    task_path = workdir / f"{tag}.yaml"
    task_path.write_text(yaml.safe_dump(task, sort_keys=False))
    res = measure({"kind": "pipeline", "task_path": str(task_path), "input": str(ds.path), "output": str(workdir / f"{tag}.csv"),
                   "run_dir": str(workdir / f"{tag}.run"), "gold_column": ds.label_column, "text_column": ds.text_column,
                   "emb_cache": str(cache)}, workdir)
    res.update(dataset=ds.name, percent=percent, seed=seed, audit_setting=audit)
    if "error" in res:
        print(f"  {tag}: ERROR {res['error']}", file=sys.stderr)
        return res
    half = None if res.get("estimated_low") is None else (res["estimated_high"] - res["estimated_low"]) / 2
    res["half_width"] = half
    print(f"  {tag}: acc {_pct(res['accuracy'])}, ECE {res['ece']:.3f}, est {_pct(res['estimated_accuracy'])} "
          f"+- {_pct(half)}, covered {res['covered']}, {res['wall_seconds']} s", file=sys.stderr)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=None)
    ap.add_argument("--budgets", default="10,20")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--cost-datasets", default="financial-sentiment,tweet-sentiment")
    ap.add_argument("--cost-budget", type=float, default=20)
    ap.add_argument("--emb-cache", default=str(RESULTS_DIR))
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep-runs", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    workdir = make_workdir(args.keep_runs)
    runs: list[dict[str, Any]] = []
    try:
        for ds in pick_datasets(args.datasets, TRUST_SETS):
            print(f"## {ds.name}", file=sys.stderr)
            cache = embedding_cache(ds, Path(args.emb_cache), workdir)
            for percent in parse_percents(args.budgets):
                for seed in seeds:
                    runs.append(one_run(ds, percent, seed, None, cache, workdir))
            if ds.name in args.cost_datasets.split(","):
                for seed in seeds:
                    runs.append(one_run(ds, args.cost_budget, seed, 0, cache, workdir))
    finally:
        cleanup(workdir, args.keep_runs)
    payload = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
               "python": platform.python_version(), "runs": runs}
    path = write_results("bench_trust.json", payload, args.out)
    print_tables(runs)
    print(f"\nresults: {path}", file=sys.stderr)


def _pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}"


def print_tables(runs: list[dict[str, Any]]) -> None:
    ok = [r for r in runs if "error" not in r and r.get("audit_setting") is None]
    print("| dataset | budget % | seed | audit rows | accuracy % | ECE | ECE before calibration | estimated % "
          "| 95% interval | half-width (points) | holds the truth | rollbacks |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|")
    for r in ok:
        interval = "—" if r.get("estimated_low") is None else f"{_pct(r['estimated_low'], 1)} – {_pct(r['estimated_high'], 1)}"
        print(f"| {r['dataset']} | {r['percent']:g} | {r['seed']} | {r['audit_rows']} | {_pct(r['accuracy'])} "
              f"| {r['ece']:.3f} | {r.get('ece_raw', float('nan')):.3f} | {_pct(r.get('estimated_accuracy'))} "
              f"| {interval} | {_pct(r.get('half_width'))} | {r['covered']} | {r['rollbacks'][0]}/{r['rollbacks'][1]} |")
    measured = [r for r in ok if r.get("covered") is not None]
    if measured:
        print(f"\nIntervals holding the true accuracy: {sum(r['covered'] for r in measured)} of {len(measured)}; "
              f"ECE <= 0.03 in {sum(r['ece'] <= 0.03 for r in ok)} of {len(ok)} runs.")
    cost = [r for r in runs if "error" not in r and r.get("audit_setting") == 0]
    if cost:
        print("\n| dataset | budget % | seed | accuracy %, no audit | accuracy %, default audit | audit rows | cost (points) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in cost:
            twin = next((o for o in ok if (o["dataset"], o["percent"], o["seed"]) == (r["dataset"], r["percent"], r["seed"])),
                        None)
            if twin is not None:
                print(f"| {r['dataset']} | {r['percent']:g} | {r['seed']} | {_pct(r['accuracy'])} | {_pct(twin['accuracy'])} "
                      f"| {twin['audit_rows']} | {100 * (r['accuracy'] - twin['accuracy']):.2f} |")


if __name__ == "__main__":
    main()
