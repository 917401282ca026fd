"""People answer label sets: the review page's toggles (a real browser), its API (a real server) and the
Label Studio round trip (`<Choices choice="multiple">`, several annotators: a per-label majority)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from labeljury import pipeline
from labeljury.cli import app
from labeljury.errors import ReviewError
from labeljury.labelsets import LabelSets
from labeljury.review import labelstudio
from labeljury.store import RunStore
from labeljury.task import Task

from .test_label_studio import _api, label_studio, send_queue  # noqa: F401  (the real Label Studio server fixture)
from .test_multilabel_run import LABELS, _sets_data
from .test_review_page import _page, browser, call, serve_review  # noqa: F401  (the real browser fixture)

runner = CliRunner()
SETS = LabelSets(LABELS)


def _human_run(tmp: Path, n: int = 200, **review: object) -> tuple[Path, Task, dict[str, tuple[str, ...]]]:
    texts, sets = _sets_data(n, seed=3)
    data = tmp / "in.csv"
    pd.DataFrame({"text": texts, "labels": ["|".join(s) for s in sets]}).to_csv(data, index=False)
    task = Task.model_validate({"name": "news", "labels": LABELS, "multi_label": True,
                                "reviewer": [{"kind": "human"}], "review": {"budget": 0.25, **review}})
    report = pipeline.run(task, data, tmp / "out.csv")
    assert report.status == "waiting" and report.pending > 0 and "labeljury review" in report.summary()
    return data, task, dict(zip(texts, sets))


@pytest.fixture
def waiting_sets(tmp_path: Path) -> tuple[Path, Task, Path, dict[str, tuple[str, ...]]]:
    data, task, gold = _human_run(tmp_path)
    return data, task, tmp_path / "out.csv.run", gold


@pytest.fixture
def set_server(waiting_sets):
    """The review page of the waiting multi-label run; yields its URL."""
    yield from serve_review(waiting_sets[2])


def test_people_answer_sets_through_the_api_until_the_run_is_complete(set_server, waiting_sets) -> None:
    data, task, run_dir, gold = waiting_sets
    status, row = call(set_server, "/api/next")
    assert status == 200 and row["multi_label"] is True and row["labels"] == LABELS
    assert row["suggestion"] is None  # the audit and the first sample are asked blind
    refused = {"a single label": {"label": "sports"}, "a string": {"labels": "sports"},
               "an unknown name": {"labels": ["sports", "cooking"]}, "a name twice": {"labels": ["sports", "sports"]},
               "the empty set": {"labels": []}, "a number": {"labels": [1]}}
    for what, body in refused.items():
        code, answer = call(set_server, "/api/answer", "POST", {"id": row["id"], **body})
        assert code == 400 and answer["error"], what
    assert "multi-label" in call(set_server, "/api/answer", "POST", {"id": row["id"], "label": "sports"})[1]["error"]
    code, answer = call(set_server, "/api/answer", "POST", {"id": row["id"], "labels": ["weather", "sports"]})
    assert code == 200 and answer["labels"] == ["sports", "weather"]  # in the task's order
    with RunStore.existing(run_dir) as s:  # stored the moment it was given, as the task writes a set
        assert s.reviews()[row["id"]].label == "sports|weather" and s.reviews()[row["id"]].source == "reviewed:human"
    first = row["id"]
    given: dict[int, tuple[str, ...]] = {}
    suggested = []
    for _ in range(15):  # answer what waits with the true sets, rerun, until the run is complete
        while True:
            status, row = call(set_server, "/api/next")
            if status == 204:
                break
            suggested.append(row["suggestion"])
            truth = gold[row["text"]]
            assert call(set_server, "/api/answer", "POST", {"id": row["id"], "labels": list(truth)})[0] == 200
            given[row["id"]] = truth
        report = pipeline.run(task, data, run_dir.with_name("out.csv"))
        if report.status == "complete":
            break
    assert report.status == "complete" and report.reviews == report.budget == 50
    # the rows routed as hard were asked with the vote's set, a list of task labels
    assert any(s for s in suggested) and all(s is None or set(s) <= set(LABELS) for s in suggested)
    out = pd.read_csv(run_dir.with_name("out.csv"), keep_default_na=False)
    with RunStore.existing(run_dir) as s:
        text_of = {t: s.texts_by_id([t])[t][0] for t in [first, *given]}
    human = out[out.annotation_source == "reviewed:human"]
    assert len(human) >= len(given) + 1
    labeled = {text: SETS.parse(a) for text, a in zip(human.text, human.annotation)}
    assert labeled[text_of[first]] == ("sports", "weather")  # what the person said, not the gold set
    assert all(labeled[text_of[t]] == truth for t, truth in given.items())


def test_the_page_toggles_labels_by_key_and_submits_the_set_with_enter(set_server, browser, waiting_sets) -> None:  # noqa: F811
    run_dir = waiting_sets[2]
    with RunStore(run_dir) as s:  # every waiting row suggests a set, as the vote does for a hard row
        s.conn.execute("UPDATE human_queue SET suggestion='politics|music' WHERE label IS NULL")
    page = _page(browser, set_server)
    chosen = "[...document.querySelectorAll('#labels button.chosen')].map(b => b.dataset.label)"
    assert page.evaluate(chosen) == ["politics", "music"]  # the suggestion starts chosen
    first = page.locator("#text").text_content()
    page.keyboard.press("1")  # sports on
    page.keyboard.press("4")  # music off
    assert page.evaluate(chosen) == ["sports", "politics"]
    page.keyboard.press("Enter")
    page.wait_for_function("t => document.getElementById('text').textContent !== t", arg=first)
    second = page.locator("#text").text_content()
    page.keyboard.press("2")
    page.keyboard.press("4")  # nothing chosen: the task has no empty sets
    page.keyboard.press("Enter")
    page.wait_for_function("document.getElementById('status').textContent.includes('at least one')")
    assert page.locator("#text").text_content() == second
    page.locator("#labels button[data-label='weather']").click()
    page.locator("#submit").click()
    page.wait_for_function("t => document.getElementById('text').textContent !== t", arg=second)

    def answered() -> dict[str, str]:
        with RunStore.existing(run_dir) as s:
            reviews = {t: r.label for t, r in s.reviews().items() if r.source == "reviewed:human"}
            return {s.texts_by_id([t])[t][0]: label for t, label in reviews.items()}

    deadline = time.monotonic() + 10
    while len(answered()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert answered() == {first: "sports|politics", second: "weather"}
    assert page.errors == []


def _annotate_set(url: str, task_id: int, labels: tuple[str, ...] | list[str]) -> None:
    _api(url, f"/api/tasks/{task_id}/annotations/", {"result": [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": list(labels)}}]})


def test_sets_round_trip_through_a_running_label_studio(tmp_path: Path, label_studio: str, monkeypatch) -> None:  # noqa: F811
    data, task, gold = _human_run(tmp_path)
    run_dir = tmp_path / "out.csv.run"
    project, tasks = send_queue(run_dir, label_studio, monkeypatch)
    assert 'choice="multiple"' in _api(label_studio, f"/api/projects/{project}")["label_config"]
    tie, majority = tasks[0], tasks[1]
    for t in tasks[2:]:
        _annotate_set(label_studio, t["id"], gold[t["data"]["text"]])
    for labels in (["sports", "music"], ["sports"], ["sports", "weather"]):  # sports 3 of 3: the others 1 of 3
        _annotate_set(label_studio, majority["id"], labels)
    for labels in (["sports"], ["politics"]):  # each label chosen by exactly half: nothing decided
        _annotate_set(label_studio, tie["id"], labels)
    back = runner.invoke(app, ["import-reviews", str(run_dir), "--url", label_studio, "--api-key-env", "LJ_LS_KEY"])
    assert back.exit_code == 0, back.output
    assert f"imported {len(tasks) - 1} review(s) (1 by majority" in back.stdout and "1 flagged" in back.stdout
    with RunStore.existing(run_dir) as s:
        reviews = s.reviews()
    assert reviews[majority["data"]["labeljury_id"]].label == "sports"
    assert tie["data"]["labeljury_id"] not in reviews
    assert all(SETS.parse(reviews[t["data"]["labeljury_id"]].label) == gold[t["data"]["text"]] for t in tasks[2:])
    report = pipeline.run(task, data, tmp_path / "out.csv", finish=True)
    assert report.status in ("waiting", "complete")


def test_a_label_studio_export_of_sets_is_read_by_per_label_majority_and_checked_first(tmp_path: Path) -> None:
    """Offline (the export as a file): the import's own rules for sets."""
    data, task, gold = _human_run(tmp_path)
    run_dir = tmp_path / "out.csv.run"
    out = tmp_path / "tasks.json"
    res = runner.invoke(app, ["export-queue", str(run_dir), "--format", "label-studio", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert 'choice="multiple"' in (tmp_path / "tasks.json.config.xml").read_text()
    tasks = json.loads(out.read_text())

    def annotated(t: dict, *sets: list[str]) -> dict:
        return {**t, "annotations": [{"was_cancelled": False, "result": [
            {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": s}}]} for s in sets]}

    bad = [annotated(tasks[0], ["sports"]), annotated(tasks[1], ["sports", "cooking"])]
    with pytest.raises(ReviewError, match="task 2 .*'cooking' is not a task label"):
        labelstudio.import_reviews(run_dir, bad)
    with RunStore.existing(run_dir) as s:
        assert not any(r.source == "reviewed:label-studio" for r in s.reviews().values())  # nothing stored
    export = [annotated(tasks[0], ["music", "politics"], ["politics"], ["politics", "music", "sports"]),
              annotated(tasks[1], ["weather"], ["music"]),
              annotated(tasks[2], ["weather", "sports"])]
    done = labelstudio.import_reviews(run_dir, export)
    assert (done.applied, done.disagreements, done.flagged) == (2, 1, [tasks[1]["data"]["labeljury_id"]])
    with RunStore.existing(run_dir) as s:
        reviews = s.reviews()
    assert reviews[tasks[0]["data"]["labeljury_id"]].label == "politics|music"  # 3 of 3 and 2 of 3
    assert reviews[tasks[2]["data"]["labeljury_id"]].label == "sports|weather"
