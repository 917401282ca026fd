"""The annotation plan: what the run decided, saved as `plan.json` in the run directory.

It holds the chosen specialists (id, options, label map, checkpoint, what they read, validation
accuracy, and the fitted parameters a script needs to reproduce them), the voting method with its
fitted parameters (soft-vote weights, or Dawid-Skene class priors and confusion matrices) and the
routing settings. It is plain data: `codegen` renders it into a standalone `annotate.py`. It never
holds a credential: of the LLM only the model name is kept.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import RunStoreError, SpecialistError
from ..specialists.base import MAX_TEXT_CHARS, MappedSpecialist
from ..specialists.heads import Head
from ..specialists.hf import HFTextClassifier
from ..specialists.lexicon import VADER_WINDOW, ProfanityCheck, VaderSentiment
from ..specialists.zeroshot import ZeroShotSimilarity
from ..task import SpecialistSpec, Task
from ..voting import VoteResult

PLAN_FILE = "plan.json"
PLAN_VERSION = 1
Kind = Literal["vader", "profanity", "zeroshot", "head", "hf"]
_CLOSED = ConfigDict(extra="forbid")


class PlanSpecialist(BaseModel):
    """One specialist as `annotate.py` reproduces it.

    `kind` says how: `vader`/`profanity` (the lexicon packages), `zeroshot` (cosine to the label
    `prototypes` in `params`), `head` (the scikit-learn objects in `checkpoint`/head.json + arrays.npz), `hf`
    (a transformers classifier: hub id or model folder in `params.model`). `model_labels` and
    `label_map` turn a model's own labels into the task's."""

    model_config = _CLOSED
    name: str
    id: str
    kind: Kind
    options: dict[str, Any] = Field(default_factory=dict)
    input_kind: str
    model_labels: list[str] | None = None
    label_map: dict[str, str] | None = None
    checkpoint: str | None = None  # relative to the run directory when inside it
    validation_accuracy: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class VotingPlan(BaseModel):
    model_config = _CLOSED
    method: Literal["majority", "soft", "dawid-skene"]
    weights: list[float] | None = None  # soft: one per specialist
    priors: list[float] | None = None  # dawid-skene: (k,)
    confusion: list[list[list[float]]] | None = None  # dawid-skene: (m, k, k) P(vote l | true c) as [j][c][l]


class RoutingPlan(BaseModel):
    model_config = _CLOSED
    policy: Literal["disagreement", "margin", "confidence"]
    budget: float | int
    threshold: float | None = None


class TaskSummary(BaseModel):
    model_config = _CLOSED
    name: str
    labels: dict[str, str]
    text_column: str
    instructions: str = ""


class Plan(BaseModel):
    model_config = _CLOSED
    version: int = PLAN_VERSION
    task: TaskSummary
    encoder: str | None  # the sentence encoder the embedding specialists read
    embedding_dtype: Literal["float16", "float32"] = "float16"  # how the run stored embeddings
    max_text_chars: int = MAX_TEXT_CHARS  # a specialist reads at most this much of a text
    vader_window: int = VADER_WINDOW  # VADER scores longer texts in windows of this many characters
    specialists: list[PlanSpecialist]
    voting: VotingPlan
    routing: RoutingPlan
    llm_model: str | None = None
    selection: dict[str, str] = Field(default_factory=dict)  # specialist id -> the LLM's reason
    # annotation_confidence = sigmoid(a * logit(vote confidence) + b * [consensus] + c), fitted on the
    # run's audit (None: the vote's own confidence)
    calibrator: dict[str, float] | None = None


def _floats(a: Any) -> Any:
    return np.asarray(a, dtype=np.float64).tolist()


def _relative(path: str | Path | None, run_dir: Path) -> str | None:
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return p.relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(p)


def specialist_entry(
    name: str,
    spec: SpecialistSpec,
    model: Any,
    *,
    run_dir: Path,
    checkpoint: str | Path | None = None,
    validation_accuracy: float | None = None,
) -> PlanSpecialist:
    """Describe a built (and, for a head, fitted and saved to `checkpoint`) specialist."""
    inner = model.inner if isinstance(model, MappedSpecialist) else model
    entry: dict[str, Any] = {
        "name": name, "id": spec.id, "options": dict(spec.options), "input_kind": str(model.input_kind),
        "validation_accuracy": validation_accuracy,
    }
    if isinstance(model, MappedSpecialist):
        entry["model_labels"] = list(model.label_map.source)
        entry["label_map"] = dict(model.label_map.mapping)
    if isinstance(inner, VaderSentiment):
        entry |= {"kind": "vader", "params": {"floor": inner.floor, "a": inner._A, "b": inner._B, "c": inner._C}}
    elif isinstance(inner, ProfanityCheck):
        entry |= {"kind": "profanity"}
    elif isinstance(inner, ZeroShotSimilarity):
        entry |= {"kind": "zeroshot", "params": {"temperature": inner.temperature, "prototypes": _floats(inner.prototypes),
                                                 "encoder": inner.encoder}}
    elif isinstance(inner, Head):
        if checkpoint is None:
            raise SpecialistError(f"specialist {name!r} is a trained head: the plan needs its checkpoint folder")
        entry |= {"kind": "head", "checkpoint": _relative(checkpoint, run_dir),
                  "params": {"labels": list(inner.labels), "encoder": inner.encoder, "lexicon": inner.lexicon,
                             "embeddings": inner.uses_embeddings, "ngrams": inner.uses_ngrams}}
    elif isinstance(inner, HFTextClassifier):
        source = _relative(checkpoint, run_dir) if checkpoint is not None else inner.model
        entry |= {"kind": "hf", "checkpoint": _relative(checkpoint, run_dir),
                  "params": {"model": source, "local": checkpoint is not None,
                             "max_length": inner.max_length, "batch_size": inner.batch_size,
                             "multi_label": bool(inner.multi_label)}}
    else:
        raise SpecialistError(f"specialist {name!r} ({type(inner).__name__}) cannot be written into a plan yet")
    return PlanSpecialist(**entry)


def voting_plan(method: str, vote: VoteResult | None) -> VotingPlan:
    """The voting method and the parameters the run fitted (from its final `VoteResult`)."""
    if method == "soft":
        return VotingPlan(method="soft", weights=None if vote is None or vote.weights is None else _floats(vote.weights))
    if method == "dawid-skene":
        if vote is None or vote.priors is None or vote.confusion is None:
            raise SpecialistError("a Dawid-Skene plan needs the fitted priors and confusion matrices (the final VoteResult)")
        return VotingPlan(method="dawid-skene", priors=_floats(vote.priors), confusion=_floats(vote.confusion))
    return VotingPlan(method="majority")


def build_plan(
    task: Task,
    entries: Sequence[PlanSpecialist],
    vote: VoteResult | None,
    *,
    encoder: str | None = None,
    embedding_dtype: Literal["float16", "float32"] = "float16",
    selection: Mapping[str, str] | None = None,
    calibrator: Mapping[str, float] | None = None,
) -> Plan:
    """The plan of a run: `entries` in the order of the vote tensor's specialists, `vote` the final
    aggregation (its weights / priors / confusions are the fitted voting parameters)."""
    voting = voting_plan(task.voting, vote)
    m = len(entries)
    if voting.weights is not None and len(voting.weights) != m:
        raise SpecialistError(f"the vote has {len(voting.weights)} weights for {m} specialists; pass them in vote order")
    if voting.confusion is not None and len(voting.confusion) != m:
        raise SpecialistError(f"the vote has {len(voting.confusion)} confusion matrices for {m} specialists")
    return Plan(
        task=TaskSummary(name=task.name, labels=dict(task.labels), text_column=task.text_column,
                         instructions=task.instructions),
        encoder=encoder or next((e.params.get("encoder") for e in entries if e.params.get("encoder")), None),
        embedding_dtype=embedding_dtype,
        specialists=list(entries),
        voting=voting,
        routing=RoutingPlan(policy=task.review.policy, budget=task.review.budget, threshold=task.review.threshold),
        llm_model=task.llm.model if task.llm is not None else None,
        selection=dict(selection or {}),
        calibrator=None if calibrator is None else {k: float(calibrator[k]) for k in ("a", "b", "c")},
    )


def write_plan(run_dir: str | Path, plan: Plan) -> Path:
    """Write `run_dir/plan.json` atomically (a temporary file moved into place)."""
    run_dir = Path(run_dir)
    path = run_dir / PLAN_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".plan.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(plan.model_dump(mode="json"), fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise RunStoreError(f"cannot write {str(path)!r} ({err.strerror}); check the run directory") from None
    return path


def read_plan(run_dir: str | Path) -> Plan:
    path = Path(run_dir) / PLAN_FILE
    try:
        return Plan.model_validate_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunStoreError(f"{str(path)!r} does not exist; the run has not written its plan yet") from None
    except ValueError as err:
        raise RunStoreError(f"{str(path)!r} is not a valid plan ({type(err).__name__}); rerun the pipeline") from None
