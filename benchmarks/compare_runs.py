"""Same outputs before and after a change that must not change behaviour (a refactoring).

    python benchmarks/compare_runs.py run OUT_DIR [--configs financial-sentiment:10,...] [--weighed]
    python benchmarks/compare_runs.py diff OUT_DIR_A OUT_DIR_B

`run` labels each dataset at each budget (gold reviewer, task files as `benchlib.task_dict` writes them),
each in a fresh child process, and keeps in OUT_DIR every output (with `--details`), the run's trust
estimate and status summary, and its wall time. `--weighed` adds one run with a weighed reviewer that is
often wrong (benchmarks/simulated_reviewer.py, 70% right, the `hard` variant) on financial-sentiment at 10%.
Run it once with the old code (e.g. `PYTHONPATH=OLD_CHECKOUT/src`) and once with the new.

`diff` compares two such folders row by row: the label, the source, the flag, the vote, each specialist's
vote, the confidence (to 1e-9) and the estimate (to 1e-12), and prints the wall times side by side. Exit 1
when anything differs. Reads ../shared/data; skips datasets that are absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import DATASETS, budget_value, labels_of, task_dict  # noqa: E402

DEFAULT = ("financial-sentiment:10,financial-sentiment:20,tweet-sentiment:10,tweet-sentiment:20,"
           "offensive:10,offensive:20")
COMPARED = ("annotation", "annotation_source", "annotation_flag", "annotation_vote", "annotation_votes",
            "annotation_review")


def _child(spec: dict) -> None:
    """One run, in this (child) process."""
    import yaml

    import labeljury
    from labeljury.status import run_status

    out = Path(spec["out"])
    task_path = out / "task.yaml"
    task_path.write_text(yaml.safe_dump(spec["task"]))
    task = labeljury.load_task(task_path)
    reviewer = None
    if spec.get("simulated"):
        from simulated_reviewer import SimulatedReviewer

        reviewer = SimulatedReviewer(spec["input"], "label", task.label_names, 0.7, "hard", 0, True)
    t0 = time.perf_counter()
    report = labeljury.run(task, spec["input"], out / "labeled.csv", out / "run", details=True, reviewer=reviewer)
    wall = time.perf_counter() - t0
    status = run_status(out / "run")
    (out / "summary.json").write_text(json.dumps(
        {"status": report.status, "wall_seconds": round(wall, 2), "sources": report.sources,
         "trust": {k: status[k] for k in ("estimates", "calibrated_on", "audit_rows")},
         "weighing": status.get("weighing"), "specialists": status.get("specialists")}, indent=1, default=str, sort_keys=True))


def run(out_dir: Path, configs: list[tuple[str, int]], weighed: bool) -> None:
    jobs = [(name, pct, False) for name, pct in configs] + ([("financial-sentiment", 10, True)] if weighed else [])
    for name, pct, simulated in jobs:
        ds = DATASETS[name]
        if not ds.path.is_file():
            print(f"skipping {name}: {ds.path} is absent", file=sys.stderr)
            continue
        out = out_dir / f"{name}-{pct}{'-weighed' if simulated else ''}"
        out.mkdir(parents=True, exist_ok=True)
        spec = {"out": str(out), "input": str(ds.path), "simulated": simulated,
                "task": task_dict(ds, labels_of(ds), budget_value(pct))}
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "child", json.dumps(spec)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        took = time.perf_counter() - t0
        if proc.returncode:
            print(f"{out.name}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        print(f"{out.name}: {took:.1f} s", flush=True)


def diff(a: Path, b: Path) -> int:
    import numpy as np
    import pandas as pd

    bad = 0
    for da in sorted(p for p in a.iterdir() if (p / "labeled.csv").exists()):
        db = b / da.name
        if not (db / "labeled.csv").exists():
            print(f"{da.name}: missing in {b}")
            bad += 1
            continue
        fa = pd.read_csv(da / "labeled.csv", keep_default_na=False, dtype=str)
        fb = pd.read_csv(db / "labeled.csv", keep_default_na=False, dtype=str)
        problems = [] if len(fa) == len(fb) else [f"{len(fa)} vs {len(fb)} rows"]
        if not problems:
            for col in COMPARED:
                if col in fa and not (fa[col] == fb[col]).all():
                    problems.append(f"{col}: {int((fa[col] != fb[col]).sum())} rows differ")
            ca = pd.to_numeric(fa["annotation_confidence"], errors="coerce").to_numpy()
            cb = pd.to_numeric(fb["annotation_confidence"], errors="coerce").to_numpy()
            if not np.allclose(ca, cb, atol=1e-9, equal_nan=True):
                problems.append(f"confidence: max difference {np.nanmax(np.abs(ca - cb)):.3g}")
        sa, sb = (json.loads((d / "summary.json").read_text()) for d in (da, db))
        ta, tb = json.dumps(sa["trust"], sort_keys=True), json.dumps(sb["trust"], sort_keys=True)
        if ta != tb and not _close(sa["trust"], sb["trust"]):
            problems.append(f"estimate: {ta[:200]} vs {tb[:200]}")
        if sa["sources"] != sb["sources"]:
            problems.append(f"sources: {sa['sources']} vs {sb['sources']}")
        verdict = "identical" if not problems else "; ".join(problems)
        print(f"{da.name}: {verdict} (wall {sa['wall_seconds']} s -> {sb['wall_seconds']} s)")
        bad += bool(problems)
    return 1 if bad else 0


def _close(x: object, y: object) -> bool:
    if isinstance(x, dict) and isinstance(y, dict):
        return x.keys() == y.keys() and all(_close(x[k], y[k]) for k in x)
    if isinstance(x, list) and isinstance(y, list):
        return len(x) == len(y) and all(_close(p, q) for p, q in zip(x, y, strict=True))
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= 1e-12
    return x == y


def main() -> int:
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "child":
        _child(json.loads(args[1]))
        return 0
    if len(args) >= 2 and args[0] == "run":
        configs = DEFAULT
        if "--configs" in args:
            configs = args[args.index("--configs") + 1]
        pairs = [(c.split(":")[0], int(c.split(":")[1])) for c in configs.split(",") if c]
        run(Path(args[1]), pairs, "--weighed" in args)
        return 0
    if len(args) == 3 and args[0] == "diff":
        return diff(Path(args[1]), Path(args[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
