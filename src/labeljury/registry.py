"""The specialist registry: which specialists a run uses and, for each trainable one, every promoted
version — the rows it was trained on, its checkpoint folder, its label map and its measurements.

It is the one place that knows "which version of which specialist, trained on which rows, saved
where": the stage loop promotes or rolls back through it (`commit`, one transaction), the scorer asks
it which versions vote, and `status` / `export-model` read it back (`read_registry`). Checkpoints live
in `RUN_DIR/checkpoints/<name>-v<version>/`, written under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RunStoreError, SpecialistError
from .specialists import LabelMap, MappedSpecialist, Persistent, Specialist
from .store import RunStore, ids_hash

CHECKPOINTS = "checkpoints"


@dataclass
class Promotion:
    """A new version of a trainable specialist, to be made current by `Registry.commit`."""

    name: str
    model: Any
    version: int
    train_ids: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Measurement:
    """A specialist version's accuracy on `rows` rows it was not trained on, `on` the audit sample
    (what the gate and the model card use), the stage's new rows (what the vote weights use), or,
    without an audit, a held-out slice of the stage's rows (both)."""

    name: str
    version: int
    accuracy: float
    rows: int
    stage: int
    on: str = "holdout"  # "audit" | "stage" | "holdout" | "cv" (the final version, cross-validated)

    @property
    def weighs(self) -> bool:
        return self.on in ("stage", "holdout")


def checkpoint_dir(run_dir: Path, name: str, version: int) -> Path:
    return run_dir / CHECKPOINTS / f"{name}-v{version}"


class Registry:
    """The specialists of one run, live: `models` holds the active ones (in the task's order) and
    `versions` their current version (0: a trainable specialist not fitted yet)."""

    def __init__(self, store: RunStore, fresh: Callable[[str], Specialist], keep_checkpoints: str = "current"):
        self.store = store
        self.run_dir = store.run_dir
        self.fresh = fresh  # builds an unfitted copy of a specialist by name, from its spec
        self.keep_checkpoints = keep_checkpoints  # "current": a superseded version's folder goes
        self.models: dict[str, Any] = {}
        self.versions: dict[str, int] = {}

    # -- set-up -----------------------------------------------------------------------------------
    def open(self, built: Iterable[tuple[Specialist, dict[str, Any]]], unbuilt: Mapping[str, str] | None = None) -> None:
        """Register `built` (model, spec as JSON) on a run's first start; on a resume, check that they
        are the ones the run started with and restore each one's label map and current version. A
        specialist that voted before but cannot be built now (`unbuilt`: name -> why) stops the run:
        the vote would silently lose a member."""
        built = list(built)
        if not self.store.specialists():
            self.store.save_specialists([{"name": m.name, "spec": spec} for m, spec in built])
        entries = {e["name"]: e for e in self.store.specialists()}
        names = {m.name for m, _ in built}
        for name, entry in entries.items():
            if entry["status"] == "active" and name not in names:
                why = (unbuilt or {}).get(name, "it is not in the task's specialists")
                raise RunStoreError(f"specialist {name!r} voted in this run before but cannot be built now ({why}); "
                                    "make it available again (e.g. network access to the Hugging Face hub) and "
                                    "rerun, or pass a new --run-dir")
        for model, spec in built:
            entry = entries.get(model.name)
            if entry is None or entry["spec"] != spec:
                raise RunStoreError(f"specialist {model.name!r} differs from the one this run started with; "
                                    "pass a new --run-dir")
            if entry["status"] != "active":
                continue
            if model.trainable and not isinstance(model, Persistent):
                raise SpecialistError(f"specialist {model.name!r} is trainable but cannot save a checkpoint "
                                      "(it has no save/load), so a run could not resume it")
            if entry["label_map"] is not None and isinstance(model, MappedSpecialist):
                lm = model.label_map
                model.label_map = LabelMap.build(lm.source, lm.target, entry["label_map"], specialist=model.name)
            version = int(entry["version"])
            self.models[model.name] = self.load(model.name, version) if model.trainable and version > 0 else model
            self.versions[model.name] = version

    # -- what votes ---------------------------------------------------------------------------------
    def voters(self) -> list[str]:
        """The specialists whose votes count: the active ones that are fixed or have been fitted."""
        return [n for n, m in self.models.items() if self.versions[n] > 0 or not m.trainable]

    def trainable(self) -> list[str]:
        return [n for n, m in self.models.items() if m.trainable]

    def weights_source(self) -> dict[str, dict[str, Any]]:
        """Each specialist's accumulated accuracy on rows it was not trained on (for vote weights)."""
        return {e["name"]: e for e in self.store.specialists()}

    # -- checkpoints --------------------------------------------------------------------------------
    def checkpoint(self, name: str, version: int) -> Path:
        return checkpoint_dir(self.run_dir, name, version)

    def save_checkpoint(self, model: Persistent, version: int) -> Path:
        """Write `model` as checkpoint `version` (atomically)."""
        path = self.checkpoint(model.name, version)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save(tmp)
        shutil.rmtree(path, ignore_errors=True)  # left by a run killed before it was promoted
        os.replace(tmp, path)
        return path

    def discard(self, name: str, version: int) -> None:
        """Roll back a candidate version that was not promoted: its checkpoint goes."""
        shutil.rmtree(self.checkpoint(name, version), ignore_errors=True)

    def load(self, name: str, version: int) -> Any:
        """Specialist `name` as it was at `version`, from its checkpoint."""
        path = self.checkpoint(name, version)
        model = self.fresh(name)
        if not path.exists():
            raise RunStoreError(f"checkpoint {str(path)!r} of specialist {name!r} is missing; "
                                "pass a new --run-dir to start afresh")
        loaded = type(model).load(path)
        loaded.name = name
        return loaded

    def train_ids(self, name: str, version: int) -> np.ndarray:
        return self.store.train_ids(name, version)

    def same_rows(self, name: str, ids: np.ndarray) -> bool:
        """Whether the current version of `name` was trained on exactly `ids`."""
        rows = [v for v in self.store.versions(name) if v["version"] == self.versions[name]]
        return bool(rows) and rows[0]["train_hash"] == ids_hash(np.sort(np.asarray(ids, np.int64)))

    # -- changes --------------------------------------------------------------------------------------
    def set_label_map(self, name: str, mapping: Mapping[str, str]) -> None:
        self.store.update_specialist(name, label_map=dict(mapping))

    def record_validation(self, name: str, accuracy: float | None, rows: int, note: str | None = None) -> None:
        fields: dict[str, Any] = {"validation_rows": rows}
        if accuracy is not None:
            fields["validation_accuracy"] = accuracy
        if note is not None:
            fields["note"] = note
        self.store.update_specialist(name, **fields)

    def drop(self, name: str, accuracy: float, rows: int, note: str) -> None:
        self.store.update_specialist(name, status="dropped", validation_accuracy=accuracy, validation_rows=rows,
                                     note=note)
        del self.models[name]

    def commit(self, promotions: Iterable[Promotion], measurements: Iterable[Measurement] = (), *,
               stage: int | None = None, stage_metrics: dict[str, Any] | None = None,
               done_step: str | None = None) -> None:
        """Make each promotion the current version of its specialist, add the held-out measurements to
        each specialist's validation record (its vote weight) and to the version measured, and record
        the stage: all in one transaction, then swap the live models. The superseded versions'
        predictions are forgotten, and so are their checkpoints unless the run keeps them all
        (`continual.keep_checkpoints: all`); their records (rows, measurements) stay."""
        promotions = list(promotions)
        measurements = list(measurements)
        info = {e["name"]: e for e in self.store.specialists()}
        version_metrics = {(v["specialist"], v["version"]): v["metrics"] for v in self.store.versions()}
        with self.store.transaction() as c:
            for p in promotions:
                ckpt = self.checkpoint(p.name, p.version)
                self.store.put_version(p.name, p.version, stage=stage, train_ids=p.train_ids,
                                       checkpoint=str(ckpt.relative_to(self.run_dir)) if ckpt.exists() else None,
                                       metrics={**p.metrics, "measured": []}, conn=c)
                version_metrics[(p.name, p.version)] = {**p.metrics, "measured": []}
                self.store.update_specialist(p.name, version=p.version, conn=c)
                self.store.delete_predictions(p.name, p.version, conn=c)
            for m in measurements:
                if m.weighs:
                    seen = info[m.name]["validation_rows"] or 0
                    acc0 = info[m.name]["validation_accuracy"] or 0.0
                    total = seen + m.rows
                    acc = (acc0 * seen + m.accuracy * m.rows) / total
                    self.store.update_specialist(m.name, validation_accuracy=acc, validation_rows=total, conn=c)
                    info[m.name] = {**info[m.name], "validation_accuracy": acc, "validation_rows": total}
                if m.on in ("audit", "holdout"):  # the current version's latest unbiased-as-can-be score
                    self.store.update_specialist(m.name, audit_accuracy=m.accuracy, audit_rows=m.rows,
                                                 audit_version=m.version, audit_basis=m.on, conn=c)
                metrics = version_metrics.get((m.name, m.version))
                if metrics is not None:
                    metrics["measured"].append({"stage": m.stage, "accuracy": m.accuracy, "rows": m.rows, "on": m.on})
                    self.store.update_version_metrics(m.name, m.version, metrics, conn=c)
            if stage_metrics is not None and stage is not None:
                self.store.put_stage(stage, stage_metrics, conn=c)
            if done_step:
                self.store.mark_done(done_step, c)
        for p in promotions:
            self.models[p.name], self.versions[p.name] = p.model, p.version
            self.prune(p.name)

    def prune(self, name: str) -> None:
        """Delete the checkpoints of `name`'s superseded versions (with `keep_checkpoints: current`),
        after the commit that superseded them: a crash in between leaves a folder, never a hole."""
        if self.keep_checkpoints == "all":
            return
        for v in self.store.versions(name):
            if v["version"] != self.versions.get(name) and v["checkpoint"]:
                shutil.rmtree(self.run_dir / v["checkpoint"], ignore_errors=True)
                self.store.set_version_checkpoint(name, v["version"], None)


@dataclass(frozen=True)
class Score:
    """A specialist version's accuracy on `rows` rows it did not train on, and what those rows were:
    the audit sample, cross-validation of the final version, a stage's held-out slice, or the
    bootstrap's validation (`version` None: pooled over versions)."""

    accuracy: float
    rows: int
    basis: str  # "audit" | "cross-validation" | "held-out" | "validation"
    version: int | None

    def describe(self, current: int) -> str:
        """'80.0% on 45 audit rows' and the like, naming an earlier version when it is not `current`."""
        what = {"audit": "audit rows", "cross-validation": "reviewed rows, cross-validated",
                "held-out": "held-out reviewed rows", "validation": "reviewed rows (bootstrap validation)"}[self.basis]
        older = f", measured on v{self.version}" if self.version is not None and self.version != current else ""
        return f"{self.accuracy:.1%} on {self.rows} {what}{older}"


@dataclass(frozen=True)
class SpecialistRecord:
    """What the registry holds about one specialist, read back for `status` and `export-model`."""

    name: str
    spec: dict[str, Any]
    status: str
    version: int
    validation_accuracy: float | None
    validation_rows: int | None
    note: str | None
    label_map: dict[str, str] | None
    versions: list[dict[str, Any]]
    audit_accuracy: float | None = None  # the current version's accuracy on the audit sample
    audit_rows: int | None = None
    audit_version: int | None = None
    audit_basis: str | None = None  # "audit", or "holdout" for a run without an audit

    @property
    def audited(self) -> bool:
        """Whether `audit_accuracy` is the current version's, measured on the audit sample."""
        return self.audit_basis == "audit" and self.audit_version == self.version and self.audit_accuracy is not None

    @property
    def score(self) -> Score | None:
        """The best measure of its current version on rows that version did not train on: its accuracy
        on the audit sample; without an audit, its cross-validated accuracy (the final refit's); else
        the most recent held-out measurement of any version, in stage order (which may be an earlier
        version's: `Score.version` says), else its bootstrap validation accuracy."""
        if self.audited:
            return Score(float(self.audit_accuracy or 0.0), int(self.audit_rows or 0), "audit", self.version)
        measured = sorted((m["stage"], m["accuracy"], m["rows"], m.get("on", "holdout"), v["version"])
                          for v in self.versions for m in v["metrics"].get("measured", [])
                          if m.get("on", "holdout") in ("holdout", "cv"))
        current = [m for m in measured if m[3] == "cv" and m[4] == self.version]
        if current:
            return Score(float(current[-1][1]), int(current[-1][2]), "cross-validation", self.version)
        held_out = [m for m in measured if m[3] == "holdout"]
        if held_out:
            return Score(float(held_out[-1][1]), int(held_out[-1][2]), "held-out", int(held_out[-1][4]))
        if self.validation_accuracy is None:
            return None
        return Score(float(self.validation_accuracy), int(self.validation_rows or 0), "validation", None)

    @property
    def latest_accuracy(self) -> float | None:
        score = self.score
        return None if score is None else score.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "spec": self.spec, "status": self.status, "version": self.version,
                "validation_accuracy": self.validation_accuracy, "validation_rows": self.validation_rows,
                "note": self.note, "label_map": self.label_map, "audit_accuracy": self.audit_accuracy,
                "audit_rows": self.audit_rows, "audit_version": self.audit_version, "audited": self.audited,
                "versions": [{k: v[k] for k in ("version", "stage", "train_count", "checkpoint", "metrics")}
                             for v in self.versions]}


def read_registry(store: RunStore) -> list[SpecialistRecord]:
    """Every specialist of the run in the task's order, with its versions (read only)."""
    versions: dict[str, list[dict[str, Any]]] = {}
    for v in store.versions():
        versions.setdefault(v["specialist"], []).append(v)
    return [SpecialistRecord(name=e["name"], spec=e["spec"], status=e["status"], version=e["version"],
                             validation_accuracy=e["validation_accuracy"], validation_rows=e["validation_rows"],
                             note=e["note"], label_map=e["label_map"], versions=versions.get(e["name"], []),
                             audit_accuracy=e["audit_accuracy"], audit_rows=e["audit_rows"],
                             audit_version=e["audit_version"], audit_basis=e["audit_basis"])
            for e in store.specialists()]
