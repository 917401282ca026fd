"""Core benchmark (issue "labeljury core", item 10): the floor, the pipeline without review, and the
pipeline with the gold reviewer, on the datasets in ../shared/data.

For each dataset, each configuration runs in a fresh Python process (its peak RSS is that child's
alone, read with wait4):

- `encoder pass`: one pass of labeljury's shared encoder (`get_encoder(DEFAULT_ENCODER).encode`) over
  the unique texts, the floor. Model loading is timed apart from encoding.
- `no review`: the pipeline with `review.budget: 0`. No row is reviewed, so no bootstrap sample and
  no trainable head is ever fitted: the labels are the vote of the specialists that need no training
  (zero-shot, plus VADER or profanity-check where their labels map onto the task's). Target: at most
  1.25x the encoder pass.
- the pipeline with the gold reviewer at each `--budgets` percentage, voting soft; and majority and
  dawid-skene at `--vote-budget` (20% by default). `continual` is left at the library default.

Every pipeline run does its own encoder pass (nothing is pre-seeded): its wall time is the honest
end-to-end time of `labeljury.run`, model loading included. The time of `labeljury.evaluate` is not
included. Per-specialist accuracy "alone" and the unreviewed vote's accuracy come from the
`--details` columns through `labeljury.evaluate`.

    python benchmarks/bench_core.py                                  # every dataset, full size
    python benchmarks/bench_core.py --datasets financial-sentiment --limit 1500
    python benchmarks/bench_core.py --budgets 10,20,26 --vote-budget 20 --out results.json

Results: benchmarks/results/bench_core[-limitN].json; a markdown table on stdout.
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
    budget_value,
    cleanup,
    fmt,
    labels_of,
    limit_suffix,
    make_workdir,
    measure,
    parse_percents,
    pick_datasets,
    prepare_input,
    task_dict,
    write_results,
)


def configurations(budgets: list[float], vote_budget: float | None, votings: list[str]) -> list[dict[str, Any]]:
    configs = [{"name": "no review", "percent": 0.0, "voting": "soft"}]
    configs += [{"name": f"gold {b:g}% soft", "percent": b, "voting": "soft"} for b in budgets if b > 0]
    if vote_budget is not None:
        configs += [{"name": f"gold {vote_budget:g}% {v}", "percent": vote_budget, "voting": v}
                    for v in votings if v != "soft" or vote_budget not in budgets]
    return configs


def run_dataset(ds, args, workdir: Path) -> dict[str, Any]:
    inp = prepare_input(ds, args.limit, workdir)
    labels = labels_of(ds)
    print(f"## {ds.name} ({inp.name}, labels {labels})", file=sys.stderr)
    out: dict[str, Any] = {"input": str(inp) if args.limit else str(ds.path), "labels": labels, "runs": []}
    enc = measure({"kind": "encode", "input": str(inp), "text_column": ds.text_column}, workdir)
    out["encoder"] = enc
    print(f"  encoder pass: {enc.get('encode_seconds')} s encode + {enc.get('load_seconds')} s load, "
          f"peak {enc['peak_rss_mb']} MB {enc.get('error', '')}", file=sys.stderr)
    for cfg in configurations(args.budgets, args.vote_budget, args.votings):
        tag = cfg["name"].replace(" ", "_").replace("%", "pct")
        task = task_dict(ds, labels, budget_value(cfg["percent"]), voting=cfg["voting"], seed=args.seed)
        task_path = workdir / f"{ds.name}-{tag}.yaml"
        task_path.write_text(yaml.safe_dump(task, sort_keys=False))
        res = measure({"kind": "pipeline", "task_path": str(task_path), "input": str(inp),
                       "output": str(workdir / f"{ds.name}-{tag}.out.csv"), "run_dir": str(workdir / f"{ds.name}-{tag}.run"),
                       "gold_column": ds.label_column}, workdir)
        res.update(config=cfg, task=task)
        if enc.get("encode_seconds") and res.get("wall_seconds"):
            res["x_encoder_pass"] = round(res["wall_seconds"] / enc["encode_seconds"], 2)
            res["x_encoder_load_and_pass"] = round(res["wall_seconds"] / (enc["encode_seconds"] + enc["load_seconds"]), 2)
        out["runs"].append(res)
        print(f"  {cfg['name']}: acc {fmt(res.get('accuracy'), True)} review {fmt(res.get('review_rate'), True)} "
              f"{res.get('wall_seconds')} s peak {res['peak_rss_mb']} MB {res.get('error', '')}", file=sys.stderr)
    return out


def print_tables(results: dict[str, Any]) -> None:
    print("| dataset | configuration | rows | accuracy % | macro-F1 | review rate % | vote alone % | wall s "
          "| x encoder pass | rows/s | peak RSS MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, d in results["datasets"].items():
        e = d["encoder"]
        print(f"| {name} | encoder pass (floor): {fmt(e.get('encode_seconds'))} s encode, "
              f"+{fmt(e.get('load_seconds'))} s model load | {e.get('texts', '—')} | | | | | "
              f"{fmt(e.get('encode_seconds'))} | 1.00 | {fmt(e.get('texts_per_second'), digits=0)} | {e['peak_rss_mb']} |")
        for r in d["runs"]:
            if "error" in r:
                print(f"| {name} | {r['config']['name']} | — | error: {r['error'][:80]} | | | | | | | {r['peak_rss_mb']} |")
                continue
            print(f"| {name} | {r['config']['name']} | {r['rows']} | {fmt(r['accuracy'], True)} | {r['macro_f1']:.3f} | "
                  f"{fmt(r['review_rate'], True)} | {fmt(r.get('vote_accuracy'), True)} | {fmt(r['wall_seconds'])} | "
                  f"{fmt(r.get('x_encoder_pass'), digits=2)} | {fmt(r['rows_per_second'], digits=0)} | {r['peak_rss_mb']} |")
    print("\nEach specialist alone (accuracy % over all rows of that run's details; a trainable head is "
          "scored as it was at the end of the run):\n")
    print("| dataset | configuration | " + "specialist accuracies |")
    print("|---|---|---|")
    for name, d in results["datasets"].items():
        for r in d["runs"]:
            if "error" in r:
                continue
            accs = ", ".join(f"{k} {100 * v:.1f}" for k, v in (r.get("specialist_accuracy") or {}).items())
            print(f"| {name} | {r['config']['name']} | {accs or '—'} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", help="comma-separated (default: financial-sentiment,tweet-sentiment,offensive)")
    p.add_argument("--budgets", default="10,20,26", help="review budgets in percent of rows, voting soft (default 10,20,26)")
    p.add_argument("--vote-budget", type=float, default=20.0, help="budget (percent) of the voting comparison; -1: skip")
    p.add_argument("--votings", default="soft,majority,dawid-skene", help="votings compared at --vote-budget")
    p.add_argument("--limit", type=int, help="only the first N rows of each dataset (quick checks)")
    p.add_argument("--seed", type=int, default=0, help="the task's seed")
    p.add_argument("--out", help="results JSON (default benchmarks/results/bench_core[-limitN].json)")
    p.add_argument("--keep-runs", action="store_true", help="keep run directories and outputs (in a temp folder)")
    args = p.parse_args()
    args.budgets = parse_percents(args.budgets)
    args.vote_budget = None if args.vote_budget < 0 else args.vote_budget
    args.votings = [v.strip() for v in args.votings.split(",") if v.strip()]

    datasets = pick_datasets(args.datasets, ["financial-sentiment", "tweet-sentiment", "offensive"])
    if not datasets:
        sys.exit("no dataset found under ../shared/data; nothing to benchmark")
    workdir = make_workdir(args.keep_runs)
    results: dict[str, Any] = {"benchmark": "bench_core", "when": dt.datetime.now().isoformat(timespec="seconds"),
                               "machine": {"python": platform.python_version(), "cpus": len(__import__("os").sched_getaffinity(0))},
                               "limit": args.limit, "seed": args.seed, "command": " ".join(sys.argv),
                               "note": "each pipeline run includes its own encoder pass and model loading",
                               "datasets": {}}
    try:
        for ds in datasets:
            results["datasets"][ds.name] = run_dataset(ds, args, workdir)
            path = write_results(f"bench_core{limit_suffix(args.limit)}.json", results, args.out)
    finally:
        cleanup(workdir, args.keep_runs)
    print_tables(results)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
