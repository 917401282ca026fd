"""Zero-shot specialist: votes for the label whose description a text's embedding is closest to.

It needs no labelled rows, so it has an opinion from the first row on; its weakness (labels whose
names and descriptions are close in embedding space) is what the trained heads make up for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import SpecialistError
from .base import BaseSpecialist
from .encoder import DEFAULT_ENCODER, as_embeddings, get_encoder


class ZeroShotSimilarity(BaseSpecialist):
    """softmax(cosine(text, label prototype) / temperature) over the task's labels.

    A label's prototype is the mean of two normalised embeddings: `template` filled with the label's
    name and description, and the bare name (underscores and dashes read as spaces). The bare name
    keeps labels with an empty or generic description apart.
    """

    input_kind = "embedding"
    name = "zeroshot"

    def __init__(
        self,
        labels: Mapping[str, str],
        encoder: str = DEFAULT_ENCODER,
        temperature: float = 0.05,
        template: str = "{label}: {description}",
    ):
        if len(labels) < 2:
            raise SpecialistError("zeroshot needs at least 2 labels")
        if temperature <= 0:
            raise SpecialistError(f"zeroshot option temperature={temperature} must be > 0")
        try:
            template.format(label="label", description="description")
        except (KeyError, IndexError, ValueError):
            raise SpecialistError(
                f"zeroshot option template={template!r} may only use the fields {{label}} and {{description}}"
            ) from None
        self.labels = dict(labels)
        self.encoder = encoder
        self.temperature = float(temperature)
        self.template = template
        self._prototypes: np.ndarray | None = None

    @property
    def classes_(self) -> np.ndarray:
        return np.array(list(self.labels))

    def label_texts(self) -> list[list[str]]:
        """The texts embedded for each label, in label order."""
        out = []
        for label, description in self.labels.items():
            name = label.replace("_", " ").replace("-", " ").strip()
            described = (
                self.template.format(label=name, description=description).strip(" :") if description else name
            )
            out.append([described, name] if described != name else [name])
        return out

    @property
    def prototypes(self) -> np.ndarray:
        """(k, d) unit-norm label prototypes, computed once with the shared encoder."""
        if self._prototypes is None:
            enc = get_encoder(self.encoder)
            rows = [enc.encode(texts).mean(axis=0) for texts in self.label_texts()]
            P = np.stack(rows).astype(np.float32)
            self._prototypes = P / np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
        return self._prototypes

    def predict_proba(self, X: Any) -> np.ndarray:
        E = as_embeddings(X, self.encoder)
        if len(E) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        logits = (E @ self.prototypes.T) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)
