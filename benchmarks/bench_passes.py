"""What the passes over every row hold in memory: a finished run resumed for its last stage's routing
and its finalize, under tracemalloc, at several sizes.

    python benchmarks/bench_passes.py [--sizes 300000,1000000] [--budget-rows 10000] [--keep]

Per size: the growth benchmark's input (`bench_growth.build_input`: distinct tweets) is labeled by a
full run in a fresh process (vader, nb-head, tfidf-head; gold reviewer; the same `--budget-rows`
reviews at every size, so the reviewed rows do not grow with the input). Then the run's last stage's
routing and its finalize are marked undone, and the same command resumes it in another fresh
process, under tracemalloc: it votes every row to pick that stage's rows, weighs the answers,
finalizes every row (vote, calibrated confidence, provenance, the estimate), writes the plan and the
output. No encoder, no refit: what it holds is the passes over the rows. Reported: the peak of
Python's and numpy's allocations (tracemalloc), the process's peak RSS, seconds. Run it with
PYTHONPATH pointing at another checkout's `src` to measure that code on its own runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from bench_growth import SPECIALISTS, build_input  # noqa: E402
from benchlib import cleanup, make_workdir, write_results  # noqa: E402


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import yaml

    import labeljury
    from labeljury.sources import FINALIZE, route_hard
    from labeljury.store import RunStore

    inp, work = Path(spec["input"]), Path(spec["work"])
    out, run_dir = work / "out.csv", work / "out.csv.run"
    if spec["phase"] == "run":
        task = {"name": "passes", "labels": spec["labels"], "text_column": "text", "specialists": SPECIALISTS,
                "reviewer": {"kind": "gold", "column": "label"}, "review": {"budget": spec["budget"]}, "seed": 0}
        (work / "task.yaml").write_text(yaml.safe_dump(task))
        t0 = time.perf_counter()
        report = labeljury.run(labeljury.load_task(work / "task.yaml"), inp, out, run_dir)
        with RunStore(run_dir) as store:  # undo the last stage's routing and the finalize
            last = len(store.get_meta("budget_plan")["stages"]) - 1
            store.undo_steps([route_hard(last), FINALIZE])
        return {"rows": report.rows, "reviews": report.reviews, "seconds": round(time.perf_counter() - t0, 1)}
    tracemalloc.start()
    t0 = time.perf_counter()
    report = labeljury.run(labeljury.load_task(work / "task.yaml"), inp, out, run_dir)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    return {"rows": report.rows, "status": report.status, "seconds": round(seconds, 1),
            "traced_peak_mb": round(peak / 2**20, 1), "traced_peak_bytes_per_row": round(peak / report.rows, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="300000,1000000")
    ap.add_argument("--budget-rows", type=int, default=10_000)
    ap.add_argument("--out")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = make_workdir(args.keep)
    results = []
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        size_dir = work / f"n{n}"
        size_dir.mkdir(parents=True, exist_ok=True)
        inp = size_dir / "input.csv"
        labels = build_input(n, inp)
        spec = {"kind": "passes", "module": "bench_passes", "input": str(inp), "work": str(size_dir),
                "labels": labels, "budget": args.budget_rows}
        full = benchlib.measure({**spec, "phase": "run"}, size_dir)
        resumed = benchlib.measure({**spec, "phase": "resume"}, size_dir)
        results.append({"rows": n, "run": full, "resume": resumed})
        print(json.dumps(results[-1]), file=sys.stderr)
    payload = {"sizes": results, "budget_rows": args.budget_rows}
    path = write_results("passes.json", payload, args.out)
    print("| rows | resume: s | traced peak MB | traced bytes / row | peak RSS MB |")
    print("|---:|---:|---:|---:|---:|")
    for r in results:
        m = r["resume"]
        print(f"| {r['rows']:,} | {m.get('seconds')} | {m.get('traced_peak_mb')} | "
              f"{m.get('traced_peak_bytes_per_row')} | {m.get('peak_rss_mb')} |")
    print(f"wrote {path}", file=sys.stderr)
    cleanup(work, args.keep)


if __name__ == "__main__":
    main()
