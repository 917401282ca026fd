"""The Ray engine's overhead: the encoder pass over the same rows, local engine vs Ray engine on a Ray
cluster of two nodes started on this machine (one CPU each), and rows per second of each.

    python benchmarks/bench_engine.py --rows 20000      # ~10 min on a 2-core CPU

Each engine encodes into a fresh run store; the texts are tweet-sentiment's, made unique.
With a GPU on the machine, the Ray cluster gets it (`ray start --num-gpus`) and the encoder's
actors take one each: rows per second on the GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import DATASETS, write_results  # noqa: E402

from labeljury.engine import LocalEngine, RayEngine  # noqa: E402
from labeljury.pipeline.encode import encode  # noqa: E402
from labeljury.pipeline.ingest import ingest  # noqa: E402
from labeljury.progress import SilentProgress  # noqa: E402
from labeljury.store import RunStore  # noqa: E402


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_encode(input_path: Path, workdir: Path, engine, name: str) -> float:
    run_dir = workdir / name
    with RunStore(run_dir) as store:
        ingest(store, input_path, "text", SilentProgress())
        t0 = time.perf_counter()
        encode(store, ["minilm"], SilentProgress(), engine)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    ds = DATASETS["tweet-sentiment"]
    if not ds.path.is_file():
        sys.exit(f"{ds.path} is absent")
    workdir = Path(tempfile.mkdtemp(prefix="bench_engine_"))
    texts = pd.read_csv(ds.path)[ds.text_column].astype(str).tolist()
    rows = [f"{texts[i % len(texts)]} #{i // len(texts)}" if i >= len(texts) else texts[i] for i in range(args.rows)]
    input_path = workdir / "in.csv"
    frame = pd.DataFrame({"text": rows}).drop_duplicates()
    frame.to_csv(input_path, index=False)
    n = len(frame)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}  # a local test cluster
    port = _port()
    gpus = []
    try:
        import torch

        if torch.cuda.is_available():
            gpus = [f"--num-gpus={torch.cuda.device_count()}"]
    except ImportError:
        pass
    try:
        local_s = timed_encode(input_path, workdir, LocalEngine(), "local")
        print(f"local: {local_s:.1f} s", file=sys.stderr)
        subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                        "--disable-usage-stats", *gpus], check=True, env=env, capture_output=True)
        subprocess.run([ray_bin, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1"], check=True, env=env,
                       capture_output=True)
        engine = RayEngine(address=f"127.0.0.1:{port}")
        ray_s = timed_encode(input_path, workdir, engine, "ray")
        engine.close()
        print(f"ray: {ray_s:.1f} s", file=sys.stderr)
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)
    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.platform(),
           "rows": n, "local_seconds": round(local_s, 2), "ray_seconds": round(ray_s, 2),
           "ratio": round(ray_s / local_s, 3), "local_rows_per_s": round(n / local_s, 1),
           "ray_rows_per_s": round(n / ray_s, 1), "gpus": gpus}
    print(res)
    write_results("bench_engine.json", res, args.out)


if __name__ == "__main__":
    main()
