"""Continual-learning benchmark (issue "Continual learning", section "Benchmark"): accuracy of the
final labels over all rows against the review rate, with continual learning on and off (the
ablation the paper lacks), stage by stage, beside the active-learning baseline and the paper's rows.

With the gold reviewer, for each dataset, budget and seed, the pipeline runs twice in fresh
processes: `continual: {enabled: true}` and `continual: {enabled: false}` (all else the library's
defaults: specialists auto, voting soft, policy margin). Recorded per run: accuracy and macro-F1
over all rows, review rate, wall time (its own encoder pass included), peak RSS, and stage by stage:
what the run store keeps (`RunStore.stages()`: training rows, held-out accuracy before/after,
promoted, fit seconds; empty when no stage was recorded) and the accuracy and review rate of the
final labels within each stage's span of the stream (from the store's `stage_plan`).

The baseline's numbers are read from benchmarks/results/active_learning_baseline[-limitN].json
(run active_learning_baseline.py with the same --limit first); the paper's rows from paper.md.

    python benchmarks/bench_continual.py
    python benchmarks/bench_continual.py --datasets financial-sentiment --budgets 10,20 --limit 1500
    python benchmarks/bench_continual.py --seeds 0,1,2

Results: benchmarks/results/bench_continual[-limitN].json; markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    PAPER_ROWS,
    RESULTS_DIR,
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

TARGETS = {  # the targets: (accuracy %, at most this % reviewed)
    "financial-sentiment": [(90.0, 20), (82.83, 10)],
    "tweet-sentiment": [(81.0, 26), (78.33, 20)],
}


def load_baseline(limit: int | None, path: str | None) -> dict[str, Any] | None:
    p = Path(path) if path else RESULTS_DIR / f"active_learning_baseline{limit_suffix(limit)}.json"
    if not p.is_file():
        return None
    data = json.loads(p.read_text())
    return data if data.get("limit") == limit else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"n": 0, "errors": [r.get("error") for r in runs]}
    mean = lambda k: float(np.mean([r[k] for r in ok]))  # noqa: E731
    return {"n": len(ok), "accuracy": mean("accuracy"), "accuracy_std": float(np.std([r["accuracy"] for r in ok])),
            "macro_f1": mean("macro_f1"), "review_rate": mean("review_rate"), "wall_seconds": mean("wall_seconds"),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in ok), "errors": [r.get("error") for r in runs if "error" in r]}


def print_tables(results: dict[str, Any], baseline: dict[str, Any] | None) -> None:
    budgets = results["budgets"]
    head = "| dataset | method | " + " | ".join(f"{b:g}%" for b in budgets) + " |"
    rule = "|---|---|" + "---:|" * len(budgets)
    print(f"Accuracy % of the final labels over all rows, by review budget (mean of seeds {results['seeds']}"
          + (f"; first {results['limit']} rows" if results["limit"] else "") + "):\n")
    print(head)
    print(rule)
    for name, d in results["datasets"].items():
        for mode in ("on", "off"):
            cells = []
            for b in budgets:
                s = d["summary"].get(f"{b:g}", {}).get(mode, {})
                cells.append(fmt(s.get("accuracy"), True) + (f" ({fmt(s.get('review_rate'), True)}% rev.)" if s.get("n") else ""))
            print(f"| {name} | labeljury, continual {mode} | " + " | ".join(cells) + " |")
        bl = (baseline or {}).get("datasets", {}).get(name)
        if bl:
            print(f"| {name} | active-learning baseline | " + " | ".join(
                fmt(bl["budgets"].get(f"{b:g}", {}).get("mean_accuracy"), True) for b in budgets) + " |")
        else:
            print(f"| {name} | active-learning baseline | " + " | ".join("not run" for _ in budgets) + " |")
        for row, vals in PAPER_ROWS.items():
            if name in vals:
                print(f"| {name} | paper: {row} | " + " | ".join(f"{vals[name]:.2f}" for _ in budgets) + " |")
    print("\n(The paper's rows are single numbers, repeated under every budget: the paper gives no review rate for "
          "its human-reviewer row; its LLM runs reviewed 26%.)\n")

    print("Wall time s / peak RSS MB (mean over seeds):\n")
    print(head)
    print(rule)
    for name, d in results["datasets"].items():
        for mode in ("on", "off"):
            cells = []
            for b in budgets:
                s = d["summary"].get(f"{b:g}", {}).get(mode, {})
                cells.append(f"{fmt(s.get('wall_seconds'))} / {fmt(s.get('peak_rss_mb'))}" if s.get("n") else "—")
            print(f"| {name} | continual {mode} | " + " | ".join(cells) + " |")

    print("\nTargets (issue): " + "; ".join(
        f"{name}: >= {acc}% with <= {b}% reviewed" for name, ts in TARGETS.items() for acc, b in ts))

    print("\nStage by stage (first seed, continual on), from the run store (`RunStore.stages()`): training rows, "
          "held-out rows, mean held-out accuracy of the trainable specialists before -> after the stage's refit, "
          "candidates promoted, fit seconds; and, where the stage plan has stream spans, the accuracy and review "
          "rate of the final labels within the stage's span:\n")
    print("| dataset | budget | stage | train rows | holdout | held-out acc % before -> after | promoted | fit s "
          "| span rows | span acc % | span review % |")
    print("|---|---:|---|---:|---:|---|---|---:|---:|---:|---:|")
    for name, d in results["datasets"].items():
        for r in d["runs"]:
            if r.get("continual") != "on" or r.get("seed") != results["seeds"][0] or "error" in r:
                continue
            metrics = r.get("stages") or []
            spans = {sp["stage"]: sp for sp in r.get("stage_accuracy") or []}
            if not metrics and not spans:
                print(f"| {name} | {r['percent']:g}% | — | no stage recorded in the run store | | | | | | | |")
            for m in metrics:
                specs = {k: v for k, v in (m.get("specialists") or {}).items() if "promoted" in v}
                before = [v["accuracy_before"] for v in specs.values() if v.get("accuracy_before") is not None]
                after = [v["accuracy_after"] for v in specs.values() if v.get("accuracy_after") is not None]
                acc = (f"{fmt(float(np.mean(before)), True)} -> {fmt(float(np.mean(after)), True)}"
                       if before and after else "—")
                promoted = f"{sum(bool(v.get('promoted')) for v in specs.values())}/{len(specs)}" if specs else "—"
                fit = sum(v.get("fit_seconds") or 0 for v in specs.values())
                sp = spans.get(m.get("stage"), {}) if not m.get("final") else {}
                label = "final" if m.get("final") else m.get("stage")
                print(f"| {name} | {r['percent']:g}% | {label} | {m.get('train_rows', '—')} | {m.get('holdout_rows', '—')} | "
                      f"{acc} | {promoted} | {fit:.1f} | {sp.get('rows', '—')} | {fmt(sp.get('accuracy'), True)} | "
                      f"{fmt(sp.get('review_rate'), True)} |")


def _cached_embeddings(folder: str, name: str) -> str:
    """emb_<dataset>.npy, or the baseline's emb_<dataset>-<digest>.npy, in `folder`."""
    exact = Path(folder) / f"emb_{name}.npy"
    found = [exact] if exact.exists() else sorted(Path(folder).glob(f"emb_{name}-[0-9a-f]*.npy"))
    if not found:
        sys.exit(f"--emb-cache: no emb_{name}.npy in {folder}; run active_learning_baseline.py first")
    return str(found[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", help="comma-separated (default: financial-sentiment,tweet-sentiment)")
    p.add_argument("--budgets", default="5,10,20,26", help="review budgets, percent of rows (default 5,10,20,26)")
    p.add_argument("--seeds", default="0", help="task seeds, comma-separated (default 0)")
    p.add_argument("--modes", default="on,off", help="continual learning on, off or both (default on,off)")
    p.add_argument("--limit", type=int, help="only the first N rows of each dataset (quick checks)")
    p.add_argument("--baseline", help="baseline results JSON (default: benchmarks/results/active_learning_baseline[-limitN].json)")
    p.add_argument("--out", help="results JSON (default benchmarks/results/bench_continual[-limitN].json)")
    p.add_argument("--keep-runs", action="store_true", help="keep run directories and outputs (in a temp folder)")
    p.add_argument("--emb-cache", help="folder with emb_<dataset>.npy made by labeljury's encoder over the same file "
                                       "(active_learning_baseline.py --emb-cache-out writes them): runs skip the "
                                       "encoder pass, which the core benchmark times")
    args = p.parse_args()
    budgets = [b for b in parse_percents(args.budgets) if b > 0]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip() in ("on", "off")]
    datasets = pick_datasets(args.datasets, ["financial-sentiment", "tweet-sentiment"])
    if not datasets:
        sys.exit("no dataset found under ../shared/data; nothing to benchmark")

    workdir = make_workdir(args.keep_runs)
    results: dict[str, Any] = {"benchmark": "bench_continual", "when": dt.datetime.now().isoformat(timespec="seconds"),
                               "limit": args.limit, "seeds": seeds, "budgets": budgets, "command": " ".join(sys.argv),
                               "note": ("embeddings read from --emb-cache: wall times exclude the encoder pass" if args.emb_cache
                                        else "each run includes its own encoder pass and model loading"), "datasets": {}}
    path = None
    try:
        for ds in datasets:
            inp = prepare_input(ds, args.limit, workdir)
            labels = labels_of(ds)
            d: dict[str, Any] = {"input": str(inp), "labels": labels, "runs": [], "summary": {}}
            results["datasets"][ds.name] = d
            for b in budgets:
                for mode in modes:
                    runs = []
                    for seed in seeds:
                        tag = f"{ds.name}-{b:g}pct-{mode}-s{seed}"
                        task = task_dict(ds, labels, budget_value(b), continual=(mode == "on"), seed=seed)
                        task_path = workdir / f"{tag}.yaml"
                        task_path.write_text(yaml.safe_dump(task, sort_keys=False))
                        res = measure({"kind": "pipeline", "task_path": str(task_path), "input": str(inp),
                                       "output": str(workdir / f"{tag}.out.csv"), "run_dir": str(workdir / f"{tag}.run"),
                                       "gold_column": ds.label_column,
                                       **({"emb_cache": _cached_embeddings(args.emb_cache, ds.name)}
                                          if args.emb_cache and not args.limit else {})}, workdir)
                        res.update(percent=b, continual=mode, seed=seed, task=task)
                        runs.append(res)
                        d["runs"].append(res)
                        print(f"  {tag}: acc {fmt(res.get('accuracy'), True)} review {fmt(res.get('review_rate'), True)} "
                              f"{res.get('wall_seconds')} s, {len(res.get('stages') or [])} stages stored "
                              f"{res.get('error', '')}", file=sys.stderr)
                    d["summary"].setdefault(f"{b:g}", {})[mode] = summarize(runs)
                    path = write_results(f"bench_continual{limit_suffix(args.limit)}.json", results, args.out)
    finally:
        cleanup(workdir, args.keep_runs)
    baseline = load_baseline(args.limit, args.baseline)
    results["baseline"] = None if baseline is None else {
        n: {k: v["mean_accuracy"] for k, v in x["budgets"].items()} for n, x in baseline["datasets"].items()}
    results["paper"] = PAPER_ROWS
    path = write_results(f"bench_continual{limit_suffix(args.limit)}.json", results, args.out)
    print_tables(results, baseline)
    if baseline is None:
        print(f"\n(no baseline results for limit={args.limit}: run benchmarks/active_learning_baseline.py"
              + (f" --limit {args.limit}" if args.limit else "") + " first)")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
