"""Specialists: small models that score texts against a task's labels (see `base` for the protocol).

Importing this package is cheap; torch, transformers and the lexicons load on first use.
"""

from .base import BaseSpecialist, InputKind, LabelMap, MappedSpecialist, Specialist, task_ordered
from .catalog import (
    CATALOG,
    SYNONYMS,
    CatalogEntry,
    auto_specialists,
    build_specialist,
    build_specialists,
    specialist_names,
    synonym_map,
)
from .encoder import DEFAULT_ENCODER, Encoder, as_embeddings, get_encoder
from .features import TextsWithEmbeddings
from .heads import EmbeddingHead, Head, HybridHead, NaiveBayesHead, TfidfHead
from .hf import HFTextClassifier
from .lexicon import ProfanityCheck, VaderSentiment
from .zeroshot import ZeroShotSimilarity

__all__ = [
    "CATALOG",
    "DEFAULT_ENCODER",
    "SYNONYMS",
    "BaseSpecialist",
    "CatalogEntry",
    "EmbeddingHead",
    "Encoder",
    "HFTextClassifier",
    "InputKind",
    "LabelMap",
    "Head",
    "HybridHead",
    "NaiveBayesHead",
    "TextsWithEmbeddings",
    "MappedSpecialist",
    "ProfanityCheck",
    "Specialist",
    "TfidfHead",
    "VaderSentiment",
    "ZeroShotSimilarity",
    "as_embeddings",
    "auto_specialists",
    "build_specialist",
    "build_specialists",
    "get_encoder",
    "specialist_names",
    "synonym_map",
    "task_ordered",
]
