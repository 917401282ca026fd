"""Where the per-chunk work runs: the encoder pass and the specialists' scoring.

`LocalEngine` (the default) runs it in this process. `RayEngine` (`engine: ray`, extra
`labeljury[ray]`) runs it as Ray Data batch jobs over the chunks on a Ray cluster: an actor pool in
which each actor loads its model once (one actor per GPU when the cluster has GPUs and the work is a
transformer's; `num_gpus` per actor when set), while the run store, routing, review and the continual
gate stay on the driver. Results come back chunk by chunk and the caller stores each as it arrives,
so a killed run resumes without redoing finished chunks. The same models on the same inputs: the
same labels as the local engine.

Work that is too small to be worth shipping (fewer than `min_chunks` chunks, such as a stage's few
rows) runs locally on the driver either way; the labels do not depend on where it ran.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

import numpy as np

from .errors import TaskError
from .specialists.base import RunsOnDevice, model_input

log = logging.getLogger("labeljury")
Key = tuple[Any, ...]


@dataclass(frozen=True)
class ChunkJob:
    """One chunk of work: its key (what the caller stores it under), and what the worker reads."""

    key: Key
    texts: Sequence[str] | None = None
    embeddings: np.ndarray | None = None
    rows: Any = None  # what the model reads, built where the run is (only for an engine whose workers run there)


class Worker(Protocol):
    """A picklable piece of work done per chunk; `setup` runs once where it runs (loads models)."""

    gpu: bool  # whether it runs faster on a GPU (a transformer)

    def setup(self) -> None: ...

    def __call__(self, job: ChunkJob) -> np.ndarray: ...


class EncodeWorker:
    """One shared sentence encoder's embeddings of a chunk's texts."""

    gpu = True

    def __init__(self, encoder_id: str):
        self.encoder_id = encoder_id
        self._encoder: Any = None

    def setup(self) -> None:
        from .specialists import get_encoder

        self._encoder = get_encoder(self.encoder_id)

    def __call__(self, job: ChunkJob) -> np.ndarray:
        if self._encoder is None:
            self.setup()
        return np.asarray(self._encoder.encode(list(job.texts or [])), dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:
        return {"encoder_id": self.encoder_id, "_encoder": None}  # loaded again where it runs


class ScoreWorker:
    """Specialists' task-ordered probabilities of a chunk (the job's key starts with the specialist)."""

    def __init__(self, models: dict[str, Any]):
        self.models = models
        self.gpu = any(isinstance(m, RunsOnDevice) and m.gpu for m in models.values())

    def setup(self) -> None:
        from .specialists.encoder import device_plan

        device = device_plan("engine worker").device
        for m in self.models.values():
            if isinstance(m, RunsOnDevice) and device != "cpu":
                m.to_device(device)

    def __call__(self, job: ChunkJob) -> np.ndarray:
        model = self.models[job.key[0]]
        X = job.rows if job.rows is not None else model_input(model, list(job.texts or []), job.embeddings)
        return np.asarray(model.predict_proba(X), dtype=np.float32)


class Engine(Protocol):
    name: str
    # whether its workers run in the run's own process: jobs may then carry the rows as the run's
    # features give them (`ChunkJob.rows`, sharing their memoised blocks) instead of texts and embeddings
    in_process: bool

    def map(self, worker: Worker, jobs: Iterable[ChunkJob]) -> Iterator[tuple[Key, np.ndarray]]:
        """(key, result) of each job, in any order, each as soon as it is done."""
        ...

    def close(self) -> None: ...


class LocalEngine:
    name = "local"
    in_process = True

    def map(self, worker: Worker, jobs: Iterable[ChunkJob]) -> Iterator[tuple[Key, np.ndarray]]:
        for job in jobs:
            yield job.key, worker(job)

    def close(self) -> None:
        pass


class RayEngine:
    """Ray Data batch jobs over the chunks (see the module doc). `address`: an existing cluster
    ("auto", "host:port", "ray://..."); None starts a local one for the run. `actors`: the pool size
    (default: one per GPU for GPU work when there are GPUs, else one per CPU of the cluster).
    `window`: chunks per Ray Data job, which bounds what the driver holds at once."""

    name = "ray"
    in_process = False

    def __init__(self, address: str | None = None, actors: int | None = None, num_gpus: float | None = None,
                 window: int = 64, min_chunks: int = 2):
        self.address = address
        self.actors = actors
        self.num_gpus = num_gpus
        self.window = max(1, int(window))
        self.min_chunks = max(1, int(min_chunks))
        self._started = False
        self._local = LocalEngine()
        self.nodes_used: set[str] = set()  # the cluster nodes whose actors did work

    def _connect(self) -> Any:
        try:
            import ray
            import ray.data
        except ImportError:
            raise TaskError("engine: ray needs Ray Data; install it with: pip install 'labeljury[ray]'") from None
        if not ray.is_initialized():
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            self._check_reachable()
            import labeljury

            # this very labeljury travels to the workers (its dependencies must be installed there)
            runtime_env = {"py_modules": [os.path.dirname(labeljury.__file__)]}
            try:
                ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False,
                         runtime_env=runtime_env, **({} if self.address else {"include_dashboard": False}))
            except (ConnectionError, RuntimeError, ValueError) as err:
                where = f"at {self.address!r}" if self.address else "on this machine"
                raise TaskError(f"cannot reach a Ray cluster {where} ({str(err).splitlines()[0]}); start one with "
                                "`ray start --head` or fix engine.address") from None
            self._started = True
            res = ray.cluster_resources()
            log.info("ray engine: %d node(s), %g CPU(s), %g GPU(s)", len(ray.nodes()), res.get("CPU", 0),
                     res.get("GPU", 0))
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no "execution finished" line per job
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        return ray

    def _check_reachable(self) -> None:
        """A host:port address that nothing answers on fails at once (Ray itself retries for minutes)."""
        host, _, port = (self.address or "").rpartition(":")
        if not host or "://" in self.address or not port.isdigit():  # type: ignore[operator]
            return
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except OSError as err:
            raise TaskError(f"cannot reach a Ray cluster at {self.address!r} ({err.strerror or err}); start one "
                            "with `ray start --head` or fix engine.address") from None

    def plan(self, worker: Worker, ray: Any) -> tuple[int, float]:
        """(actors, GPUs per actor) for `worker` on this cluster."""
        res = ray.cluster_resources()
        gpus = float(res.get("GPU", 0))
        per_gpu = self.num_gpus if self.num_gpus is not None else (1.0 if worker.gpu and gpus >= 1 else 0.0)
        if self.actors:
            size = self.actors
        elif per_gpu:
            size = max(1, int(gpus // per_gpu))
        else:
            size = max(1, int(res.get("CPU", 1)))
        return size, per_gpu

    def map(self, worker: Worker, jobs: Iterable[ChunkJob]) -> Iterator[tuple[Key, np.ndarray]]:
        it = iter(jobs)
        window = list(islice(it, self.window))  # one window of texts at a time in the driver
        if len(window) < self.min_chunks:
            yield from self._local.map(worker, window)
            return
        ray = self._connect()
        from ray.data import ActorPoolStrategy

        size, per_gpu = self.plan(worker, ray)
        remote = {"num_gpus": per_gpu} if per_gpu else {"num_cpus": 1}
        log.info("ray engine: %s over chunks, %d actor(s)%s", type(worker).__name__, size,
                 f", {per_gpu:g} GPU(s) each" if per_gpu else "")
        while window:
            ds = ray.data.from_items([_to_item(i, job) for i, job in enumerate(window)]).map_batches(
                _RayActor, fn_constructor_args=(worker,), batch_size=1, batch_format="numpy",
                compute=ActorPoolStrategy(size=min(size, len(window))), **remote)
            for row in ds.iter_rows():
                self.nodes_used.add(str(row["node"]))
                yield window[int(row["i"])].key, _from_bytes(row["out"], row["out_shape"])
            window = list(islice(it, self.window))

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


class _RayActor:
    """Runs a `Worker` inside a Ray actor: set up once, then one chunk per batch."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.worker.setup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs, shapes = [], []
        for i in range(len(batch["i"])):
            emb = _from_bytes(batch["emb"][i], batch["emb_shape"][i]) if len(batch["emb"][i]) else None
            texts = [str(t) for t in batch["texts"][i]] if batch["has_texts"][i] else None
            res = self.worker(ChunkJob(key=(str(batch["key"][i]),), texts=texts, embeddings=emb))
            outs.append(np.ascontiguousarray(res, dtype=np.float32).tobytes())
            shapes.append(np.asarray(res.shape, dtype=np.int64))
        import ray

        node = ray.get_runtime_context().get_node_id()
        return {"i": batch["i"], "out": np.array(outs, dtype=object), "out_shape": np.stack(shapes),
                "node": np.array([node] * len(outs), dtype=object)}


def _to_item(i: int, job: ChunkJob) -> dict[str, Any]:
    emb = job.embeddings
    return {"i": i, "key": str(job.key[0]) if job.key and isinstance(job.key[0], str) else "",
            "has_texts": job.texts is not None, "texts": list(job.texts or []),
            "emb": b"" if emb is None else np.ascontiguousarray(emb, dtype=np.float32).tobytes(),
            "emb_shape": [0, 0] if emb is None else list(emb.shape)}


def _from_bytes(data: Any, shape: Any) -> np.ndarray:
    return np.frombuffer(bytes(data), dtype=np.float32).reshape(tuple(int(x) for x in shape)).copy()


def make_engine(spec: Any = None) -> Engine:
    """The engine an `EngineSpec` (or None: local) asks for."""
    if spec is None or spec.kind == "local":
        return LocalEngine()
    return RayEngine(address=spec.address, actors=spec.actors, num_gpus=spec.num_gpus, window=spec.window)
