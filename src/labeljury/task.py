"""The task file: what to label, with which labels, by which specialists, reviewed how.

A task is YAML validated into `Task`. Every mistake becomes one `TaskError` line naming the key
and the fix.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import TaskError

if TYPE_CHECKING:
    from .labelsets import LabelSets

_STRICT = ConfigDict(extra="forbid", frozen=True)


class Example(BaseModel):
    """A few-shot example: a text and its label (which must be one of the task's labels); in a multi-label
    task, its set of labels (a list, or names joined by the task's `label_separator`)."""

    model_config = _STRICT
    text: str
    label: str | list[str]


class SpecialistSpec(BaseModel):
    """One specialist: a catalog id, a Hugging Face hub id or a local model folder.

    `label_map` maps the model's own label names to the task's labels; a model label mapped to
    nothing (absent from the map) is ignored. Left empty, names that match the task's labels
    (case-insensitively) map to themselves.
    """

    model_config = _STRICT
    id: str
    label_map: dict[str, str] | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ReviewerSpec(BaseModel):
    """Who reviews the hard rows: `gold` (a column of the input: evaluation), `file` (a JSONL queue
    a person fills in), `human` (people, on the review page of `labeljury review` or through Label
    Studio), or `llm` (the task's `llm`). In a list of reviewers (a cascade), a row the first cannot
    settle — no answer, or one below `min_confidence` — goes to the next."""

    model_config = _STRICT
    kind: Literal["gold", "file", "human", "llm"] = "gold"
    column: str | None = None
    path: str | None = None
    min_confidence: float | None = None
    # weigh its answers against the vote instead of obeying them (default: yes for `llm`, no for people)
    weigh: bool | None = None

    @field_validator("min_confidence")
    @classmethod
    def _confidence(cls, v: float | None) -> float | None:
        if v is not None and not 0 <= v <= 1:
            raise ValueError("must be in [0, 1]: an answer less confident than this goes to the next reviewer")
        return v

    @model_validator(mode="after")
    def _needs(self) -> ReviewerSpec:
        if self.kind == "gold" and not self.column:
            raise ValueError("the gold reviewer needs `column`: the input column holding the true labels")
        return self


class AuditSize(BaseModel):
    """An audit sized for the estimate's interval: as many rows as a share measured on them needs for a
    95% interval of +- `half_width` at worst (p = 1/2); the estimate's interval comes out no wider, and
    narrower where the calibrated confidences explain most of the audit (`budget.audit_rows`)."""

    model_config = _STRICT
    half_width: float = Field(gt=0, lt=0.5)


class ReviewSpec(BaseModel):
    """How many rows may be reviewed and which ones.

    `budget` is a fraction of the input rows in (0, 1] when written with a decimal point (`0.2`,
    `1.0`), or a whole row count >= 0 when written as an integer (`500`). `policy` orders rows by hardness: `disagreement` (the
    paper: any specialist disagreeing), `margin` (top-two posterior gap), `confidence` (posterior
    max). `threshold`, when set, sends only rows harder than it (still never over budget).
    `bootstrap` rows, chosen for diversity, are reviewed first to fit and validate specialists.
    `audit` rows (a fraction of the rows, a count, or `{half_width: 0.025}`: as many as that interval
    needs at worst) are drawn at random and reviewed to measure: they give the estimated accuracy,
    calibrate the confidences and gate the continual-learning stages; only the final refit trains on
    them (measured by cross-fitting). `audit_sampling`: `hard` (the default) draws them once the first
    versions exist, with known probabilities favouring the rows those find hard, each row then counting
    1/probability wherever the audit measures; `uniform` draws them uniformly before anything else. What these come to in rows is planned by
    `budget.plan_budget` (the audit and the bootstrap are inside the budget). `stop_early` ends the stages
    when they stop raising the vote's accuracy on the audit (default: only in a run `--from` an earlier one).
    """

    model_config = _STRICT
    budget: float | int = 0.2
    policy: Literal["disagreement", "margin", "confidence"] = "margin"
    threshold: float | None = None
    bootstrap: float | int | None = None
    audit: float | int | AuditSize | None = None
    # how the audit is drawn; None: `hard` (a run made before the setting existed keeps the draw it made)
    audit_sampling: Literal["hard", "uniform"] | None = None
    # stop the stages when they no longer raise the vote's accuracy on the audit (`continual.NoImprovement`),
    # leaving the rest of the budget unspent; None: on for a run that continues an earlier batch (`--from`)
    stop_early: bool | None = None

    @field_validator("budget", mode="before")
    @classmethod
    def _budget(cls, v: Any) -> Any:
        # A float is a fraction of the rows, an int a row count: `1.0` means every row, `1` one row.
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("must be a fraction in (0, 1] (e.g. 0.2) or a whole row count >= 0 (e.g. 500)")
        if isinstance(v, float):
            if not 0 < v <= 1:
                raise ValueError(f"{v} is outside (0, 1]; give a fraction like 0.2 or a row count like 500")
            return v
        if v < 0:
            raise ValueError(f"{v} is a negative count; give a fraction like 0.2 or a row count like 500")
        return v

    @field_validator("bootstrap", "audit", mode="before")
    @classmethod
    def _bootstrap(cls, v: Any, info: ValidationInfo) -> Any:
        # as `budget`: a float is a fraction of the rows (1.0: every row), an int a row count
        if v is None or isinstance(v, AuditSize):
            return v
        if info.field_name == "audit" and isinstance(v, dict):
            try:
                return AuditSize.model_validate(v)
            except ValidationError:
                raise ValueError(f"{v!r} is not an audit size: give {{half_width: H}} with H in (0, 0.5), e.g. "
                                 "{half_width: 0.025} for a 95% interval of +-2.5 points at worst") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError("must be a fraction of the rows in [0, 1] (e.g. 0.05) or a whole row count >= 0 (e.g. 300)")
        if isinstance(v, float):
            if v > 1:
                raise ValueError(f"{v} is not a fraction in [0, 1]; give a fraction like 0.05 (1.0: every row) or a "
                                 "whole row count like 300")
            return float(v)
        return int(v)

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, v: float | None) -> float | None:
        if v is not None and not 0 <= v <= 1:
            raise ValueError("must be in [0, 1] (a hardness: 0 easy, 1 hardest)")
        return v


class LLMSpec(BaseModel):
    """An OpenAI-compatible chat endpoint (or a local GGUF file through llama-cpp-python)."""

    model_config = _STRICT
    model: str
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    gguf: str | None = None
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(256, ge=1)
    timeout: float = Field(60.0, gt=0)  # seconds
    max_retries: int = Field(4, ge=0)
    concurrency: int = Field(8, ge=1)
    batch_size: int = Field(1, ge=1)
    budget_usd: float | None = Field(5.0, ge=0)  # a hard cap by default; write `null` to go without one
    budget_tokens: int | None = Field(None, ge=0)
    prices: dict[str, float] | None = None  # {"input": $/1M tokens, "output": $/1M tokens}



# LLM settings that change how much is spent or how fast, not what the labels mean
RESUMABLE_LLM_SETTINGS = ("budget_usd", "budget_tokens", "concurrency", "timeout", "batch_size", "max_retries", "prices")


class EngineSpec(BaseModel):
    """Where the encoder pass and the specialists' scoring run (`labeljury.engine`): `local` (this
    process) or `ray` (a Ray cluster: `address` of an existing one, else a local one is started).
    It does not change the labels: a run continues under another engine."""

    model_config = _STRICT
    kind: Literal["local", "ray"] = "local"
    address: str | None = None
    actors: int | None = None  # the actor pool's size (default: one per GPU, else one per CPU)
    num_gpus: float | None = None  # GPUs per actor (default: 1 for transformer work when there are GPUs)
    window: int = 64  # chunks per Ray Data job (bounds what the driver holds at once)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v

    @field_validator("actors", "window")
    @classmethod
    def _at_least_one(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("num_gpus")
    @classmethod
    def _gpus(cls, v: float | None) -> float | None:
        if v is not None and v < 0:
            raise ValueError("must be >= 0")
        return v


MAX_TRAIN_ROWS = 100_000


class ContinualSpec(BaseModel):
    """Staged fine-tuning of the trainable specialists on reviewed rows (see `continual`)."""

    model_config = _STRICT
    enabled: bool = True
    stage_size: int | None = Field(None, ge=1)  # reviews per stage
    replay: int = Field(2000, ge=0)  # earlier reviewed rows replayed when a fine-tuned transformer is updated
    holdout: float = Field(0.2, ge=0, lt=1)  # share of a stage's reviews held out to gate (without an audit)
    rescore: bool = True
    keep_checkpoints: Literal["current", "all"] = "current"  # "all": every version's folder stays
    # the most reviewed rows a head is refitted on (the stage's new ones first, then a uniform sample
    # of the earlier ones): bounds a refit's memory (~1.5-3 KB a row of n-grams) and time; null: all
    max_train_rows: int | None = MAX_TRAIN_ROWS

    @field_validator("max_train_rows")
    @classmethod
    def _rows(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1, or null for every reviewed row")
        return v


class Task(BaseModel):
    model_config = _STRICT

    name: str
    labels: dict[str, str]
    # a text may carry several labels, or none with `allow_empty` (`labelsets`); a set is written as the
    # names joined by `label_separator` (default "|") or as a JSON list
    multi_label: bool = False
    label_separator: str | None = None
    allow_empty: bool | None = None
    instructions: str = ""
    text_column: str = "text"
    examples: list[Example] = Field(default_factory=list)
    specialists: Literal["auto"] | list[SpecialistSpec] = "auto"
    # `max` is for multi-label tasks, whose vote defaults to it (`set_voting`)
    voting: Literal["majority", "soft", "dawid-skene", "max"] = "soft"
    reviewer: list[ReviewerSpec] = Field(default_factory=lambda: [ReviewerSpec(kind="file")])
    review: ReviewSpec = Field(default_factory=ReviewSpec)
    llm: LLMSpec | None = None
    continual: ContinualSpec | None = None
    engine: EngineSpec = Field(default_factory=EngineSpec)
    seed: int = Field(0, ge=0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v.strip()

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, v: Any) -> dict[str, str]:
        if isinstance(v, list):
            names = [str(x).strip() if x is not None else "" for x in v]
            pairs = [(n, "") for n in names]
        elif isinstance(v, dict):
            pairs = [(str(k).strip(), "" if d is None else str(d).strip()) for k, d in v.items()]
            names = [k for k, _ in pairs]
        else:
            raise ValueError("must be a list of label names, or names mapped to one-line descriptions")
        if len(names) < 2:
            raise ValueError(f"needs at least 2 labels, got {len(names)}")
        if any(not n for n in names):
            raise ValueError("a label name is empty")
        from .labels import key

        seen: dict[str, str] = {}
        for n in names:
            if key(n) in seen:  # the one matching rule: two labels it cannot tell apart are one label
                first = seen[key(n)]
                same = "appears twice" if first == n else f"and {first!r} are the same label to labeljury (case and " \
                                                           "Unicode forms are ignored when answers are matched)"
                raise ValueError(f"label {n!r} {same}; each label must be listed once")
            seen[key(n)] = n
        return dict(pairs)

    @field_validator("reviewer", mode="before")
    @classmethod
    def _reviewers(cls, v: Any) -> Any:
        if isinstance(v, (dict, ReviewerSpec)):
            return [v]
        if not isinstance(v, list) or not v:
            raise ValueError("must be a reviewer ({kind: ...}) or a non-empty list of them, tried in order")
        return v

    @field_validator("specialists", mode="before")
    @classmethod
    def _specialists(cls, v: Any) -> Any:
        if v == "auto" or v is None:
            return "auto"
        if not isinstance(v, list) or not v:
            raise ValueError("must be `auto` or a non-empty list of catalog ids, hub ids or local paths")
        return [{"id": x} if isinstance(x, str) else x for x in v]

    @field_validator("label_separator")
    @classmethod
    def _separator(cls, v: str | None) -> str | None:
        if v is not None and (not v or v != v.strip() or v.startswith("[")):
            raise ValueError(f"{v!r} cannot separate names: give a non-empty separator without surrounding spaces "
                             "that does not start with '[' (e.g. '|' or ';')")
        return v

    @model_validator(mode="after")
    def _check(self) -> Task:
        if not self.multi_label:
            if self.voting == "max":
                raise ValueError("voting `max` (per label the largest probability) is for multi-label tasks; use "
                                 "majority, soft or dawid-skene")
            for name in ("label_separator", "allow_empty"):
                if getattr(self, name) is not None:
                    raise ValueError(f"`{name}` is for multi-label tasks: add `multi_label: true`, or remove `{name}`")
        else:
            for n in self.labels:
                if self.separator in n:
                    raise ValueError(f"label {n!r} contains the label_separator {self.separator!r}, so a set holding "
                                     "it could not be read back; choose another `label_separator` (e.g. ';')")
        sets = self.label_sets
        for i, ex in enumerate(self.examples):
            if sets is not None:
                from .labelsets import LabelSetError

                try:
                    if sets.parse(ex.label) is None:
                        raise LabelSetError("the set is missing; write the example's labels")
                except LabelSetError as err:
                    raise ValueError(f"examples[{i}]: {err}") from None
                continue
            if isinstance(ex.label, list):
                raise ValueError(f"examples[{i}] has a list of labels, but the task is single-label; add "
                                 "`multi_label: true` if a text may carry several labels")
            if ex.label not in self.labels:
                raise ValueError(
                    f"examples[{i}] has label {ex.label!r}, which is not in the label set "
                    f"{list(self.labels)}; fix the example or add the label"
                )
        if isinstance(self.specialists, list):
            for s in self.specialists:
                for src, dst in (s.label_map or {}).items():
                    if dst not in self.labels:
                        raise ValueError(
                            f"specialist {s.id!r} maps {src!r} to {dst!r}, which is not a task label "
                            f"{list(self.labels)}"
                        )
        if any(r.kind == "llm" for r in self.reviewer) and self.llm is None:
            raise ValueError("reviewer kind `llm` needs an `llm:` section (model, base_url, api_key_env)")
        kinds = [r.kind for r in self.reviewer]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"reviewer lists kind {next(k for k in kinds if kinds.count(k) > 1)!r} twice; "
                             "each reviewer of a cascade is a different kind")
        return self

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    @property
    def separator(self) -> str:
        """What joins the names of a label set in text (`multi_label` tasks)."""
        from .labelsets import DEFAULT_SEPARATOR

        return self.label_separator or DEFAULT_SEPARATOR

    @property
    def label_sets(self) -> LabelSets | None:
        """How this task reads and writes label sets; None for a single-label task."""
        from .labelsets import LabelSets

        return LabelSets(self.label_names, self.separator, bool(self.allow_empty)) if self.multi_label else None

    def fingerprint(self) -> str:
        """A hash of everything that changes the meaning of the labels. Not of how much may be spent
        (`review.budget`, the LLM's caps), how fast (concurrency, timeouts, batches, retries) or at what
        price: a run resumed with other values of those continues where it stopped."""
        data = self.model_dump(mode="json")
        for name, default in (("multi_label", False), ("label_separator", None), ("allow_empty", None)):
            if data.get(name) == default:
                data.pop(name)  # the default: runs made before these existed go on
        data["review"].pop("budget", None)
        data["review"].pop("stop_early", None)  # how much of the budget is spent, like the budget
        if data["review"].get("audit_sampling") is None:
            data["review"].pop("audit_sampling", None)  # the default: runs made before it existed go on
        data.pop("engine", None)  # where the work runs does not change the labels
        if data.get("continual"):
            data["continual"].pop("keep_checkpoints", None)  # nor which old checkpoints stay on disk
            if data["continual"].get("max_train_rows") == MAX_TRAIN_ROWS:
                data["continual"].pop("max_train_rows")  # the default: runs made before it existed go on
        if data.get("llm"):
            for key in RESUMABLE_LLM_SETTINGS:
                data["llm"].pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def require_single_label(self, command: str) -> None:
        """Refuse a multi-label task in `command`, which labels one label a text: say so in one line."""
        if self.multi_label:
            raise TaskError(f"{command} does not label multi-label tasks yet (the task says `multi_label: true`): "
                            "labeljury reads, checks and scores label sets (`labeljury eval --multi-label`), but its "
                            "specialists, vote and reviewers give one label a text; remove `multi_label: true` to label "
                            "one label per text")

    @property
    def set_voting(self) -> str:
        """The vote of a multi-label task: the task file's `voting`, else `max` (`multilabel.vote`)."""
        return self.voting if "voting" in self.model_fields_set else "max"

    @property
    def trusted_reviewer(self) -> ReviewerSpec:
        """The last, most trusted reviewer of the cascade: it answers the audit sample."""
        return self.reviewer[-1]


def _format_validation_error(source: str, err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-"))
    msg = first["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling against the task file reference in the README"
    elif first["type"] == "missing":
        msg = "is required"
    where = f"{source}: {loc}" if loc else source
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"{where}: {msg}{more}"


def parse_task(data: Any, source: str = "task") -> Task:
    """Validate an already-parsed mapping into a `Task`; raises `TaskError` with one line."""
    if not isinstance(data, dict):
        raise TaskError(f"{source}: the task must be a YAML mapping with keys like name, labels, text_column")
    try:
        return Task.model_validate(data)
    except ValidationError as err:
        raise TaskError(_format_validation_error(source, err)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that names a key twice (YAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            k = self.construct_object(key_node, deep=deep)
            if isinstance(k, (str, int, float, bool)) or k is None:
                if k in seen:
                    raise TaskError(f"duplicate key {k!r} at line {key_node.start_mark.line + 1}; "
                                    "each key may appear once in a mapping")
                seen.add(k)
        return super().construct_mapping(node, deep=deep)


class _TextLoader(yaml.BaseLoader):
    """Every scalar as the text written: `yes` stays "yes", `0` stays "0"."""


def _as_written(typed: Any, raw: Any) -> Any:
    """`typed` with the names that must stay text (labels, example labels, label maps, column names)
    taken from `raw`, the same document read with every scalar as written."""
    if not isinstance(typed, dict) or not isinstance(raw, dict):
        return typed
    out = dict(typed)
    if isinstance(raw.get("labels"), (list, dict)) and isinstance(typed.get("labels"), (list, dict)):
        labels = raw["labels"]
        if isinstance(labels, dict) and isinstance(typed["labels"], dict):
            # descriptions keep their YAML meaning (null = none)
            out["labels"] = {k: d for k, d in zip(labels, typed["labels"].values(), strict=True)}
        else:
            out["labels"] = labels
    for name in ("text_column", "label_separator"):
        if isinstance(raw.get(name), str) and not isinstance(typed.get(name), str):
            out[name] = raw[name]
    reviewers, raw_reviewers = typed.get("reviewer"), raw.get("reviewer")
    if isinstance(reviewers, dict) and isinstance(raw_reviewers, dict):
        reviewers, raw_reviewers = [reviewers], [raw_reviewers]
    if isinstance(reviewers, list) and isinstance(raw_reviewers, list) and len(reviewers) == len(raw_reviewers):
        out["reviewer"] = [{**r, "column": rr["column"]} if isinstance(r, dict) and isinstance(rr, dict)
                           and r.get("column") is not None and "column" in rr else r
                           for r, rr in zip(reviewers, raw_reviewers, strict=True)]
    if isinstance(typed.get("examples"), list) and isinstance(raw.get("examples"), list):
        out["examples"] = [{**ex, "label": rex["label"]} if isinstance(ex, dict) and isinstance(rex, dict)
                           and "label" in rex else ex for ex, rex in zip(typed["examples"], raw["examples"], strict=True)]
    if isinstance(typed.get("specialists"), list) and isinstance(raw.get("specialists"), list):
        specs = []
        for sp, rsp in zip(typed["specialists"], raw["specialists"], strict=True):
            if isinstance(sp, dict) and isinstance(rsp, dict) and isinstance(rsp.get("label_map"), dict):
                sp = {**sp, "label_map": dict(rsp["label_map"])}
            specs.append(sp)
        out["specialists"] = specs
    return out


def load_task(path: str | Path) -> Task:
    """Read and validate a YAML task file. Label names (and the labels of examples and label maps,
    and column names) keep the text written: YAML would read `yes` as a boolean and `0` as a number."""
    p = Path(path)
    if not p.is_file():
        raise TaskError(f"task file {str(p)!r} does not exist; pass the path of a YAML task file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise TaskError(f"task file {str(p)!r} cannot be read ({err.__class__.__name__}); check its permissions and encoding") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
        raw = yaml.load(text, Loader=_TextLoader)  # noqa: S506 - a BaseLoader subclass: text only
    except TaskError as err:
        raise TaskError(f"task file {str(p)!r}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid syntax"
        raise TaskError(f"task file {str(p)!r} is not valid YAML{where}: {problem}") from None
    return parse_task(_as_written(data, raw), source=str(p))
