"""How each step's cost grows with the number of rows: the pipeline at 10k, 100k (and 1M) rows.

    python benchmarks/bench_growth.py [--sizes 10000,100000] [--budget 10 | --budget-rows N] [--out FILE] [--keep]

The input of each size is built from the tweet texts in ../shared/data (tweet-sentiment and
tweeteval-sentiment, all splits: about 41k labeled tweets; the label sets are the same), cycled, with a
round marker appended from the second round on (" ~2", " ~3", ...) so that every row is a distinct text
and deduplication does not shrink the input. It lives in a temporary folder, never in the repository.

Each size runs in a fresh Python process: `labeljury.run` with the issue's specialists (vader, nb-head,
tfidf-head), the gold reviewer at `--budget` percent (or `--budget-rows` rows at every size: what
is left growing with the input is then the rows themselves), seed 0; then `export` and `evaluate`. A progress
object that times every progress bar gives the steps; the time between two bars (routing, voting, the
refits, which draw no bar) is reported as its own step, named after the bar before it. Per step:
seconds, seconds per 1k rows, the process's peak RSS when the step ended. Per size: wall time, peak RSS
(the child's own, from wait4), the run store's size on disk, reviews spent against the budget plan.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402
from benchlib import DATA_DIR, cleanup, make_workdir, write_results  # noqa: E402

SOURCES = [DATA_DIR / "tweet-sentiment" / "annotate.csv", DATA_DIR / "tweet-sentiment" / "rest.csv",
           DATA_DIR / "tweeteval-sentiment" / "test.csv", DATA_DIR / "tweeteval-sentiment" / "valid.csv"]
SPECIALISTS = [{"id": "vader"}, {"id": "nb-head"}, {"id": "tfidf-head"}]


def build_input(n: int, path: Path) -> list[str]:
    """`n` distinct tweets with their gold labels, as CSV at `path`; returns the label set."""
    import pandas as pd

    pool = pd.concat([pd.read_csv(p, keep_default_na=False, dtype=str) for p in SOURCES if p.is_file()])
    pool = pool[pool["text"].str.strip() != ""].drop_duplicates("text").reset_index(drop=True)
    if pool.empty:
        sys.exit(f"no tweet texts under {DATA_DIR}: tweet-sentiment and tweeteval-sentiment are absent")
    rounds = -(-n // len(pool))
    parts = []
    for r in range(rounds):
        part = pool.copy()
        if r:
            part["text"] = part["text"] + f" ~{r + 1}"
        parts.append(part)
    frame = pd.concat(parts).head(n)
    assert frame["text"].is_unique
    frame.to_csv(path, index=False)
    return sorted(frame["label"].unique())


class StepTimer:
    """A labeljury Progress that records how long each bar lasted, and the gaps between bars."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self._last_end = time.perf_counter()
        self._last_name = "start"

    def _gap(self, now: float) -> None:
        if now - self._last_end > 0.05:
            self.steps.append({"step": f"after {self._last_name}", "seconds": now - self._last_end,
                               "bar": False, "peak_rss_mb": _peak_mb()})

    @contextmanager
    def bar(self, description: str, total: int | None, unit: str = "rows"):  # noqa: ANN201
        t0 = time.perf_counter()
        self._gap(t0)

        class _B:
            def advance(self, n: int = 1) -> None:
                pass

        yield _B()
        t1 = time.perf_counter()
        name = description.split(":")[0].split(" (")[0]
        self.steps.append({"step": name, "seconds": t1 - t0, "bar": True, "total": total, "unit": unit,
                           "peak_rss_mb": _peak_mb()})
        self._last_end, self._last_name = t1, name

    def log(self, message: str) -> None:
        pass

    def end(self, label: str) -> None:
        self._gap(time.perf_counter())
        self._last_end, self._last_name = time.perf_counter(), label


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _dir_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6, 1)


def _merge(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Steps of the same name (one per stage) summed; peak RSS is the largest seen at their ends."""
    out: dict[str, dict[str, Any]] = {}
    for s in steps:
        m = out.setdefault(s["step"], {"seconds": 0.0, "times": 0, "peak_rss_mb": 0.0})
        m["seconds"] += s["seconds"]
        m["times"] += 1
        m["peak_rss_mb"] = max(m["peak_rss_mb"], s["peak_rss_mb"])
    return out


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import yaml

    import labeljury
    from labeljury.pipeline.export import export
    from labeljury.progress import SilentProgress
    from labeljury.store import RunStore

    inp, work = Path(spec["input"]), Path(spec["work"])
    task = {"name": "growth", "labels": spec["labels"], "text_column": "text", "specialists": SPECIALISTS,
            "reviewer": {"kind": "gold", "column": "label"}, "review": {"budget": spec["budget"]}, "seed": 0}
    (work / "task.yaml").write_text(yaml.safe_dump(task))
    timer = StepTimer()
    out, run_dir = work / "out.csv", work / "out.csv.run"
    t0 = time.perf_counter()
    report = labeljury.run(labeljury.load_task(work / "task.yaml"), inp, out, run_dir, progress=timer)
    timer.end("run")
    run_s = time.perf_counter() - t0
    with RunStore.existing(run_dir) as store:
        plan = store.get_meta("budget_plan")
        t1 = time.perf_counter()
        export(store, inp, work / "again.csv", details=False, progress=SilentProgress())
        export_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    ev = labeljury.evaluate(out, "label", run_dir)
    eval_s = time.perf_counter() - t2
    timer.steps.append({"step": "export (again)", "seconds": export_s, "bar": False, "peak_rss_mb": _peak_mb()})
    timer.steps.append({"step": "eval", "seconds": eval_s, "bar": False, "peak_rss_mb": _peak_mb()})
    return {"rows": report.rows, "texts": report.texts, "status": report.status, "run_seconds": round(run_s, 1),
            "reviews": report.reviews, "budget_rows": report.budget, "budget_plan": plan,
            "accuracy": ev.accuracy, "store_mb": _dir_mb(run_dir), "output_mb": round(out.stat().st_size / 1e6, 1),
            "steps": timer.steps, "by_step": _merge(timer.steps)}


def measure(n: int, budget: float | int, work: Path) -> dict[str, Any]:
    """One size, in a fresh process (`benchlib.measure`: its peak RSS and wall time are its own)."""
    size_dir = work / f"n{n}"
    size_dir.mkdir(parents=True, exist_ok=True)
    inp = size_dir / "input.csv"
    labels = build_input(n, inp)
    spec = {"kind": "growth", "module": "bench_growth", "input": str(inp), "work": str(size_dir),
            "labels": labels, "budget": budget}
    result = benchlib.measure(spec, size_dir)
    result.setdefault("rows", n)
    result["input_mb"] = round(inp.stat().st_size / 1e6, 1)
    return result


def table(results: list[dict[str, Any]]) -> str:
    ok = [r for r in results if "error" not in r]
    names: list[str] = []
    for r in ok:
        names += [s for s in r["by_step"] if s not in names]
    head = "| step | " + " | ".join(f"{r['rows']:,} rows: s | s/1k rows | peak RSS MB" for r in ok) + " |"
    lines = [head, "|---|" + "---:|---:|---:|" * len(ok)]
    for name in names:
        cells = []
        for r in ok:
            m = r["by_step"].get(name)
            cells += ["—"] * 3 if m is None else [f"{m['seconds']:.1f}", f"{1000 * m['seconds'] / r['rows']:.3f}",
                                                  f"{m['peak_rss_mb']:.0f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **whole run (process)** | " + " | ".join(
        f"{r['process_seconds']:.1f} | {1000 * r['process_seconds'] / r['rows']:.3f} | {r['peak_rss_mb']:.0f}"
        for r in ok) + " |")
    lines.append("")
    lines.append("| rows | reviews / budget | accuracy % | run store MB | input MB |")
    lines.append("|---:|---:|---:|---:|---:|")
    for r in ok:
        lines.append(f"| {r['rows']:,} | {r['reviews']:,} / {r['budget_rows']:,} | {100 * r['accuracy']:.2f} | "
                     f"{r['store_mb']} | {r['input_mb']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000", help="rows, comma-separated")
    ap.add_argument("--budget", type=float, default=10.0, help="percent of rows to review")
    ap.add_argument("--budget-rows", type=int, help="rows to review at every size (instead of --budget)")
    ap.add_argument("--out")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = make_workdir(args.keep)
    results = []
    for n in [int(s) for s in args.sizes.split(",") if s.strip()]:
        print(f"{n:,} rows ...", file=sys.stderr)
        results.append(measure(n, args.budget_rows or round(args.budget / 100, 6), work))
        print(json.dumps({k: v for k, v in results[-1].items() if k not in ("steps", "by_step")}), file=sys.stderr)
    payload = {"sizes": results, "machine": f"{sys.platform}, {os.cpu_count()} CPUs",
               "budget_percent": None if args.budget_rows else args.budget, "budget_rows": args.budget_rows}
    path = write_results("growth.json", payload, args.out)
    print(table(results))
    print(f"wrote {path}", file=sys.stderr)
    cleanup(work, args.keep)


if __name__ == "__main__":
    main()
