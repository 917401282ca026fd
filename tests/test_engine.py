"""The Ray engine, on a real Ray cluster of two nodes started on this machine (`ray start --head` and
a second `ray start --address=...`, one CPU each): the same labels as the local engine, and a run
interrupted in the encoder pass resumes without encoding the finished chunks again."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from labeljury import load_task, run
from labeljury.cli import app
from labeljury.engine import ChunkJob, EncodeWorker, LocalEngine, RayEngine
from labeljury.store import CHUNK, RunStore

from .conftest import make_rows, require, write_task

SPECIALISTS = "[tfidf-head, vader, embedding-head]"  # text, lexicon and embedding inputs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[str]:
    require(importlib.util.find_spec("ray") is not None, "Ray (pip install 'labeljury[ray]')")
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("ray") / "nodes.log"
    # a test cluster on this machine, without token authentication (an ~/.ray/auth_token left by an
    # earlier local Ray would otherwise turn it on for the head and not for the second node)
    auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    try:
        with logs.open("w") as fh:
            subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=1",
                            "--include-dashboard=false", "--disable-usage-stats"],
                           check=True, stdout=fh, stderr=fh, env=env, timeout=180)
            subprocess.run([ray_bin, "start", f"--address={address}", "--num-cpus=1"], check=True, stdout=fh,
                           stderr=fh, env=env, timeout=180)
        yield address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        subprocess.run([ray_bin, "stop", "--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
        if auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("engine")
    path = tmp / "in.csv"
    make_rows(3 * CHUNK - 500, seed=5).to_csv(path, index=False)  # three chunks
    return path, write_task(tmp / "t.yaml", specialists=SPECIALISTS, budget=0.1)


def test_the_ray_engine_gives_the_local_engines_labels_on_a_two_node_cluster(cluster, data, tmp_path) -> None:
    import ray

    path, task_path = data
    task = load_task(task_path)
    local = run(task, path, tmp_path / "local.csv")
    engine = RayEngine(address=cluster)
    try:
        remote = run(task, path, tmp_path / "ray.csv", engine=engine)
        alive = [n for n in ray.nodes() if n["Alive"]]
    finally:
        engine.close()
    assert local.status == remote.status == "complete"
    assert len(alive) == 2 and len(engine.nodes_used) == 2  # both nodes' actors did work
    a = pd.read_csv(tmp_path / "local.csv", keep_default_na=False)
    b = pd.read_csv(tmp_path / "ray.csv", keep_default_na=False)
    assert (a.annotation == b.annotation).all() and (a.annotation_source == b.annotation_source).all()
    assert (a.annotation_confidence - b.annotation_confidence).abs().max() < 1e-3
    with RunStore.existing(tmp_path / "local.csv.run") as s1, RunStore.existing(tmp_path / "ray.csv.run") as s2:
        for c in range(-(-s1.n_texts // CHUNK)):
            # the same encoder in other processes (other thread counts): equal to float16 rounding
            assert np.abs(s1.get_embeddings("minilm", c) - s2.get_embeddings("minilm", c)).max() < 2e-3


class StopAfter:
    """An engine that stops the run (as a kill would) after `n` chunks came back and were stored."""

    def __init__(self, inner, n: int):
        self.inner, self.n, self.name, self.in_process = inner, n, inner.name, inner.in_process

    def map(self, worker, jobs):
        if not isinstance(worker, EncodeWorker):  # only the encoder pass is under test here
            yield from LocalEngine().map(worker, jobs)
            return
        for i, out in enumerate(self.inner.map(worker, jobs)):
            if i == self.n:
                raise KeyboardInterrupt
            yield out

    def close(self) -> None:
        self.inner.close()


class Counting:
    def __init__(self, inner):
        self.inner, self.name, self.encoded, self.in_process = inner, inner.name, [], inner.in_process

    def map(self, worker, jobs):
        if not isinstance(worker, EncodeWorker):
            return LocalEngine().map(worker, jobs)

        def seen(jobs_):
            for job in jobs_:
                self.encoded.append(job.key)
                yield job
        return self.inner.map(worker, seen(jobs))

    def close(self) -> None:
        self.inner.close()


def test_a_ray_run_stopped_in_the_encoder_pass_resumes_without_encoding_finished_chunks(cluster, data, tmp_path) -> None:
    path, task_path = data
    task = load_task(task_path)
    engine = RayEngine(address=cluster, window=1, min_chunks=1)  # a Ray Data job a chunk, stored one by one
    try:
        with pytest.raises(KeyboardInterrupt):
            run(task, path, tmp_path / "out.csv", engine=StopAfter(engine, 1))
        with RunStore.existing(tmp_path / "out.csv.run") as s:
            done = [c for c in range(3) if s.has_embeddings("minilm", c)]
        assert done == [0]
        counting = Counting(engine)
        assert run(task, path, tmp_path / "out.csv", engine=counting).status == "complete"
    finally:
        engine.close()
    assert sorted(k for (k,) in counting.encoded) == sorted(set(range(3)) - set(done))


def test_small_work_stays_on_the_driver_and_a_missing_cluster_is_one_line(tmp_path) -> None:
    engine = RayEngine(address="127.0.0.1:9", min_chunks=2)
    job = ChunkJob((0,), ["a fine day", "an awful day"])
    (key, emb), = list(engine.map(EncodeWorker("minilm"), [job]))  # one chunk: never leaves this process
    (_, same), = list(LocalEngine().map(EncodeWorker("minilm"), [job]))
    assert key == (0,) and emb.shape == (2, 384) and (emb == same).all()
    data = tmp_path / "in.csv"
    make_rows(3 * CHUNK, seed=1).to_csv(data, index=False)
    task = write_task(tmp_path / "t.yaml", specialists=SPECIALISTS, budget=0.1)
    res = CliRunner().invoke(app, ["run", str(task), "--input", str(data), "--output", str(tmp_path / "o.csv"),
                                   "--engine", "ray", "--address", "127.0.0.1:9"])
    assert res.exit_code == 2, res.output
    assert "cannot reach a Ray cluster at '127.0.0.1:9'" in res.stderr and "Traceback" not in res.stderr
    res = CliRunner().invoke(app, ["run", str(task), "--input", str(data), "--output", str(tmp_path / "o.csv"),
                                   "--engine", "spark"])
    assert res.exit_code == 2 and "not an engine; use local or ray" in res.stderr
