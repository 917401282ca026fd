"""A real LLM as the reviewer: its recorded answers replayed (`replay_llm.py`), on the three llm-answers sets.

    python benchmarks/bench_real_llm.py [--sets hate,offensive,emotion] [--runs gpt35_zero,gpt4_zero]
                                        [--budgets 26,8] [--modes llm,llm+people] [--seeds 0] [--out FILE]

For each set (../shared/data/llm-answers/<set>.csv: the texts, the gold label, one column per recorded
run), recorded run, budget (% of rows) and mode, one labeljury run in a fresh child process:
- `llm`: `reviewer: {kind: llm}` (weighed, the default), the LLM its only reviewer (it answers the audit too);
- `llm+people`: `[{kind: llm}, {kind: gold}]`: people (the gold column) answer the audit (at most 1,000 rows,
  inside the budget) and what the LLM cannot settle; the LLM also answers, blind, the audit rows a stage
  would have sent it (inside the budget), which measures it;
- `gold`: the gold column as the only reviewer (a perfect one): what the specialists reach at this budget.
The specialists are `auto`'s (given as a list: with an `llm:` section `auto` would ask the LLM to choose).
Reported: accuracy of the output against gold, beside the LLM alone on every row (its recorded accuracy);
LLM calls; the run's own estimate with its 95% interval, and whether the interval covers the truth.
Results (JSON) go to benchmarks/results/real_llm.json; a markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from benchlib import DATA_DIR, RESULTS_DIR  # noqa: E402

SETS = ("hate", "offensive", "emotion")


def child(spec: dict) -> dict:
    import pandas as pd
    import yaml
    from replay_llm import ReplayLLMServer

    import labeljury
    from labeljury.specialists.catalog import auto_specialists
    from labeljury.status import run_status

    work = Path(spec["work"])
    df = pd.read_csv(DATA_DIR / "llm-answers" / f"{spec['set']}.csv", keep_default_na=False, dtype=str)
    df[["text", "label"]].to_csv(work / "in.csv", index=False)
    labels = sorted(df["label"].unique())
    llm_alone = float((df[spec["run"]] == df["label"]).mean())
    reviewer = {"llm": {"kind": "llm"}, "llm+people": [{"kind": "llm"}, {"kind": "gold", "column": "label"}],
                "gold": {"kind": "gold", "column": "label"}}[spec["mode"]]
    task = {"name": f"real-llm-{spec['set']}", "labels": labels, "text_column": "text", "voting": "soft",
            "review": {"budget": round(spec["budget"] / 100, 4)}, "reviewer": reviewer, "seed": spec.get("seed", 0)}
    # the specialists `auto` picks without an LLM (the gold reviewer stands in only to make a valid task)
    auto = auto_specialists(labeljury.task.Task.model_validate({**task, "specialists": "auto",
                                                                "reviewer": {"kind": "gold", "column": "label"}}))
    task["specialists"] = [s.model_dump(mode="json", exclude_defaults=True) for s in auto]
    with ReplayLLMServer(dict(zip(df["text"], df[spec["run"]]))) as server:
        task["llm"] = {"model": "gpt-3.5-turbo", "base_url": server.base_url, "api_key_env": None, "batch_size": 1,
                       "budget_usd": None, "max_retries": 0}
        (work / "task.yaml").write_text(yaml.safe_dump(task))
        t0 = time.perf_counter()
        from labeljury.context import Tuning

        report = labeljury.run(labeljury.load_task(work / "task.yaml"), work / "in.csv", work / "out.csv",
                               work / "run", details=True, tuning=Tuning(**spec.get("tuning", {})))
        wall = time.perf_counter() - t0
        calls = int(server.counts["answered"])
    ev = labeljury.evaluate(work / "out.csv", "label", work / "run")
    status = run_status(work / "run")
    out = pd.read_csv(work / "out.csv", keep_default_na=False, dtype=str)
    by_source = {src: {"rows": int(len(g)), "true": float((g["annotation"] == g["label"]).mean()),
                       "estimated": ((status.get("estimates") or {}).get("by_source") or {}).get(src)}
                 for src, g in out.groupby("annotation_source")}
    return {**{k: spec[k] for k in ("set", "run", "budget", "mode")}, "seed": spec.get("seed", 0), "rows": len(df), "status": report.status,
            "accuracy": ev.accuracy, "llm_alone": llm_alone, "llm_calls": calls, "llm_call_share": calls / len(df),
            "people_reviews": int(out["annotation_source"].eq("reviewed:gold").sum()),
            "estimated": ev.estimated_accuracy, "low": ev.estimated_accuracy_low, "high": ev.estimated_accuracy_high,
            "covered": ev.estimate_covers_truth, "estimate_note": getattr(ev, "estimate_note", None),
            "weighing": status.get("weighing"), "by_source": by_source, "wall_seconds": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--runs", default="gpt35_zero,gpt4_zero")
    ap.add_argument("--budgets", default="26,8")
    ap.add_argument("--modes", default="llm,llm+people")
    ap.add_argument("--out", default=str(RESULTS_DIR / "real_llm.json"))
    ap.add_argument("--keep", help="keep each run's folder under this directory")
    ap.add_argument("--seeds", default="0", help="run seeds, e.g. 0,1,2")
    ap.add_argument("--tuning", default="", help="Tuning fields for every run, e.g. learn_measured=1")
    args = ap.parse_args()
    if not (DATA_DIR / "llm-answers").is_dir():
        sys.exit(f"skipping: {DATA_DIR / 'llm-answers'} is absent")
    results = []
    configs = [(s, run, float(b), m, int(sd)) for s in args.sets.split(",") for run in args.runs.split(",")
               for b in args.budgets.split(",") for m in args.modes.split(",") for sd in args.seeds.split(",")]
    for s, run, budget, mode, seed in configs:
        with tempfile.TemporaryDirectory(prefix="labeljury-real-llm-") as tmp:
            work = tmp
            if args.keep:
                work = str(Path(args.keep) / f"{s}-{run}-{budget:g}-{mode}-{seed}")
                Path(work).mkdir(parents=True, exist_ok=True)
            spec = {"set": s, "run": run, "budget": budget, "mode": mode, "work": work, "seed": seed,
                    "tuning": {k: bool(int(v)) for k, v in (kv.split("=") for kv in args.tuning.split(",") if kv)}}
            env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
            proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env,
                                  capture_output=True, text=True)
            if proc.returncode:
                print(f"{s} {run} {budget} {mode} seed {seed}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(r)
            print(row(r), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def row(r: dict) -> str:
    interval = "" if r["low"] is None else f" [{pct(r['low'])}, {pct(r['high'])}]"
    est = "cannot be estimated" if r["estimated"] is None else f"{pct(r['estimated'])}{interval}"
    if r["estimated"] is not None and r.get("estimate_note") and r["low"] is not None:  # no point to ship on
        est = f"between {pct(r['low'])} and {pct(r['high'])}"
    covers = {True: "yes", False: "**no**", None: "-"}[r["covered"]]
    return (f"| {r['set']} | {r['run']} | {r['budget']:g}% | {r['mode']} | {r.get('seed', 0)} | {pct(r['llm_alone'])} | "
            f"{pct(r['accuracy'])} | {r['llm_calls']} ({pct(r['llm_call_share'])}%) | {r['people_reviews']} | "
            f"{est} | {covers} |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(json.loads(sys.argv[2])), default=str))
    else:
        print("| set | LLM run | budget | reviewer | seed | LLM alone % | labeljury % | LLM calls | people | "
              "estimate % [95%] | covers? |\n|---|---|---:|---|---:|---:|---:|---:|---:|---|---|")
        main()
