"""The Label Studio round trip against a real Label Studio server that the test starts (its own virtual
environment, its default SQLite database): export the queue, annotate through its API, export, import
back, rerun; the rows carry `reviewed:label-studio`. `.ci/run` installs Label Studio in `.lsvenv`;
elsewhere set LABELJURY_LABEL_STUDIO to a `label-studio` executable, or the tests are skipped."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from labeljury import load_task, run
from labeljury.cli import app
from labeljury.store import RunStore

from .conftest import make_rows, require, write_task

REPO = Path(__file__).resolve().parents[1]
EXE = Path(os.environ.get("LABELJURY_LABEL_STUDIO", REPO / ".lsvenv" / "bin" / "label-studio"))
TOKEN = "0123456789abcdef0123456789abcdef01234567"
runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory):
    require(EXE.exists(), f"a Label Studio server ({EXE})")
    pytest.importorskip("label_studio_sdk")
    data = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {**os.environ, "LABEL_STUDIO_USERNAME": "reviewer@example.com", "LABEL_STUDIO_PASSWORD": "labeljury-test",
           "LABEL_STUDIO_USER_TOKEN": TOKEN, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
           "LABEL_STUDIO_BASE_DATA_DIR": str(data)}
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen([str(EXE), "start", "--no-browser", "--port", str(port), "--data-dir", str(data)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(url + "/health", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("Label Studio did not start: " + (data / "server.log").read_text()[-2000:])
            time.sleep(2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _api(url: str, path: str, body: object = None) -> object:
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
                                 method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=60) as res:
        return json.loads(res.read() or b"null")


def _annotate(url: str, task_id: int, label: str) -> None:
    _api(url, f"/api/tasks/{task_id}/annotations/", {"result": [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]})


def _waiting_run(tmp: Path) -> tuple[Path, Path, dict[str, str]]:
    rows = make_rows(240, seed=14)
    data = tmp / "in.csv"
    rows.to_csv(data, index=False)
    task = write_task(tmp / "task.yaml", budget=0.2)
    task.write_text(task.read_text().replace("{kind: gold, column: label}", "{kind: human}"))
    assert run(load_task(task), data, tmp / "out.csv").status == "waiting"
    return data, task, dict(zip(rows.text, rows.label))


def send_queue(run_dir: Path, url: str, monkeypatch) -> tuple[int, list[dict]]:
    """`labeljury export-queue --url`: the run's waiting rows sent to the Label Studio at `url`; (its project, tasks)."""
    monkeypatch.setenv("LJ_LS_KEY", TOKEN)
    sent = runner.invoke(app, ["export-queue", str(run_dir), "--url", url, "--api-key-env", "LJ_LS_KEY"])
    assert sent.exit_code == 0, sent.output
    with RunStore.existing(run_dir) as s:
        project = s.get_meta("label_studio_project")
    tasks = _api(url, f"/api/tasks?project={project}&page_size=1000")
    return project, tasks["tasks"] if isinstance(tasks, dict) else tasks


def test_round_trip_through_a_running_label_studio(tmp_path: Path, label_studio: str, monkeypatch) -> None:
    data, task, gold = _waiting_run(tmp_path)
    run_dir = tmp_path / "out.csv.run"
    project, tasks = send_queue(run_dir, label_studio, monkeypatch)
    with RunStore.existing(run_dir) as s:
        waiting = s.conn.execute("SELECT COUNT(*) FROM human_queue WHERE label IS NULL").fetchone()[0]
    assert len(tasks) == waiting > 3
    assert all(t["data"]["labeljury_id"] is not None for t in tasks)
    tie, majority = tasks[0], tasks[1]
    for t in tasks[2:]:
        _annotate(label_studio, t["id"], gold[t["data"]["text"]])
    _annotate(label_studio, tie["id"], "negative")  # two people disagree: nothing is decided
    _annotate(label_studio, tie["id"], "positive")
    truth = gold[majority["data"]["text"]]
    other = next(lab for lab in ("negative", "neutral", "positive") if lab != truth)
    for label in (truth, truth, other):  # two of three agree: the majority, the disagreement recorded
        _annotate(label_studio, majority["id"], label)
    back = runner.invoke(app, ["import-reviews", str(run_dir), "--url", label_studio, "--api-key-env", "LJ_LS_KEY"])
    assert back.exit_code == 0, back.output
    assert f"imported {len(tasks) - 1} review(s) (1 by majority" in back.stdout and "1 flagged" in back.stdout
    with RunStore.existing(run_dir) as s:
        reviews = s.reviews()
        why = dict(s.conn.execute("SELECT text_id, why FROM human_queue"))
    assert reviews[majority["data"]["labeljury_id"]].label == truth
    assert "disagreed" in reviews[majority["data"]["labeljury_id"]].reason
    assert tie["data"]["labeljury_id"] not in reviews and why[tie["data"]["labeljury_id"]] == "flagged"
    report = run(load_task(task), data, tmp_path / "out.csv", finish=True)
    assert report.status == "complete"
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert (out.annotation_source == "reviewed:label-studio").sum() >= len(tasks) - 1


def test_round_trip_through_files(tmp_path: Path, label_studio: str) -> None:
    data, task, gold = _waiting_run(tmp_path)
    run_dir = tmp_path / "out.csv.run"
    res = runner.invoke(app, ["export-queue", str(run_dir), "--format", "label-studio", "--output",
                              str(tmp_path / "tasks.json")])
    assert res.exit_code == 0, res.output
    config = (tmp_path / "tasks.json.config.xml").read_text()
    project = _api(label_studio, "/api/projects", {"title": "labeljury files", "label_config": config})
    _api(label_studio, f"/api/projects/{project['id']}/import", json.loads((tmp_path / "tasks.json").read_text()))
    tasks = _api(label_studio, f"/api/tasks?project={project['id']}&page_size=1000")
    tasks = tasks["tasks"] if isinstance(tasks, dict) else tasks
    assert tasks and all(isinstance(t["data"]["labeljury_id"], int) for t in tasks)
    for t in tasks:
        _annotate(label_studio, t["id"], gold[t["data"]["text"]])
    export = _api(label_studio, f"/api/projects/{project['id']}/export?exportType=JSON")
    (tmp_path / "export.json").write_text(json.dumps(export))
    back = runner.invoke(app, ["import-reviews", str(run_dir), str(tmp_path / "export.json")])
    assert back.exit_code == 0 and f"imported {len(tasks)} review(s)" in back.stdout, back.output
    report = run(load_task(task), data, tmp_path / "out.csv")
    assert report.status in ("waiting", "complete")
    with RunStore.existing(run_dir) as s:
        assert sum(r.source == "reviewed:label-studio" for r in s.reviews().values()) == len(tasks)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"data": {"text": "x", "labeljury_id": 99999}, "annotations": []}]))
    res = runner.invoke(app, ["import-reviews", str(run_dir), str(bad)])
    assert res.exit_code == 2 and "not a row of this run" in res.stderr


def _annotated(task: dict, label: str) -> dict:
    """A task as Label Studio exports it, annotated with `label`."""
    return {**task, "annotations": [{"was_cancelled": False, "result": [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]}]}


@pytest.mark.parametrize("break_it", ["annotations is text", "result is text", "value is text", "huge id",
                                      "another run's text", "not an object"])
def test_a_malformed_or_foreign_export_is_one_line_and_changes_nothing(tmp_path: Path, break_it: str) -> None:
    """Untrusted JSON is validated (a pydantic model of the export), checked against the run (row id and
    text) before anything is stored: a bad task, even the last one, leaves every row waiting."""
    data, task, gold = _waiting_run(tmp_path)
    run_dir = tmp_path / "out.csv.run"
    assert runner.invoke(app, ["export-queue", str(run_dir), "--output", str(tmp_path / "tasks.json")]).exit_code == 0
    tasks = [_annotated(t, gold[t["data"]["text"]]) for t in json.loads((tmp_path / "tasks.json").read_text())]
    last = tasks[-1]
    if break_it == "annotations is text":
        last["annotations"] = "yes"
    elif break_it == "result is text":
        last["annotations"][0]["result"] = "positive"
    elif break_it == "value is text":
        last["annotations"][0]["result"][0]["value"] = "positive"
    elif break_it == "huge id":
        last["data"]["labeljury_id"] = 2**70
    elif break_it == "another run's text":
        last["data"]["text"] = "a text of another run"
    else:
        tasks[-1] = ["not", "a", "task"]
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    res = runner.invoke(app, ["import-reviews", str(run_dir), str(tmp_path / "export.json")])
    assert res.exit_code != 0 and "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1
    with RunStore.existing(run_dir) as s:
        assert not any(r.source == "reviewed:label-studio" for r in s.reviews().values())
