"""What the label count costs a multi-label run (issue "multi-label tasks"): the same texts labeled with 3 and
with 118 labels, time and peak memory of `labeljury run` (gold reviewer, 10% budget).

The texts are synthetic (no data set here has both label counts over one text set): each of the 118 labels owns
five made-up keywords; a text carries one or two labels (a label's three keywords each) and eight filler words of
a shared pool. The 3-label task labels the same texts with the labels' groups (label j -> group j mod 3). The
encoder pass is the same for both and is paid once, outside the runs (all-MiniLM-L6-v2, cached), so what is
measured is what grows with the labels: the heads' fits, the stages' scoring, calibration, the estimate, output.
Each run is a child process: its peak RSS is its own.

    python benchmarks/multilabel_scale.py --rows 20000

A markdown table on stdout; results in benchmarks/results/multilabel_scale.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import write_results  # noqa: E402

N_LABELS = 118


def make_data(rows: int, seed: int = 0) -> tuple[list[str], list[list[int]]]:
    rng = np.random.default_rng(seed)
    syll = ["ka", "lo", "mi", "nu", "pe", "ri", "so", "ta", "ve", "zu", "ba", "de"]
    def word() -> str:
        return "".join(rng.choice(syll, 3))
    keywords = [[word() for _ in range(5)] for _ in range(N_LABELS)]
    filler = [word() for _ in range(2000)]
    texts, sets = [], []
    for _ in range(rows):
        labels = sorted(rng.choice(N_LABELS, 1 if rng.random() < 0.7 else 2, replace=False).tolist())
        words = [w for j in labels for w in rng.choice(keywords[j], 3, replace=False)] + list(rng.choice(filler, 8))
        rng.shuffle(words)
        texts.append(" ".join(words))
        sets.append(labels)
    return texts, sets


def child(spec_path: str) -> None:
    """One run, in this process; prints its seconds and peak RSS as JSON."""
    spec = json.loads(Path(spec_path).read_text())
    from multilabel_run import serve_embeddings

    from labeljury import pipeline
    from labeljury.task import Task

    import pandas as pd

    texts = pd.read_csv(spec["input"])["text"].tolist()
    serve_embeddings(texts, np.load(spec["embeddings"]))
    task = Task.model_validate(spec["task"])
    t0 = time.perf_counter()
    report = pipeline.run(task, spec["input"], spec["output"])
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "reviews": report.reviews}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    import pandas as pd

    texts, sets = make_data(args.rows)
    out_rows = []
    print("| labels | rows | run s | ms a row | peak RSS MB | reviews |\n|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from labeljury.specialists import DEFAULT_ENCODER, get_encoder

        t0 = time.perf_counter()
        E = get_encoder(DEFAULT_ENCODER).encode(texts)  # noqa: N806
        print(f"  encoded {len(texts)} texts in {time.perf_counter() - t0:.0f} s (not counted)", file=sys.stderr)
        np.save(work / "emb.npy", E)
        for k in (3, N_LABELS):
            names = [f"label{j:03d}" for j in range(k)]
            labels = ["|".join(sorted({names[j % k] for j in s})) for s in sets]
            data = work / f"in{k}.csv"
            pd.DataFrame({"text": texts, "labels": labels}).to_csv(data, index=False)
            spec = {"input": str(data), "output": str(work / f"out{k}.csv"), "embeddings": str(work / "emb.npy"),
                    "task": {"name": f"synthetic-{k}", "labels": names, "multi_label": True,
                             "reviewer": [{"kind": "gold", "column": "labels"}], "review": {"budget": args.budget}}}
            (work / f"spec{k}.json").write_text(json.dumps(spec))
            done = subprocess.run([sys.executable, __file__, "--child", str(work / f"spec{k}.json")],
                                  capture_output=True, text=True, check=True)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            r.update(labels=k, rows=args.rows)
            out_rows.append(r)
            print(f"| {k} | {args.rows} | {r['seconds']:.1f} | {1000 * r['seconds'] / args.rows:.2f} | "
                  f"{r['peak_rss_mb']:.0f} | {r['reviews']} |", flush=True)
    write_results("multilabel_scale.json", {"when": dt.datetime.now().isoformat(timespec="seconds"), "runs": out_rows},
                  None)


if __name__ == "__main__":
    main()
