"""What the audit costs, and whether its estimate holds (issue "trust without a tax").

For each dataset, budget and seed, the pipeline runs with the gold reviewer in a fresh process (embeddings
from a cache made once per dataset by labeljury's own encoder, as in bench_trust.py), in up to three
configurations of the audit:
- `hard`: the default (`review.audit_sampling` unset): the audit drawn once the first versions exist, with
  known probabilities favouring the rows they find hard, each row weighted 1/pi wherever it measures;
- `uniform`: `review.audit_sampling: uniform` (the audit before this issue's change);
- `none`: `review.audit: 0` (no audit at all: the best a budget can buy, with no estimate);
beside the 30-line active-learning baseline (`active_learning_baseline.active_learning`: frozen
all-MiniLM-L6-v2 embeddings + logistic regression, margin sampling, every reviewed row trained on) on the
same embeddings and seed. Measured against the gold column: accuracy over all rows, the ECE of
`annotation_confidence` on the rows the vote labeled, the run's estimate with its 95% interval and whether
it holds the true accuracy.

    python benchmarks/bench_audit.py                                         # ~1.5 h on a 2-core CPU
    python benchmarks/bench_audit.py --datasets financial-sentiment --budgets 20 --seeds 0 --configs hard,uniform
    python benchmarks/bench_audit.py --jobs 2                                 # two runs at a time

`--tilt T` runs `hard` with another share of the probability spread by hardness (`Tuning.audit_tilt`). Results: benchmarks/results/bench_audit.json and a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from active_learning_baseline import active_learning  # noqa: E402
from bench_trust import embedding_cache  # noqa: E402
from benchlib import (  # noqa: E402
    RESULTS_DIR,
    budget_value,
    cleanup,
    labels_of,
    make_workdir,
    measure,
    parse_percents,
    pick_datasets,
    read_frame,
    task_dict,
    write_results,
)

AUDIT_SETS = ["financial-sentiment", "tweet-sentiment", "offensive", "emotion", "ag-news"]
CONFIGS = ("hard", "uniform", "none")


def one_run(ds: Any, percent: float, seed: int, config: str, cache: Path, workdir: Path,
            tilt: float | None, audit: int | None = None) -> dict[str, Any]:
    task = task_dict(ds, labels_of(ds), budget_value(percent), seed=seed)
    if audit is not None and config != "none":
        task["review"]["audit"] = audit
    if config == "uniform":
        task["review"]["audit_sampling"] = "uniform"
    elif config == "none":
        task["review"]["audit"] = 0
    tag = (f"{ds.name}-{percent:g}-{seed}-{config}" + (f"-tilt{tilt:g}" if tilt is not None else "")
           + (f"-audit{audit}" if audit is not None else ""))
    task_path = workdir / f"{tag}.yaml"
    task_path.write_text(yaml.safe_dump(task, sort_keys=False))
    spec = {"kind": "pipeline", "task_path": str(task_path), "input": str(ds.path), "output": str(workdir / f"{tag}.csv"),
            "run_dir": str(workdir / f"{tag}.run"), "gold_column": ds.label_column, "text_column": ds.text_column,
            "emb_cache": str(cache)}
    if tilt is not None and config == "hard":
        spec["tuning"] = {"audit_tilt": tilt}
    res = measure(spec, workdir)
    res.update(dataset=ds.name, percent=percent, seed=seed, config=config, tilt=tilt, audit_rows=audit)
    if "error" in res:
        print(f"  {tag}: ERROR {res['error']}", file=sys.stderr)
        return res
    res["half_width"] = None if res.get("estimated_low") is None else (res["estimated_high"] - res["estimated_low"]) / 2
    print(f"  {tag}: acc {_pct(res['accuracy'])}, ECE {res['ece']:.3f}, est {_pct(res.get('estimated_accuracy'))} "
          f"+- {_pct(res['half_width'])}, covered {res.get('covered')}, {res['wall_seconds']} s", file=sys.stderr)
    return res


def baseline(ds: Any, cache: Path, percent: float, seed: int) -> float:
    """The 30-line baseline's accuracy on the same embeddings (the cache holds each unique non-empty text
    once, in order of first appearance; an empty text gets a zero vector)."""
    df = read_frame(ds, None)
    texts = df[ds.text_column].tolist()
    unique = list(dict.fromkeys(t for t in texts if isinstance(t, str) and t.strip()))
    at = {t: i for i, t in enumerate(unique)}
    U = np.load(cache)
    E = np.stack([U[at[t]] if t in at else np.zeros(U.shape[1], U.dtype) for t in texts])
    y = df[ds.label_column].astype(str).to_numpy()
    return active_learning(E, y, percent / 100, seed)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=None)
    ap.add_argument("--budgets", default="10,20")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--configs", default="hard,uniform,none")
    ap.add_argument("--config-seeds", default="uniform:0,none:0",
                    help="seeds for configurations other than hard (default: seed 0 only)")
    ap.add_argument("--tilt", type=float, default=None)
    ap.add_argument("--audits", default=None,
                    help="audit sizes in rows (review.audit) or `default`, comma-separated: each hard/uniform run once per size")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--emb-cache", default=str(RESULTS_DIR))
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep-runs", action="store_true")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    configs = [c for c in args.configs.split(",") if c]
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        sys.exit(f"--configs: unknown {bad}; choose from {', '.join(CONFIGS)}")
    only = {c.split(":")[0]: [int(x) for x in c.split(":")[1].split("/")] for c in args.config_seeds.split(",") if c}
    sizes: list[int | None] = ([None if a == "default" else int(a) for a in args.audits.split(",")] if args.audits
                               else [None])
    workdir = make_workdir(args.keep_runs)
    runs: list[dict[str, Any]] = []
    baselines: list[dict[str, Any]] = []
    try:
        jobs = []
        for ds in pick_datasets(args.datasets, AUDIT_SETS):
            cache = embedding_cache(ds, Path(args.emb_cache), workdir)
            for percent in parse_percents(args.budgets):
                for seed in seeds:
                    baselines.append({"dataset": ds.name, "percent": percent, "seed": seed,
                                      "accuracy": baseline(ds, cache, percent, seed)})
                    for config in configs:
                        if config in only and seed not in only[config]:
                            continue
                        for audit in sizes if config != "none" else [None]:
                            jobs.append((ds, percent, seed, config, cache, audit))
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = list(pool.map(lambda j: one_run(*j[:5], workdir, args.tilt, j[5]), jobs))
    finally:
        cleanup(workdir, args.keep_runs)
    payload = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
               "python": platform.python_version(), "command": " ".join(sys.argv), "runs": runs, "baselines": baselines}
    path = write_results("bench_audit.json", payload, args.out)
    print_table(runs, baselines)
    print(f"\nresults: {path}", file=sys.stderr)


def _pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f}"


def print_table(runs: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> None:
    ok = {(r["dataset"], r["percent"], r["seed"], r["config"]): r for r in runs if "error" not in r}
    print("| dataset | budget % | seed | hard: accuracy % | estimate ± half-width | covers | ECE | uniform: accuracy % "
          "| ± half-width | covers | none: accuracy % | baseline % |")
    print("|---|---:|---:|---:|---|---|---:|---:|---:|---|---:|---:|")
    for b in baselines:
        key = (b["dataset"], b["percent"], b["seed"])
        h, u, n = (ok.get((*key, c)) for c in CONFIGS)
        if not (h or u or n):
            continue

        def est(r: dict[str, Any] | None) -> str:
            return "—" if r is None or r.get("half_width") is None else f"{_pct(r['estimated_accuracy'])} ± {_pct(r['half_width'])}"

        ece = "—" if h is None else f"{h['ece']:.3f}"
        u_half = "—" if u is None or u.get("half_width") is None else _pct(u["half_width"])
        print(f"| {b['dataset']} | {b['percent']:g} | {b['seed']} | {_pct(h and h['accuracy'])} | {est(h)} "
              f"| {h and h.get('covered')} | {ece} | {_pct(u and u['accuracy'])} | {u_half} | {u and u.get('covered')} "
              f"| {_pct(n and n['accuracy'])} | {_pct(b['accuracy'])} |")
    sized = [r for r in runs if "error" not in r and r.get("audit_rows") is not None]
    if sized:  # --audits: one line a run
        print("\n| dataset | budget % | seed | config | review.audit | accuracy % | estimate ± half-width | covers | ECE |")
        print("|---|---:|---:|---|---:|---:|---|---|---:|")
        for r in sized:
            half = "—" if r.get("half_width") is None else f"{_pct(r['estimated_accuracy'])} ± {_pct(r['half_width'])}"
            print(f"| {r['dataset']} | {r['percent']:g} | {r['seed']} | {r['config']} | {r['audit_rows']} "
                  f"| {_pct(r['accuracy'])} | {half} | {r.get('covered')} | {r['ece']:.3f} |")
    measured = [r for r in ok.values() if r["config"] == "hard" and r.get("covered") is not None]
    if measured:
        print(f"\nhard: intervals holding the true accuracy: {sum(r['covered'] for r in measured)} of {len(measured)}; "
              f"ECE <= 0.03 in {sum(r['ece'] <= 0.03 for r in measured)} of {len(measured)} runs.")


if __name__ == "__main__":
    main()
