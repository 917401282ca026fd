"""`labeljury plan`, `labeljury baseline`, and the LLM cost in `status` and `eval`, through the CLI
against the loopback LLM server."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from labeljury.cli import app
from labeljury.store import RunStore

from .conftest import make_rows, write_task

sys.path.insert(0, str(Path(__file__).parent))
from llm_fakes import FakeLLMServer

runner = CliRunner()
PRICES = "{input: 100, output: 200}"  # $ per 1M tokens: dear enough to see cents on a few rows


def _invoke(*args: object):  # noqa: ANN202
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(result, *needles: str) -> str:  # noqa: ANN001
    """A non-zero exit with one error line (after any progress bar already drawn) and no traceback."""
    assert result.exit_code != 0, result.output
    output = result.stderr.strip()
    errors = [line for line in output.splitlines() if line.startswith("error:")]  # progress lines are no error
    assert "Traceback" not in output + result.stdout and len(errors) == 1, output
    text = errors[0]
    for n in needles:
        assert n in text, text
    return text


def _task(tmp_path: Path, base_url: str | None, *, reviewer: str = "{kind: gold, column: label}",
          specialists: str = "[tfidf-head, vader]", llm: str = "", name: str = "task.yaml") -> Path:
    path = write_task(tmp_path / name, specialists=specialists)
    text = path.read_text().replace("{kind: gold, column: label}", reviewer)
    if base_url is not None:
        text += (f"llm: {{model: gpt-4o-mini, base_url: '{base_url}', api_key_env: null, timeout: 1.0, "
                 f"max_retries: 3, prices: {PRICES}{llm}}}\n")
    path.write_text(text)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    df = make_rows(40, seed=4)
    df.loc[5, "text"] = ""  # an empty row is skipped, not sent
    df.loc[7, "text"] = df.loc[6, "text"]  # a duplicate is asked once
    path = tmp_path / "in.csv"
    df.to_csv(path, index=False)
    return path


@pytest.fixture
def server():
    with FakeLLMServer() as s:
        yield s


def test_baseline_writes_the_pipeline_format_and_resumes_for_free(tmp_path, data, server):
    task = _task(tmp_path, server.base_url)
    out = tmp_path / "out.csv"
    first = _invoke("baseline", task, "--input", data, "--output", out)
    assert first.exit_code == 0, first.output
    assert "zero-shot baseline labeled 40 rows" in first.stdout and "LLM cost $" in first.stdout
    assert server.counts["requests"] == 38  # 40 rows, one empty, one duplicate
    df = pd.read_csv(out, keep_default_na=False)
    assert list(df.columns) == ["id", "text", "label", "annotation", "annotation_confidence", "annotation_source"]
    assert df.loc[5, "annotation_source"] == "skipped:empty" and df.loc[5, "annotation"] == ""
    labeled = df.drop(index=5)
    assert (labeled["annotation_source"] == "llm:zero-shot").all()
    assert set(labeled["annotation"]) <= {"negative", "neutral", "positive"}
    assert df.loc[6, "annotation"] == df.loc[7, "annotation"]
    again = _invoke("baseline", task, "--input", data, "--output", out)
    assert again.exit_code == 0 and server.counts["requests"] == 38  # every call came from the cache
    assert pd.read_csv(out, keep_default_na=False).equals(df)

    status = json.loads(_invoke("status", tmp_path / "out.csv.run", "--json").stdout)
    paid = (server.usage["prompt_tokens"] * 100 + server.usage["completion_tokens"] * 200) / 1e6
    assert status["kind"] == "baseline" and status["state"] == "complete" and status["method"] == "zero-shot"
    assert status["llm"]["cost_usd"] == pytest.approx(paid, rel=1e-6) and status["llm"]["calls"] == 38
    assert status["llm"]["cost_per_row_usd"] == pytest.approx(paid / 40, rel=1e-6)
    assert "LLM cost per row" in _invoke("status", tmp_path / "out.csv.run").stdout

    ev = json.loads(_invoke("eval", out, "--json").stdout)
    assert ev["cost_usd"] == pytest.approx(paid, rel=1e-6) and ev["cost_per_row_usd"] == pytest.approx(paid / 40, rel=1e-6)
    assert ev["llm_tokens"] == server.usage["prompt_tokens"] + server.usage["completion_tokens"]
    assert "LLM cost per row" in _invoke("eval", out).stdout


def test_baseline_under_faults_labels_or_queues_every_row_and_holds_the_budget(tmp_path, data):
    with FakeLLMServer(fault_rate=0.3, hang_s=1.5, seed=3) as server:
        task = _task(tmp_path, server.base_url, llm=", budget_usd: 0.25, concurrency: 4")
        out = tmp_path / "out.csv"
        result = _invoke("baseline", task, "--input", data, "--output", out)
    assert result.exit_code == 0, result.output
    df = pd.read_csv(out, keep_default_na=False).drop(index=5)
    sources = set(df["annotation_source"])
    assert sources <= {"llm:zero-shot"} | {f"queued:llm-{r}" for r in
                                           ("budget", "invalid-answer", "timeout", "http-429", "http-500", "connection")}
    assert (df["annotation"] != "").sum() == (df["annotation_source"] == "llm:zero-shot").sum()
    assert "queued:llm-budget" in sources  # 38 calls cost about $0.5
    status = json.loads(_invoke("status", tmp_path / "out.csv.run", "--json").stdout)
    assert 0 < status["llm"]["cost_usd"] <= 0.25


def test_vote_baseline_asks_each_model(tmp_path, data, server):
    task = _task(tmp_path, server.base_url)
    out = tmp_path / "vote.jsonl"
    result = _invoke("baseline", task, "--input", data, "--output", out, "--method", "vote",
                     "--model", "voter-a", "--model", "voter-b", "--model", "voter-c")
    assert result.exit_code == 0, result.output
    assert {b["model"] for b in server.bodies} == {"voter-a", "voter-b", "voter-c"}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["annotation_source"] for r in rows} == {"llm:vote", "skipped:empty"}
    status = json.loads(_invoke("status", tmp_path / "vote.jsonl.run", "--json").stdout)
    assert set(status["llm"]["by_model"]) == {"voter-a", "voter-b", "voter-c"}


@pytest.mark.parametrize("case, args, needles", [
    ("unknown-method", ["--method", "ten-shot"], ["unknown baseline method", "zero-shot"]),
    ("vote-alone", ["--method", "vote"], ["at least two LLMs", "--model"]),
    ("two-for-zero-shot", ["--model", "a", "--model", "b"], ["one LLM"]),
    ("few-shot-no-examples", ["--method", "few-shot"], ["examples"]),
    ("no-llm", [], ["needs an LLM", "llm:"]),
    ("missing-key", [], ["LJ_NO_SUCH_KEY_ENV"]),
    ("missing-llm-file", ["--llm", "nope.yaml"], ["does not exist"]),
    ("pipeline-run-dir", [], ["holds a pipeline run"]),
])
def test_baseline_bad_input_is_one_line(tmp_path, data, server, case, args, needles):
    task = _task(tmp_path, None if case == "no-llm" else server.base_url)
    if case == "missing-key":
        task.write_text(task.read_text().replace("api_key_env: null", "api_key_env: LJ_NO_SUCH_KEY_ENV"))
        args = [*args, "--allow-key-host", "127.0.0.1"]
    out = tmp_path / "out.csv"
    if case == "pipeline-run-dir":
        assert _invoke("run", task, "--input", data, "--output", out).exit_code == 0
    _one_line_error(_invoke("baseline", task, "--input", data, "--output", out, *args), *needles)
    assert server.counts["requests"] == 0
    if case != "pipeline-run-dir":
        assert not out.exists()


def test_plan_prices_review_and_selection_and_matches_what_a_baseline_uses(tmp_path, data, server):
    task = _task(tmp_path, server.base_url, reviewer="{kind: llm}", specialists="auto")
    result = _invoke("plan", task, "--input", data, "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert server.counts["requests"] == 0  # planning spends nothing
    assert plan["input"] == {"rows": 40, "texts": 38, "avg_chars": pytest.approx(plan["input"]["avg_chars"])}
    what = [line["what"] for line in plan["lines"]]
    assert what == ["LLM review of the hard rows", "LLM model selection"]
    review = plan["lines"][0]
    assert plan["review_rows"] == 8 and review["calls"] == 8  # budget 0.2 of 40 rows
    assert review["usd"] == pytest.approx((review["tokens_in"] * 100 + review["tokens_out"] * 200) / 1e6, rel=1e-6)
    assert plan["total_usd"] == pytest.approx(sum(line["usd"] for line in plan["lines"]))
    alone = plan["comparison"][0]
    assert alone["calls"] == 38 and alone["usd"] > review["usd"]
    # the estimate of the LLM alone is close to what the baseline then really sends (a little over:
    # the chat template's overhead is priced generously)
    plain = _task(tmp_path, server.base_url, name="plain.yaml")
    assert _invoke("baseline", plain, "--input", data, "--output", tmp_path / "b.csv").exit_code == 0
    assert 0.9 <= alone["tokens_in"] / server.usage["prompt_tokens"] <= 1.5
    assert 0.5 <= alone["tokens_out"] / server.usage["completion_tokens"] <= 2.0
    table = _invoke("plan", task, "--input", data)
    assert "LLM review of" in table.stdout and f"${plan['total_usd']:.4f}" in table.stdout


def test_plan_warns_about_unknown_prices_and_budgets(tmp_path, data):
    task = _task(tmp_path, "https://llm.example.com/v1", reviewer="{kind: llm}")
    text = task.read_text().replace("gpt-4o-mini", "mystery-model").replace(f", prices: {PRICES}", "")
    task.write_text(text)
    result = _invoke("plan", task, "--input", data)
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "price of model 'mystery-model' is unknown" in result.stderr
    assert "llm.prices" in result.stderr
    task.write_text(text.replace("mystery-model", "gpt-4o").replace("timeout: 1.0", "timeout: 1.0, budget_usd: 0.001"))
    budget = json.loads(_invoke("plan", task, "--input", data, "--json").stdout)
    assert any("exceeds llm.budget_usd" in w and "of 8 hard rows" in w for w in budget["warnings"])
    none = _task(tmp_path, None, name="nollm.yaml")
    result = _invoke("plan", none, "--input", data)
    assert result.exit_code == 0 and "no LLM calls" in result.stderr
    _one_line_error(_invoke("plan", none, "--input", tmp_path / "missing.csv"), "does not exist")


def test_pipeline_run_with_an_llm_reviewer_reports_its_cost(tmp_path, data, server):
    task = _task(tmp_path, server.base_url, reviewer="{kind: llm}")
    out = tmp_path / "out.csv"
    assert _invoke("run", task, "--input", data, "--output", out, "--run-dir", tmp_path / "run").exit_code == 0
    status = json.loads(_invoke("status", tmp_path / "run", "--json").stdout)
    llm = status["llm"]
    assert llm["calls"] == server.counts["requests"] > 0 and llm["cost_usd"] > 0
    assert llm["llm_reviewed_rows"] == status["reviews_by_source"]["reviewed:llm"]
    assert llm["cost_per_reviewed_row_usd"] == pytest.approx(status["cost_usd"] / llm["llm_reviewed_rows"])
    ev = json.loads(_invoke("eval", out, "--run-dir", tmp_path / "run", "--json").stdout)
    assert ev["cost_usd"] == pytest.approx(llm["cost_usd"]) and ev["cost_per_row_usd"] == pytest.approx(llm["cost_usd"] / 40)


def test_a_fresh_run_with_an_llm_reviewer_lets_the_llm_choose_the_specialists(tmp_path, data, server):
    # the LLM reviewer's cache creates run.db before the meta-controller chooses: that is a fresh run
    task = _task(tmp_path, server.base_url, reviewer="{kind: llm}", specialists="auto")
    out = tmp_path / "out.csv"
    res = _invoke("run", task, "--input", data, "--output", out)
    assert res.exit_code == 0, res.output
    with RunStore.existing(tmp_path / "out.csv.run") as s:
        assert s.get_meta("selected_specialists")


def test_the_api_key_never_leaks(tmp_path, data, monkeypatch, caplog):
    secret = "sk-lj-cli-SECRET-0a1b2c3d4e5f6789"
    monkeypatch.setenv("LJ_CLI_TEST_KEY", secret)
    monkeypatch.setenv("LABELJURY_KEY_HOSTS", "127.0.0.1")
    with FakeLLMServer(require_key=secret, fault_rate=0.2, hang_s=1.5, seed=7) as server:
        task = _task(tmp_path, server.base_url, reviewer="{kind: llm}", specialists="auto")
        task.write_text(task.read_text().replace("api_key_env: null", "api_key_env: LJ_CLI_TEST_KEY"))
        out = tmp_path / "out.csv"
        shown = [_invoke("plan", task, "--input", data, "--json"),
                 _invoke("baseline", task, "--input", data, "--output", out),
                 _invoke("status", tmp_path / "out.csv.run", "--json"),
                 _invoke("eval", out, "--json")]
        assert all(r.exit_code == 0 for r in shown), [r.output for r in shown]
        monkeypatch.setenv("LJ_CLI_TEST_KEY", secret[::-1])  # a wrong key, which the server echoes back
        wrong = _invoke("baseline", task, "--input", data, "--output", tmp_path / "o2.csv", "--run-dir", tmp_path / "r2")
        _one_line_error(wrong, "rejected the API key")
    assert server.counts["requests"] > 0
    texts = [r.stdout + r.stderr for r in [*shown, wrong]] + [caplog.text]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    for leaked in (secret, secret[::-1]):
        assert not any(leaked in t for t in texts)


def test_plan_prices_a_multi_label_task_s_set_answers_and_selects_no_models(tmp_path, data, server):
    task = tmp_path / "sets.yaml"
    task.write_text("name: topics\nlabels: [complaint, praise, question, billing-and-payments]\nmulti_label: true\n"
                    "reviewer: {kind: llm}\nreview: {budget: 0.2}\n"
                    f"llm: {{model: gpt-4o-mini, base_url: '{server.base_url}', api_key_env: null, timeout: 1.0, "
                    f"max_retries: 3, prices: {PRICES}}}\n")
    result = _invoke("plan", task, "--input", data, "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert [line["what"] for line in plan["lines"]] == ["LLM review of the hard rows"]  # no model selection
    assert plan["review_rows"] == 8 and server.counts["requests"] == 0
    alone = plan["comparison"][0]
    # the LLM alone, as the baseline then really asks for sets
    assert _invoke("baseline", task, "--input", data, "--output", tmp_path / "b.jsonl").exit_code == 0
    assert 0.9 <= alone["tokens_in"] / server.usage["prompt_tokens"] <= 1.5
    assert 0.5 <= alone["tokens_out"] / server.usage["completion_tokens"] <= 2.0
    assert "A text may carry several of these labels" in server.bodies[0]["messages"][0]["content"]
