"""The Label Studio round trip: the rows waiting for people go out as Label Studio tasks (with the
suggestion as a prediction and its score), the annotations come back as the run's reviews.

    labeljury export-queue RUN_DIR --format label-studio --output tasks.json   # + tasks.json.config.xml
    labeljury import-reviews RUN_DIR export.json                                # Label Studio's JSON export

With `--url` and `--api-key-env` both talk to a running Label Studio through `label-studio-sdk`
(`labeljury[label-studio]`) instead of files: `export-queue` creates a project (or adds to the one it
made before) and `import-reviews` reads that project's annotations.

Several annotators on one task: the label most of them chose (more than half); a disagreement is
recorded with the review; a tie decides nothing: the row stays in the queue, marked `flagged`.
A multi-label task's tasks use `<Choices choice="multiple">` and come back as sets: with several
annotators, a label is in the set when more than half of them chose it (a label exactly half chose is a
tie, flagged as above).
A task whose `labeljury_id` is not a row of this run waiting for people is refused.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ReviewError
from ..labels import LabelMatcher
from ..labelsets import DEFAULT_SEPARATOR, LabelSetError, LabelSets
from ..store import RunStore
from .queue import HumanQueue

FROM_NAME, TO_NAME = "label", "text"


def label_config(labels: Sequence[str], instructions: str = "", multiple: bool = False) -> str:
    """The labeling config of the tasks: the text and one choice a label (several at once when `multiple`)."""
    choices = "\n".join(f"    <Choice value={quoteattr(lab)}/>" for lab in labels)
    header = f'  <Header value={quoteattr(instructions)}/>\n' if instructions else ""
    kind = "multiple" if multiple else "single"
    return (f'<View>\n{header}  <Text name="{TO_NAME}" value="$text"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="{kind}" '
            f'showInline="true">\n{choices}\n'
            "  </Choices>\n</View>\n")


def task_sets(task: dict[str, Any]) -> LabelSets | None:
    """A multi-label run's label sets (from the task file it keeps), else None."""
    if not task.get("multi_label"):
        return None
    return LabelSets(list(task.get("labels") or []), str(task.get("label_separator") or DEFAULT_SEPARATOR),
                     bool(task.get("allow_empty")))


def _config(task: dict[str, Any]) -> str:
    return label_config(list(task.get("labels") or []), str(task.get("instructions") or ""),
                        multiple=bool(task.get("multi_label")))


def queue_tasks(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(Label Studio tasks of the rows waiting for people, the run's task file as a dict)."""
    with RunStore.existing(run_dir) as store:
        task = store.get_meta("task") or {}
    sets = task_sets(task)
    q = HumanQueue(run_dir)
    try:
        waiting = q.waiting()
    finally:
        q.close()
    tasks = []
    for w in waiting:
        item: dict[str, Any] = {"data": {"text": w.text, "labeljury_id": w.id, "labeljury_why": w.why}}
        suggested = None if w.suggestion is None else [w.suggestion] if sets is None else list(sets.parse(w.suggestion) or [])
        if suggested:
            item["predictions"] = [{"model_version": "labeljury", "score": w.confidence,
                                    "result": [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                                                "value": {"choices": suggested}}]}]
        tasks.append(item)
    return tasks, task


def export_queue(run_dir: str | Path, output: str | Path) -> tuple[Path, Path, int]:
    """Write the Label Studio import file and its labeling config (`OUTPUT.config.xml`)."""
    tasks, task = queue_tasks(run_dir)
    out = Path(output)
    config = out.with_name(out.name + ".config.xml")
    _write(out, json.dumps(tasks, ensure_ascii=False, indent=1))
    _write(config, _config(task))
    return out, config, len(tasks)


def _write(path: Path, text: str) -> None:
    if not path.parent.is_dir():
        raise ReviewError(f"folder {str(path.parent)!r} does not exist; create it or choose another --output")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@dataclass
class Imported:
    applied: int = 0
    disagreements: int = 0  # applied by majority, the disagreement recorded
    flagged: list[int] = field(default_factory=list)  # ties: not applied
    unanswered: int = 0  # tasks nobody annotated yet
    already: int = 0  # rows answered before (here or on the page)


class _Value(BaseModel):
    model_config = ConfigDict(extra="ignore")
    choices: list[Any] = Field(default_factory=list)


class _Result(BaseModel):
    model_config = ConfigDict(extra="ignore")
    from_name: Any = None
    value: _Value = Field(default_factory=_Value)


class _Annotation(BaseModel):
    model_config = ConfigDict(extra="ignore")
    was_cancelled: bool = False
    result: list[_Result] = Field(default_factory=list)


class ExportedTask(BaseModel):
    """One task of Label Studio's JSON export, as far as labeljury reads it (untrusted input: validated)."""

    model_config = ConfigDict(extra="ignore")
    data: dict[str, Any]
    annotations: list[_Annotation] = Field(default_factory=list)

    @field_validator("annotations", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


MAX_ID = 2**63 - 1  # SQLite's integers: a larger id is no row of any run


def _parse(n: int, raw: Any, q: HumanQueue) -> tuple[int, ExportedTask]:
    """The task's row id and the task, checked against the run: one line on anything else."""
    try:
        task = ExportedTask.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the task"
        raise ReviewError(f"item {n} of the export is not a Label Studio task ({where}: {first['msg']}); export the "
                          "project as JSON") from None
    row_id = task.data.get("labeljury_id")
    waiting = (q.get(row_id) if isinstance(row_id, int) and not isinstance(row_id, bool) and 0 <= row_id <= MAX_ID
               else None)
    if waiting is None:
        raise ReviewError(f"task {n} of the export (labeljury_id {row_id!r}) is not a row of this run waiting "
                          "for people; import the export of the tasks `labeljury export-queue` made for this run")
    if "text" in task.data and " ".join(str(task.data["text"]).split()) != " ".join(waiting.text.split()):
        raise ReviewError(f"task {n} of the export (labeljury_id {row_id}) carries another text than that row of this "
                          "run: the export is of another run's tasks; import the export of this run's "
                          "`labeljury export-queue`")
    return row_id, task


def import_reviews(run_dir: str | Path, export: Iterable[dict[str, Any]]) -> Imported:
    """Apply a Label Studio JSON export (a list of tasks with their annotations) to the run. Every task is
    checked (its shape, its row, its text, its labels) before any answer is stored: a bad export changes
    nothing."""
    with RunStore.existing(run_dir) as store:
        run_task = store.get_meta("task") or {}
    labels = list(run_task.get("labels") or [])
    sets = task_sets(run_task)
    matcher = LabelMatcher(labels)
    q = HumanQueue(run_dir)
    result = Imported()
    try:
        decided: list[tuple[int, list[str]]] = []
        for n, raw in enumerate(export, 1):
            row_id, task = _parse(n, raw, q)
            votes = []
            for ann in task.annotations:
                if ann.was_cancelled:
                    continue
                for r in ann.result:
                    choices = r.value.choices
                    if r.from_name == FROM_NAME and sets is not None and (choices or sets.allow_empty):
                        votes.append(_one_set(sets, choices, n, row_id))
                    elif r.from_name == FROM_NAME and choices and sets is None:
                        label = matcher.match(choices[0])
                        if label is None:
                            raise ReviewError(f"task {n} (labeljury_id {row_id}): label {choices[0]!r} is not one of "
                                              f"{labels}")
                        votes.append(label)
            decided.append((row_id, votes))
        for row_id, votes in decided:
            if not votes:
                result.unanswered += 1
                continue
            if sets is not None:
                _apply_sets(q, sets, row_id, votes, result)
                continue
            counts = Counter(votes).most_common()
            if len(counts) > 1 and counts[0][1] == counts[1][1]:
                q.flag(row_id, f"Label Studio annotators tied: {dict(counts)}")
                result.flagged.append(row_id)
                continue
            label, top = counts[0]
            note = None if len(counts) == 1 else f"Label Studio annotators disagreed: {dict(counts)}"
            if q.answer(row_id, label, owner="label-studio", via="label-studio", note=note):
                result.applied += 1
                result.disagreements += note is not None
            else:
                result.already += 1
    finally:
        q.close()
    return result


def _one_set(sets: LabelSets, choices: list[Any], n: int, row_id: int) -> str:
    """One annotator's choices of a multi-label task, checked, as the run stores a set."""
    if not all(isinstance(c, str) for c in choices):
        raise ReviewError(f"task {n} (labeljury_id {row_id}): its choices are not all label names")
    try:
        found = sets.parse(choices)
    except LabelSetError as err:
        raise ReviewError(f"task {n} (labeljury_id {row_id}): {err}") from None
    return sets.text(found or ())


def _apply_sets(q: HumanQueue, sets: LabelSets, row_id: int, votes: list[str], result: Imported) -> None:
    """Several annotators' sets of one row: a label is in when more than half chose it; a label exactly
    half chose (or, where the task has no empty sets, no label most chose) decides nothing: flagged."""
    n = len(votes)
    counts = Counter(label for v in votes for label in (sets.parse(v) or ()))
    ties = sorted(label for label, c in counts.items() if 2 * c == n)
    chosen = [label for label, c in counts.items() if 2 * c > n]
    if ties or (not chosen and not sets.allow_empty):
        why = f"labels {ties} chosen by exactly half" if ties else "no label chosen by most of them"
        q.flag(row_id, f"Label Studio annotators tied on the set ({why}): {dict(Counter(votes))}")
        result.flagged.append(row_id)
        return
    label = sets.text(chosen)
    note = None if len(set(votes)) == 1 else f"Label Studio annotators disagreed: {dict(Counter(votes))}"
    if q.answer(row_id, label, owner="label-studio", via="label-studio", note=note):
        result.applied += 1
        result.disagreements += note is not None
    else:
        result.already += 1


def read_export_file(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReviewError(f"export file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ReviewError(f"export file {str(p)!r} is not Label Studio's JSON export ({type(err).__name__}); "
                          "export the project as JSON") from None
    if not isinstance(data, list):
        raise ReviewError(f"export file {str(p)!r} is not a list of tasks; export the project as JSON")
    return data


# -- a running Label Studio, through its SDK ---------------------------------------------------------------
def _client(url: str, api_key_env: str) -> Any:
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise ReviewError("talking to Label Studio needs its SDK: pip install 'labeljury[label-studio]'") from None
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        raise ReviewError(f"the Label Studio API key is missing: set the environment variable {api_key_env}")
    return LabelStudio(base_url=url, api_key=key)


def push_queue(run_dir: str | Path, url: str, api_key_env: str, project: int | None = None) -> tuple[int, int]:
    """Send the rows waiting for people to a Label Studio project (made on the first push and kept in
    the run store). Rows already sent are not sent again. Returns (project id, tasks sent)."""
    tasks, task = queue_tasks(run_dir)
    ls = _client(url, api_key_env)
    with RunStore(run_dir) as store:
        project = project or store.get_meta("label_studio_project")
        sent = set(store.get_meta("label_studio_sent") or [])
        try:
            if project is None:
                created = ls.projects.create(title=f"labeljury: {task.get('name') or 'review'}"[:50],
                                             label_config=_config(task))
                project = int(created.id)
            new = [t for t in tasks if t["data"]["labeljury_id"] not in sent]
            if new:
                ls.projects.import_tasks(id=project, request=new)
        except Exception as err:  # the SDK's errors: one line
            raise ReviewError(f"Label Studio at {url} refused the tasks ({_one_line(err)})") from None
        store.set_meta("label_studio_project", project)
        store.set_meta("label_studio_sent", sorted(sent | {t["data"]["labeljury_id"] for t in new}))
    return project, len(new)


def pull_reviews(run_dir: str | Path, url: str, api_key_env: str, project: int | None = None) -> Imported:
    """Import the annotations of the run's Label Studio project."""
    with RunStore.existing(run_dir) as store:
        project = project or store.get_meta("label_studio_project")
    if project is None:
        raise ReviewError("this run has no Label Studio project yet; send the queue first with "
                          "`labeljury export-queue RUN_DIR --url ... --api-key-env ...` (or pass --project)")
    ls = _client(url, api_key_env)
    try:
        tasks = [{"data": t.data, "annotations": t.annotations or []}
                 for t in ls.tasks.list(project=int(project), fields="all")]
    except Exception as err:
        raise ReviewError(f"Label Studio at {url} did not give the annotations ({_one_line(err)})") from None
    return import_reviews(run_dir, tasks)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:300]
