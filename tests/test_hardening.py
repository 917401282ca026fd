"""Hardening: no silent wrong label, no lost work, no code run from a run directory. Every case ends
in the right result or in one error line (non-zero exit, no traceback, nothing half-written)."""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from labeljury import load_task, run
from labeljury.cli import app
from labeljury.errors import ReviewError, RunStoreError, TaskError
from labeljury.review.base import ReviewItem
from labeljury.review.file import FileReviewer
from labeljury.store import RunStore, lock_run_dir

from .conftest import make_rows, write_task

runner = CliRunner()


def one_line_error(result, *needles: str) -> str:
    assert result.exit_code != 0, result.output
    # the progress lines before it (a bar on a terminal, a line a step in a pipe) are not the error
    output = (result.stderr or result.output).strip()
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert "Traceback" not in output and len(errors) == 1, output
    text = errors[0]
    for n in needles:
        assert n in text, text
    return text


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "in.csv"
    make_rows(240, seed=5).to_csv(data, index=False)
    return data, write_task(tmp_path / "task.yaml", budget=0.2)


# -- 1. an edit anywhere in the input is noticed --------------------------------------------------
def test_a_same_size_edit_in_the_middle_of_a_large_input_is_refused(tmp_path: Path) -> None:
    rows = make_rows(300, seed=2)
    rows["pad"] = "x" * 9000  # > 2 MiB in all, so the middle is outside the first and last MiB
    data = tmp_path / "in.csv"
    rows.to_csv(data, index=False)
    task = load_task(write_task(tmp_path / "t.yaml", specialists="[tfidf-head]"))
    run(task, data, tmp_path / "out.csv")
    raw = bytearray(data.read_bytes())
    middle = len(raw) // 2
    i = raw.index(b"great", middle - 200_000) if b"great" in raw[middle - 200_000:] else None
    assert i is not None
    raw[i:i + 5] = b"awful"  # same size, a row that now says the opposite
    data.write_bytes(bytes(raw))
    with pytest.raises(RunStoreError, match="another input file"):
        run(task, data, tmp_path / "out2.csv", tmp_path / "out.csv.run")
    one_line_error(invoke("export", tmp_path / "out.csv.run", "--output", tmp_path / "again.csv"), "changed since the run")
    assert not (tmp_path / "again.csv").exists() and not list(tmp_path.glob(".again.csv*"))


# -- 2, 3. labels are names, and one matching rule ------------------------------------------------
def test_yes_no_labels_stay_names_and_integer_gold_labels_match(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: numeric\nlabels: [0, 1, 2]\nspecialists: [tfidf-head, nb-head]\n"
                    "reviewer: {kind: gold, column: label}\nreview: {budget: 0.3}\n")
    task = load_task(path)
    assert task.label_names == ["0", "1", "2"]
    rows = make_rows(150, seed=9)
    rows["label"] = rows["label"].map({"negative": 0, "neutral": 1, "positive": 2})  # integers in JSONL
    data = tmp_path / "in.jsonl"
    rows.to_json(data, orient="records", lines=True)
    report = run(task, data, tmp_path / "out.jsonl")
    assert report.status == "complete" and report.reviews == report.budget
    out = pd.read_json(tmp_path / "out.jsonl", lines=True, dtype=False)
    reviewed = out[out.annotation_source == "reviewed:gold"]
    assert len(reviewed) >= report.reviews and (reviewed.annotation == reviewed.label.astype(str)).all()
    # at least one voter is left, and no trainable head was dropped on a dozen rows
    assert all(s["status"] == "active" for s in report.specialists)
    yn = tmp_path / "yn.yaml"
    yn.write_text("name: yn\nlabels: [yes, no]\n")
    assert load_task(yn).label_names == ["yes", "no"]


def test_gold_labels_that_match_no_label_stop_the_run_with_one_line(tmp_path: Path) -> None:
    rows = make_rows(200, seed=3)
    rows["label"] = rows["label"].map({"negative": "bad", "neutral": "meh", "positive": "good"})
    data = tmp_path / "in.csv"
    rows.to_csv(data, index=False)
    task = write_task(tmp_path / "t.yaml")
    text = one_line_error(invoke("run", task, "--input", data, "--output", tmp_path / "out.csv"),
                          "came back without a label", "queued:gold-label-unknown")
    assert "'bad'" in text or "'meh'" in text or "'good'" in text
    assert not (tmp_path / "out.csv").exists()


def test_eval_matches_gold_labels_as_the_gold_reviewer_does(tmp_path: Path, small) -> None:
    from labeljury import evaluate

    data, task = small
    run(load_task(task), data, tmp_path / "out.csv")
    df = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    before = evaluate(tmp_path / "out.csv", "label").accuracy
    df["label"] = " " + df["label"].str.upper() + " "  # the gold reviewer accepts these: so does eval
    df.to_csv(tmp_path / "shouty.csv", index=False)
    assert evaluate(tmp_path / "shouty.csv", "label", tmp_path / "out.csv.run").accuracy == before


# -- 4. review-queue lines are checked --------------------------------------------------------------
@pytest.mark.parametrize("edit, needle", [
    (lambda recs: recs + [{**recs[0], "label": "negative"}], "has label"),
    (lambda recs: [{**recs[0], "text": recs[0]["text"] + " (edited)"}, *recs[1:]], "not the run's text"),
    (lambda recs: [{**recs[0], "id": recs[0]["id"] + 0.5}, *recs[1:]], "not a whole number"),
    (lambda recs: [*recs, {**recs[0], "id": 99999, "label": "neutral"}], "not a row waiting"),
])
def test_a_bad_review_queue_line_is_refused_with_its_line_number(tmp_path: Path, edit, needle) -> None:
    items = [ReviewItem(key=i, text=f"text {i}", row=i) for i in range(3)]
    queue = tmp_path / "q.jsonl"
    reviewer = FileReviewer(queue, ["negative", "neutral", "positive"])
    assert all(r.pending for r in reviewer.review(items))
    recs = [json.loads(line) for line in queue.read_text().splitlines()]
    recs[0]["label"] = "positive"
    queue.write_text("".join(json.dumps(r) + "\n" for r in edit(recs)))
    with pytest.raises(ReviewError, match=needle) as err:
        list(reviewer.review(items))
    assert "line " in str(err.value) and "\n" not in str(err.value)


# -- 5. a resume that would lose a voter ---------------------------------------------------------------
def test_a_voter_that_cannot_be_built_on_resume_stops_the_run(tmp_path: Path, small, monkeypatch) -> None:
    from labeljury.registry import Registry
    from labeljury.specialists import build_specialist

    data, task_path = small
    task = load_task(task_path)
    run(task, data, tmp_path / "out.csv")
    with RunStore(tmp_path / "out.csv.run") as store:
        registry = Registry(store, lambda name: build_specialist(task.specialists[0], task, name=name))
        built = [(build_specialist(task.specialists[0], task, name="tfidf-head"), task.specialists[0].model_dump(mode="json"))]
        with pytest.raises(RunStoreError, match="'vader' voted in this run before but cannot be built now \\(offline"):
            registry.open(built, {"vader": "offline"})


# -- 6. small inputs ----------------------------------------------------------------------------------------
def test_a_tiny_input_keeps_every_voter(tmp_path: Path) -> None:
    # labels that the texts barely predict: on a dozen bootstrap rows, cross-validated heads score
    # below chance by luck alone; judged by a point estimate they were dropped and never came back
    rows = make_rows(120, seed=11)
    rows["label"] = np.random.default_rng(0).choice(["negative", "neutral", "positive"], len(rows))
    data = tmp_path / "in.csv"
    rows.to_csv(data, index=False)
    task = load_task(write_task(tmp_path / "t.yaml", specialists="[embedding-head, nb-head, hybrid-head, tfidf-head]",
                                budget=0.4, extra="continual: {stage_size: 12}\n"))
    report = run(task, data, tmp_path / "out.csv")
    assert report.status == "complete"
    assert all(s["status"] == "active" for s in report.specialists), report.specialists
    with RunStore(tmp_path / "out.csv.run") as store:
        assert all(e["version"] >= 2 for e in store.specialists())  # every head kept learning in the stages


# -- 7. export-model never deletes the run ---------------------------------------------------------------
def test_export_model_refuses_a_folder_holding_the_run(tmp_path: Path, small, monkeypatch) -> None:
    data, task = small
    run(load_task(task), data, tmp_path / "out.csv")
    monkeypatch.chdir(tmp_path)
    for target in (".", str(tmp_path), str(tmp_path / "out.csv.run" / "..")):
        one_line_error(invoke("export-model", "out.csv.run", "--output", target, "--force"), "holds")
    assert data.exists() and (tmp_path / "out.csv").exists() and (tmp_path / "out.csv.run" / "run.db").exists()


# -- 8. one writer per run directory -------------------------------------------------------------------------
def test_a_second_run_on_a_busy_run_directory_is_refused(tmp_path: Path, small) -> None:
    data, task = small
    (tmp_path / "out.csv.run").mkdir()
    held = lock_run_dir(tmp_path / "out.csv.run")
    try:
        one_line_error(invoke("run", task, "--input", data, "--output", tmp_path / "out.csv"),
                       "is in use by process", str(os.getpid()))
    finally:
        held.close()
    assert invoke("run", task, "--input", data, "--output", tmp_path / "out.csv").exit_code == 0


# -- 9. a full disk ----------------------------------------------------------------------------------------
FULL = """
import errno, sqlite3, sys
import labeljury.store, labeljury.registry
from labeljury.cli import main
def full(*a, **k):
    raise sqlite3.OperationalError("database or disk is full")
def nospace(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")
if sys.argv[1] == "db":
    labeljury.store.RunStore.put_predictions = full
else:
    labeljury.registry.Registry.save_checkpoint = nospace
sys.argv = ["labeljury", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("where", ["db", "checkpoint"])
def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path: Path, small, where: str) -> None:
    data, task = small
    out = tmp_path / "out.csv"
    args = ["run", str(task), "--input", str(data), "--output", str(out)]
    done = subprocess.run([sys.executable, "-c", FULL, where, *args], capture_output=True, text=True, timeout=600)
    lines = [x for x in done.stderr.strip().splitlines() if " eta " not in x and "━" not in x]
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "no space left" in lines[-1] and "rerun" in lines[-1]
    assert not out.exists()
    assert invoke(*args).exit_code == 0 and out.exists()  # space is back: the same command resumes


# -- 10. a run.db that is not a run store is never touched --------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"not a database at all" * 50])
def test_an_empty_or_damaged_run_db_is_refused_and_left_alone(tmp_path: Path, small, content: bytes) -> None:
    data, task = small
    run_dir = tmp_path / "out.csv.run"
    run_dir.mkdir()
    (run_dir / "run.db").write_bytes(content)
    for args in (["status", run_dir], ["status", run_dir, "--json"], ["export", run_dir, "--output", tmp_path / "x.csv"],
                 ["export-model", run_dir, "--output", tmp_path / "m"],
                 ["run", task, "--input", data, "--output", tmp_path / "out.csv"]):
        one_line_error(invoke(*args), "run.db")
    assert (run_dir / "run.db").read_bytes() == content
    other = tmp_path / "other.run"
    other.mkdir()
    sqlite3.connect(other / "run.db").execute("CREATE TABLE mine (x)").connection.commit()  # someone else's database
    one_line_error(invoke("status", other), "not a labeljury run store")


# -- 11. duplicate keys --------------------------------------------------------------------------------------
def test_duplicate_keys_in_the_task_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: a\nlabels: [x, y]\nreview: {budget: 0.2, budget: 0.5}\n")
    with pytest.raises(TaskError, match="duplicate key 'budget' at line 3"):
        load_task(path)


# -- 12. a very long text costs a bounded time ---------------------------------------------------------------
def test_long_texts_are_cut_and_scored_in_windows(tmp_path: Path, monkeypatch) -> None:
    from labeljury.specialists import base, lexicon

    seen: list[int] = []
    analyzer = lexicon.vader_analyzer()
    real = analyzer.polarity_scores
    monkeypatch.setattr(analyzer, "polarity_scores", lambda t: (seen.append(len(t)), real(t))[1])
    rows = make_rows(120, seed=4)
    rows.loc[3, "text"] = "wonderful great day " * 60_000  # 1.2 MB
    data = tmp_path / "in.csv"
    rows.to_csv(data, index=False)
    task = load_task(write_task(tmp_path / "t.yaml", specialists="[tfidf-head, vader]", budget=0.3))
    run(task, data, tmp_path / "out.csv")
    assert seen and max(seen) <= lexicon.VADER_WINDOW
    assert sum(seen) < 2 * base.MAX_TEXT_CHARS * 120  # every text read at most MAX_TEXT_CHARS
    long_row = pd.read_csv(tmp_path / "out.csv", keep_default_na=False).iloc[3]
    assert long_row.annotation in {"negative", "neutral", "positive"}


# -- 13. the LLM caps hold across restarts -------------------------------------------------------------------
def test_calls_in_flight_at_a_kill_are_charged_at_their_worst_case(tmp_path: Path) -> None:
    import asyncio

    from labeljury.llm.cost import Ledger, Price
    from labeljury.llm.journal import SQLiteSpendJournal
    from labeljury.task import LLMSpec

    assert LLMSpec(model="m").budget_usd == 5.0  # a cap by default
    assert LLMSpec(model="m", budget_usd=None).budget_usd is None  # only an explicit null goes without
    price = Price(1.0, 1.0)  # $1 per million tokens
    db = tmp_path / "run.db"
    first = Ledger(budget_usd=0.01, journal=SQLiteSpendJournal(db, "m"))

    async def reserve() -> None:
        await first.reserve(price, 3000, 1000)  # worst case 4000 tokens = $0.004
        await first.reserve(price, 3000, 1000)

    asyncio.run(reserve())  # ...and the process dies before either answer comes
    again = Ledger(budget_usd=0.01, journal=SQLiteSpendJournal(db, "m"))
    assert again.spent_usd == pytest.approx(0.008) and again.spent_tokens == 8000
    with pytest.raises(Exception, match="budget"):
        asyncio.run(again.reserve(price, 3000, 1000))  # a third would cross $0.01


# -- 14. a task file cannot send a secret anywhere ----------------------------------------------------------
def test_a_task_file_cannot_send_a_secret_to_its_own_host(tmp_path: Path, small, monkeypatch) -> None:
    from .llm_fakes import FakeLLMServer

    data, task = small
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.delenv("LABELJURY_KEY_HOSTS", raising=False)
    with FakeLLMServer() as server:
        task.write_text(task.read_text().replace("{kind: gold, column: label}", "{kind: llm}") +
                        f"llm: {{model: gpt-4o-mini, base_url: '{server.base_url}', api_key_env: AWS_SECRET_ACCESS_KEY}}\n")
        one_line_error(invoke("run", task, "--input", data, "--output", tmp_path / "out.csv"),
                       "AWS_SECRET_ACCESS_KEY", "not allowed", "--allow-key-host")
        assert server.counts["requests"] == 0
        host = server.base_url.split("//")[1].split("/")[0]
        ok = invoke("run", task, "--input", data, "--output", tmp_path / "out.csv", "--allow-key-host", host)
        assert ok.exit_code == 0, ok.output
        assert f"sending the API key in $AWS_SECRET_ACCESS_KEY to {host}" in ok.stderr
        assert server.counts["requests"] > 0


# -- 15. the review queue never replaces a user's file --------------------------------------------------------
def test_the_queue_never_replaces_a_file_that_is_not_a_queue(tmp_path: Path, small) -> None:
    data, task = small
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes\n")
    task.write_text(task.read_text().replace("{kind: gold, column: label}", f"{{kind: file, path: '{precious}'}}"))
    one_line_error(invoke("run", task, "--input", data, "--output", tmp_path / "out.csv"), "not a labeljury review queue")
    assert precious.read_text() == "my notes\n"


# -- 16. nothing is unpickled from a run directory ------------------------------------------------------------
class _Boom:
    def __reduce__(self):  # noqa: ANN204 - what a malicious pickle does when it is loaded
        return (Path.write_text, (Path(os.environ["LJ_MARKER"]), "pwned"))


def test_no_pickle_in_a_run_directory_is_ever_loaded(tmp_path: Path, small, monkeypatch) -> None:
    data, task = small
    marker = tmp_path / "marker"
    monkeypatch.setenv("LJ_MARKER", str(marker))
    task.write_text(task.read_text().replace("[tfidf-head, vader]", "[tfidf-head, nb-head, vader]"))
    run(load_task(task), data, tmp_path / "out.csv")
    run_dir = tmp_path / "out.csv.run"
    for ckpt in (run_dir / "checkpoints").iterdir():
        for name in ("model.joblib", "model.pkl", "arrays.pkl"):
            (ckpt / name).write_bytes(pickle.dumps(_Boom()))
    for args in (["status", run_dir], ["export-model", run_dir, "--output", tmp_path / "m"],
                 ["export", run_dir, "--output", tmp_path / "again.csv"],
                 ["run", task, "--input", data, "--output", tmp_path / "out.csv"]):
        assert invoke(*args).exit_code == 0
    done = subprocess.run([sys.executable, str(run_dir / "annotate.py"), str(data), str(tmp_path / "s.csv")],
                          capture_output=True, text=True, timeout=600, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert not marker.exists()
    with np.load(next((run_dir / "checkpoints").glob("*/arrays.npz")), allow_pickle=False) as arrays:
        assert arrays.files  # the real checkpoint: arrays, no pickle


def test_a_run_dir_that_is_a_users_folder_is_refused_and_left_untouched(tmp_path: Path, small) -> None:
    """--run-dir naming an existing folder that is not a run directory: one line, non-zero exit, and the
    user's plan.json, annotate.py, report.html and feature-cache/ are as they were."""
    data, task = small
    mine = tmp_path / "my-project"
    (mine / "feature-cache").mkdir(parents=True)
    files = {"plan.json": '{"mine": true}', "annotate.py": "print('mine')\n", "report.html": "<p>mine</p>",
             "feature-cache/notes.txt": "keep me"}
    for name, text in files.items():
        (mine / name).write_text(text)
    result = invoke("run", task, "--input", data, "--output", tmp_path / "out.csv", "--run-dir", mine)
    assert result.exit_code != 0 and "is not a run directory" in result.output and "Traceback" not in result.output
    assert {name: (mine / name).read_text() for name in files} == files
    assert not (mine / "run.db").exists() and not (tmp_path / "out.csv").exists()
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is fine: it becomes the run directory
    assert invoke("run", task, "--input", data, "--output", tmp_path / "out.csv", "--run-dir", empty).exit_code == 0
    assert (empty / "run.db").exists()


def test_a_users_folder_is_refused_before_an_llm_reviewer_writes_its_cache_there(tmp_path: Path, small) -> None:
    data, task = small
    text = task.read_text().replace("reviewer: {kind: gold, column: label}", "reviewer: {kind: llm}")
    task.write_text(text + "llm: {model: gpt-4o-mini, base_url: 'http://127.0.0.1:9/v1', api_key_env: null}\n")
    mine = tmp_path / "my-project"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    result = invoke("run", task, "--input", data, "--output", tmp_path / "out.csv", "--run-dir", mine)
    assert result.exit_code != 0 and "is not a run directory" in result.output
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # no run.db, no cache, nothing


class _Logs:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def bar(self, description, total, unit="rows"):  # noqa: ANN001, ANN201 - the Progress protocol
        from labeljury.progress import SilentProgress

        return SilentProgress().bar(description, total, unit)

    def log(self, message: str) -> None:
        self.lines.append(message)


@pytest.mark.parametrize("case", ["no budget", "finish before people"])
def test_a_run_whose_specialists_cannot_vote_yet_finishes_and_says_why(tmp_path: Path, case: str) -> None:
    """Only trainable specialists and no reviewed row (a budget of 0; --finish before anyone answered):
    nothing can vote. The run finishes, every unreviewed row says it has no vote, and one line says why
    (it used to end in a traceback: "the vote tensor needs at least one specialist")."""
    data = tmp_path / "in.csv"
    make_rows(120, seed=1).to_csv(data, index=False)
    path = write_task(tmp_path / "t.yaml", specialists="[tfidf-head]", budget=0.2)
    if case == "no budget":
        path.write_text(path.read_text().replace("budget: 0.2", "budget: 0"))
    else:
        path.write_text(path.read_text().replace("reviewer: {kind: gold, column: label}", "reviewer: {kind: human}"))
    task, logs = load_task(path), _Logs()
    out = tmp_path / "out.csv"
    if case == "finish before people":
        assert run(task, data, out).status == "waiting"
    report = run(task, data, out, progress=logs, finish=case == "finish before people")
    assert report.status == "complete"
    df = pd.read_csv(out, keep_default_na=False)
    assert set(df.annotation_source) <= {"skipped:no-vote", "queued:human"} and (df.annotation == "").all()
    assert "skipped:no-vote" in set(df.annotation_source)
    assert any(line.startswith("no specialist could vote") for line in logs.lines)


def test_a_gold_column_with_empty_and_unknown_values_is_blamed_for_both(tmp_path: Path) -> None:
    rows = make_rows(200, seed=3)
    labels = rows["label"].astype(object)
    labels[rows.index % 2 == 0] = ""  # half empty ...
    labels[rows.index % 4 == 1] = "meh"  # ... and a quarter not a label at all
    rows["label"] = labels
    data = tmp_path / "in.csv"
    rows.to_csv(data, index=False)
    text = one_line_error(invoke("run", write_task(tmp_path / "t.yaml"), "--input", data, "--output",
                                 tmp_path / "out.csv"), "came back without a label")
    assert "queued:gold-label-missing" in text and "queued:gold-label-unknown" in text and "'meh'" in text
    assert "is empty for these rows" in text and "must be the task's labels" in text


def test_a_small_run_without_an_audit_says_why_and_what_to_set(tmp_path: Path) -> None:
    """300 rows at 20%: the default audit (a third of 60 reviews) is under its 30-row floor and is off.
    The run, `status` and the report say so, with the setting that gives one."""
    from labeljury.report import build_report
    from labeljury.status import _estimate_line, run_status

    data = tmp_path / "in.csv"
    make_rows(300, seed=8).to_csv(data, index=False)
    logs = _Logs()
    out = tmp_path / "out.csv"
    assert run(load_task(write_task(tmp_path / "t.yaml", budget=0.2)), data, out, progress=logs).status == "complete"
    said = [line for line in logs.lines if line.startswith("no audit sample")]
    assert said and "20 of its 60" in said[0] and "review.audit: 30" in said[0]
    info = run_status(out.with_name("out.csv.run"))
    assert info["audit_rows"] == 0 and "review.audit: 30" in _estimate_line(info)
    assert "review.audit: 30" in build_report(out.with_name("out.csv.run"))


def test_texts_of_one_letter_or_a_symbol_are_labeled_not_a_crash(tmp_path: Path) -> None:
    """Word n-grams find no vocabulary in texts like "a", "?" or an emoji (scikit-learn's words have two
    characters or more): the n-gram view counts shorter words instead of failing with a traceback."""
    texts = list("abcdefgh") + ["?", "!", "\N{GRINNING FACE}", "\N{CRYING FACE}"]
    data = tmp_path / "in.csv"
    pd.DataFrame({"text": texts, "label": ["positive", "negative", "neutral"] * 4}).to_csv(data, index=False)
    report = run(load_task(write_task(tmp_path / "task.yaml", budget=0.5)), data, tmp_path / "out.csv")
    assert report.status == "complete"
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert len(out) == 12 and set(out.annotation) <= {"positive", "negative", "neutral"}
    assert (out.annotation_source == "vote").any()  # the vote labeled rows, with the n-gram head among its voters
