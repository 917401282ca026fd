"""Every numeric key of the task file is range-checked when the file loads, with the key's path in the
one-line message: nothing out of range reaches the run (where it crashed late or was silently taken as
something else)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from labeljury import load_task
from labeljury.budget import plan_budget
from labeljury.cli import app
from labeljury.errors import TaskError

BASE = """name: t
labels: [a, b]
specialists: [tfidf-head]
reviewer: {kind: gold, column: label}
"""
LLM = "llm: {model: m, base_url: 'http://127.0.0.1:9/v1', api_key_env: null%s}\n"

BAD = [
    ("continual: {holdout: 1.5}", "continual.holdout"),
    ("continual: {holdout: 1.0}", "continual.holdout"),
    ("continual: {holdout: -0.1}", "continual.holdout"),
    ("continual: {stage_size: 0}", "continual.stage_size"),
    ("continual: {stage_size: -5}", "continual.stage_size"),
    ("continual: {replay: -1}", "continual.replay"),
    ("continual: {max_train_rows: 0}", "continual.max_train_rows"),
    ("review: {audit: 1.5}", "review.audit"),
    ("review: {audit: -3}", "review.audit"),
    ("review: {bootstrap: 2.5}", "review.bootstrap"),
    ("review: {budget: 1.5}", "review.budget"),
    ("review: {threshold: 2}", "review.threshold"),
    ("seed: -1", "seed"),
    (LLM % ", concurrency: 0", "llm.concurrency"),
    (LLM % ", batch_size: 0", "llm.batch_size"),
    (LLM % ", max_tokens: 0", "llm.max_tokens"),
    (LLM % ", timeout: 0", "llm.timeout"),
    (LLM % ", max_retries: -1", "llm.max_retries"),
    (LLM % ", temperature: 3", "llm.temperature"),
    (LLM % ", budget_usd: -1", "llm.budget_usd"),
    (LLM % ", budget_tokens: -5", "llm.budget_tokens"),
    ("engine: {kind: local, window: 0}", "engine.window"),
]


@pytest.mark.parametrize("line,key", BAD, ids=[f"{key}-{i}" for i, (line, key) in enumerate(BAD)])
def test_an_out_of_range_value_is_refused_when_the_file_loads_naming_its_key(tmp_path: Path, line: str,
                                                                           key: str) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(BASE + line + "\n")
    with pytest.raises(TaskError) as err:
        load_task(path)
    message = str(err.value)
    assert key in message and "\n" not in message


def test_the_cli_says_it_in_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(BASE + "continual: {holdout: 1.5}\n")
    data = tmp_path / "in.csv"
    data.write_text("text,label\nhello,a\n")
    result = CliRunner().invoke(app, ["run", str(path), "--input", str(data), "--output", str(tmp_path / "o.csv")])
    assert result.exit_code != 0 and "continual.holdout" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.csv.run").exists()  # nothing half-written


def test_an_audit_or_bootstrap_written_as_a_fraction_means_what_budget_means(tmp_path: Path) -> None:
    """`1.0` is every row for the audit as for the budget (it used to be one row), `1` is one row."""
    every, one = (tmp_path / "every.yaml", tmp_path / "one.yaml")
    every.write_text(BASE + "review: {budget: 1.0, audit: 1.0}\n")
    one.write_text(BASE + "review: {budget: 1.0, audit: 1}\n")
    t_every, t_one = load_task(every), load_task(one)
    assert t_every.review.audit == 1.0 and isinstance(t_every.review.audit, float) and t_one.review.audit == 1
    plan = plan_budget(t_every.review, None, n_rows=400, n_texts=400, n_labels=2, trainable=True)
    assert plan.audit == 400
    assert plan_budget(t_one.review, None, n_rows=400, n_texts=400, n_labels=2, trainable=True).audit == 1


def test_values_in_range_still_load(tmp_path: Path) -> None:
    path = tmp_path / "task.yaml"
    path.write_text(BASE + "continual: {holdout: 0, stage_size: 1, replay: 0}\nreview: {audit: 0.05, bootstrap: 40}\n"
                    + LLM % ", concurrency: 1, batch_size: 8, max_retries: 0, temperature: 0.7, budget_usd: 0")
    task = load_task(path)
    assert task.continual.holdout == 0 and task.review.audit == 0.05 and task.llm.budget_usd == 0
