"""Specialists: small models that score texts against a task's labels (see `base` for the protocol).

Importing this package is cheap; torch, transformers and the lexicons load on first use.
"""

from .base import (
    BaseSpecialist,
    FeatureMemo,
    InputKind,
    LabelMap,
    LearnsFromUnlabeled,
    MappedSpecialist,
    Persistent,
    Rows,
    Specialist,
    Trainable,
    Updatable,
    task_ordered,
)
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
    "FeatureMemo",
    "HFTextClassifier",
    "InputKind",
    "LabelMap",
    "LearnsFromUnlabeled",
    "Head",
    "HybridHead",
    "NaiveBayesHead",
    "MappedSpecialist",
    "Persistent",
    "ProfanityCheck",
    "Rows",
    "Specialist",
    "TfidfHead",
    "Trainable",
    "Updatable",
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
