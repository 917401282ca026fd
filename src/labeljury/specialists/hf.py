"""Any Hugging Face `text-classification` model as a specialist (hub id or local folder).

This brings in the many published sentiment, toxicity, emotion or topic classifiers. The model
speaks its own labels (its config's id2label); the catalog maps them onto the task's labels.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import SpecialistError
from .base import BaseSpecialist, texts_of
from .encoder import cpu_threads, device_plan


class HFTextClassifier(BaseSpecialist):
    """A transformers sequence-classification model: softmax over its logits, or, for a
    multi-label model (problem_type multi_label_classification), its per-label sigmoid scores
    renormalised to sum to 1 so the row is a vote like every other specialist's.

    Only the config is read when `classes_` is first asked for (cheap, and catches a wrong id
    early); the weights load on the first `predict_proba`.
    """

    gpu = True  # an engine gives its workers a GPU each when there are GPUs

    name = "hf"

    def __init__(self, model: str, device: str | None = None, batch_size: int = 32, max_length: int = 256):
        if batch_size < 1 or max_length < 1:
            raise SpecialistError(f"HF specialist {model!r}: batch_size and max_length must be >= 1")
        self.model = model
        self.device = device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self._config: Any = None
        self._tokenizer: Any = None
        self._model: Any = None
        self._max_tokens = self.max_length

    @property
    def source(self) -> str:
        """What transformers loads: the expanded folder when it exists, else the hub id."""
        path = os.path.expanduser(self.model)
        return path if os.path.isdir(path) else self.model

    def _cannot_load(self, err: Exception) -> SpecialistError:
        return SpecialistError(
            f"Hugging Face model {self.model!r} could not be loaded from the hub or the path "
            f"({type(err).__name__}); check the model id or folder (and network access, or the local cache "
            f"when HF_HUB_OFFLINE=1)"
        )

    @property
    def config(self) -> Any:
        if self._config is None:
            from transformers import AutoConfig

            try:
                self._config = AutoConfig.from_pretrained(self.source, trust_remote_code=False)
            except Exception as err:  # hub, file-system and format errors all mean "cannot load"
                raise self._cannot_load(err) from None
        return self._config

    @property
    def classes_(self) -> np.ndarray:
        id2label = self.config.id2label
        return np.array([str(id2label[i]) for i in sorted(id2label, key=int)])

    @property
    def multi_label(self) -> bool:
        return getattr(self.config, "problem_type", None) == "multi_label_classification"

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if torch.get_num_threads() > cpu_threads():
            torch.set_num_threads(cpu_threads())
        plan = device_plan(f"specialist {self.name}", self.device)
        self.device = plan.device
        config = self.config
        try:
            # weights as safetensors only (no pickle), and never code from the model's repository
            tokenizer = AutoTokenizer.from_pretrained(self.source, trust_remote_code=False)
            model = AutoModelForSequenceClassification.from_pretrained(
                self.source, config=config, use_safetensors=True, trust_remote_code=False)
        except Exception as err:
            raise self._cannot_load(err) from None
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token  # decoder-only classifiers ship without one
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        # Longer inputs than the model has position embeddings for would crash it: truncate there.
        limits = [
            self.max_length,
            getattr(config, "max_position_embeddings", None),
            tokenizer.model_max_length,
        ]
        self._max_tokens = min(int(x) for x in limits if isinstance(x, int) and x > 0)
        self._tokenizer = tokenizer
        self._model = model.to(self.device).eval()
        if plan.dtype == "float16":
            self._model.half()  # inference only: the probabilities are taken in float32 below

    def to_device(self, device: str) -> None:
        """Run on `device` from now on (an engine's worker with a GPU)."""
        self.device = device
        self._model = None  # loaded again, there, when next asked

    def predict_proba(self, X: Any) -> np.ndarray:
        p = self.scores(X)
        if self.multi_label:  # a vote like every other specialist's: the row sums to 1
            p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
        return p

    def scores(self, X: Any) -> np.ndarray:
        """(rows, model labels): the model's own probabilities, a sigmoid per label for a multi-label model
        (each label on its own, as a multi-label task uses them), else the softmax."""
        texts = texts_of(X, self.name)
        k = len(self.classes_)
        if not texts:
            return np.zeros((0, k), dtype=np.float32)
        if self._model is None:
            self._load()
        import torch

        out = np.empty((len(texts), k), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # less padding per batch
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start : start + self.batch_size]
                enc = self._tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self._max_tokens,
                    return_tensors="pt",
                ).to(self.device)
                logits = self._model(**enc).logits.float()
                p = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
                out[idx] = p.cpu().numpy()
        return out
