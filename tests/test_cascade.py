"""A cascade of reviewers (an LLM, then people), no dead-end rows, resumable settings, --finish."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from labeljury import evaluate, load_task, run
from labeljury.budget import BudgetPlan
from labeljury.cli import app
from labeljury.review.queue import HumanQueue
from labeljury.status import run_status as status_of
from labeljury.store import RunStore

from .conftest import make_rows, write_task
from .llm_fakes import OracleLLMServer

runner = CliRunner()


def cascade_task(tmp: Path, base_url: str, reviewer: str, llm: str = "", budget: float = 0.3) -> Path:
    task = write_task(tmp / "task.yaml", budget=budget)
    text = task.read_text().replace("reviewer: {kind: gold, column: label}", f"reviewer: {reviewer}")
    text += (f"llm: {{model: gpt-4o-mini, base_url: '{base_url}', api_key_env: null, timeout: 2.0, max_retries: 0"
             f"{llm}}}\n")
    task.write_text(text)
    return task


def answer_all(run_dir: Path, gold: dict[str, str]) -> int:
    q = HumanQueue(run_dir)
    n = 0
    while (row := q.lease("scripted")) is not None:
        assert q.answer(row.id, gold[row.text], "scripted")
        n += 1
    q.close()
    return n


def flaky(text: str) -> bool:
    return hashlib.md5(text.encode()).digest()[0] % 3 == 0  # a third of the rows the LLM fails on


def labeled_csv(tmp_path: Path, n: int, seed: int) -> tuple[Path, dict[str, str]]:
    """`n` generated rows written to in.csv, and each text's gold label."""
    rows = make_rows(n, seed=seed)
    path = tmp_path / "in.csv"
    rows.to_csv(path, index=False)
    return path, dict(zip(rows.text, rows.label))


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return labeled_csv(tmp_path, 360, seed=12)


def test_what_the_llm_cannot_settle_goes_to_people_and_the_audit_goes_to_them_first(tmp_path, data) -> None:
    path, gold = data
    decide = lambda t: None if flaky(t) else (gold[t], 0.3 if len(t) % 5 == 0 else 0.9)  # noqa: E731
    with OracleLLMServer(decide) as server:
        task = load_task(cascade_task(tmp_path, server.base_url,
                                      "[{kind: llm, min_confidence: 0.5}, {kind: human}]"))
        out = tmp_path / "out.csv"
        rounds = 0
        while (report := run(task, path, out)).status == "waiting":
            assert answer_all(tmp_path / "out.csv.run", gold) == report.pending
            rounds += 1
            assert rounds < 20
        with RunStore.existing(tmp_path / "out.csv.run") as s:
            texts = s.texts_by_id(s.routed("audit"))
            audit_texts = {t for t, _ in texts.values()}
            blind_texts = {texts[t][0] for t in s.audit_hard()}
            reviews = s.reviews()
            answers = s.answers()
            why = dict(s.conn.execute("SELECT text_id, why FROM human_queue"))
    # every audit row went to people and they decided it; the LLM saw only those a stage would have sent
    # it, and answered them blind (to be measured), its answer decided none of them
    assert audit_texts and audit_texts & set(server.asked) == blind_texts
    assert all(reviews[t].source == "reviewed:human" for t in texts)
    sources = pd.read_csv(out, keep_default_na=False).annotation_source
    assert not sources.str.startswith("queued:").any()
    assert {"reviewed:llm", "reviewed:human"} <= set(sources)
    by_source = {}
    for t, r in reviews.items():
        by_source.setdefault(r.source, set()).add(t)
    # every row the LLM could not answer, or answered unsure, was decided by a person, with the LLM's
    # answer kept beside it
    # (not the audit rows it answered blind: those went to people as the audit, whatever it answered)
    passed = {t for t, a in answers.items() if "llm" in a and (a["llm"].label is None or a["llm"].confidence < 0.5)
              and t not in texts}
    assert passed and passed <= by_source["reviewed:human"]
    assert {why[t] for t in passed} <= {"llm-http-500", "llm-unsure"} and "llm-unsure" in {why[t] for t in passed}
    assert evaluate(out, "label").accuracy > 0.9


def test_an_unreachable_llm_fails_the_run_and_a_rerun_asks_again(tmp_path, data, monkeypatch) -> None:
    import labeljury.review.desk as desk

    path, gold = data
    monkeypatch.setattr(desk, "RETRY_AFTER", 0.0)
    down = lambda t: None  # noqa: E731 - every call fails
    with OracleLLMServer(down) as server:
        task = cascade_task(tmp_path, server.base_url, "{kind: llm}")
        res = runner.invoke(app, ["run", str(task), "--input", str(path), "--output", str(tmp_path / "out.csv")])
        assert res.exit_code != 0 and "came back without a label" in res.stderr and "Traceback" not in res.stderr
        assert not (tmp_path / "out.csv").exists()
        asked = len(server.asked)
        server.decide = lambda t: (gold[t], 0.9)  # the server is back
        res = runner.invoke(app, ["run", str(task), "--input", str(path), "--output", str(tmp_path / "out.csv")])
        assert res.exit_code == 0, res.output
        assert len(server.asked) > asked  # the failed rows were asked again
    sources = pd.read_csv(tmp_path / "out.csv", keep_default_na=False).annotation_source
    assert not sources.str.startswith("queued:").any()


def test_raising_the_llm_budget_continues_the_same_run(tmp_path, data, monkeypatch) -> None:
    import labeljury.review.desk as desk

    path, gold = data
    monkeypatch.setattr(desk, "RETRY_AFTER", 0.0)
    with OracleLLMServer(lambda t: (gold[t], 0.9)) as server:
        prices = ", prices: {input: 1000, output: 1000}"
        task = cascade_task(tmp_path, server.base_url, "{kind: llm}", llm=f", budget_usd: 0.5{prices}")
        first = run(load_task(task), path, tmp_path / "out.csv")
        assert first.status == "complete" and first.sources.get("queued:llm-budget", 0) > 0
        asked = len(server.asked)
        task.write_text(task.read_text().replace("budget_usd: 0.5", "budget_usd: 50").replace("timeout: 2.0", "timeout: 3.0"))
        again = run(load_task(task), path, tmp_path / "out.csv")  # the same run directory: no "another task file"
        assert again.sources.get("queued:llm-budget", 0) == 0 and len(server.asked) > asked
        assert again.reviews > first.reviews - first.sources.get("queued:llm-budget", 0)


def test_raising_the_review_budget_adds_stages(tmp_path, data) -> None:
    path, _ = data
    task = write_task(tmp_path / "t.yaml", budget=0.2)
    first = run(load_task(task), path, tmp_path / "out.csv")
    with RunStore.existing(first.run_dir) as s:
        before = BudgetPlan.from_dict(s.get_meta("budget_plan"))
        stages_before = [m["stage"] for m in s.stages() if not m["final"]]
    task.write_text(task.read_text().replace("budget: 0.2", "budget: 0.3"))
    again = run(load_task(task), path, tmp_path / "out.csv")
    assert again.budget == 108 > first.budget == 72 and again.reviews == 108
    with RunStore.existing(again.run_dir) as s:
        after = BudgetPlan.from_dict(s.get_meta("budget_plan"))
        stages_after = [m["stage"] for m in s.stages() if not m["final"]]
        hard_by_stage = [len(s.routed("hard", stage=i)) for i in range(len(after.stages))]
    # the stages run before keep their shares; the 36 new reviews come as stages after them, each run
    assert after.stages[:len(before.stages)] == before.stages and len(after.stages) > len(before.stages)
    assert sum(after.stages) - sum(before.stages) == 36
    assert stages_before == list(range(len(before.stages)))
    assert stages_after == list(range(len(after.stages)))
    assert hard_by_stage == list(after.stages)  # every stage, old and new, reviewed its share


def test_finish_goes_on_without_people_and_takes_their_answers_later(tmp_path, data) -> None:
    path, gold = data
    task = write_task(tmp_path / "t.yaml", budget=0.2)
    task.write_text(task.read_text().replace("{kind: gold, column: label}", "{kind: human}"))
    res = runner.invoke(app, ["run", str(task), "--input", str(path), "--output", str(tmp_path / "out.csv"), "--finish"])
    assert res.exit_code == 0, res.output
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    queued = out[out.annotation_source == "queued:human"]
    assert len(queued) > 0 and (queued.annotation != "").all()  # the vote stands, the source says so
    assert "still wait for people" in res.stdout
    assert answer_all(tmp_path / "out.csv.run", gold) > 0
    run(load_task(task), path, tmp_path / "out.csv", finish=True)  # the answers are in: labeled again
    out = pd.read_csv(tmp_path / "out.csv", keep_default_na=False)
    assert (out.annotation_source == "reviewed:human").sum() >= len(queued)


def liar(gold: dict[str, str], labels: list[str]):
    """An LLM confidently wrong on a third of the rows (by a hash of the text)."""
    def decide(t: str) -> tuple[str, float]:
        if flaky(t):
            return labels[(labels.index(gold[t]) + 1) % len(labels)], 0.9
        return gold[t], 0.9
    return decide


@pytest.fixture
def bigger(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    return labeled_csv(tmp_path, 900, seed=21)


def test_flagged_llm_answers_go_to_people_for_a_second_look_without_holding_the_run(tmp_path, bigger) -> None:
    path, gold = bigger
    labels = sorted(set(gold.values()))
    with OracleLLMServer(liar(gold, labels)) as server:
        task = load_task(cascade_task(tmp_path, server.base_url, "[{kind: llm}, {kind: human}]"))
        out, run_dir = tmp_path / "out.csv", tmp_path / "out.csv.run"
        rounds = 0
        while (report := run(task, path, out)).status == "waiting":
            q = HumanQueue(run_dir)  # people answer what the run waits for, not the second looks
            for w in q.waiting():
                if w.why != "flagged":
                    assert q.answer(w.id, gold[w.text], "scripted")
            q.close()
            rounds += 1
            assert rounds < 20
        # the run is complete while the flagged rows still wait for a person
        q = HumanQueue(run_dir)
        flagged = [w for w in q.waiting() if w.why == "flagged"]
        assert len(flagged) >= 5
        assert all(w.llm_label is not None for w in flagged)  # the page shows what the LLM said
        # the flags point at the LLM's mistakes
        assert sum(w.llm_label != gold[w.text] for w in flagged) > 0.6 * len(flagged)
        df = pd.read_csv(out, keep_default_na=False).set_index("text")
        assert (df.loc[[w.text for w in flagged]].annotation_source.str.endswith("llm")).all()
        info = status_of(run_dir)
        assert info["second_looks"]["sent"] == len(flagged) and info["second_looks"]["decided"] == 0
        for w in flagged:
            assert q.answer(w.id, gold[w.text], "scripted")
        q.close()
        asked = len(server.asked)
        assert run(task, path, out).status == "complete"
        assert len(server.asked) == asked  # nothing asked of the LLM again
    df = pd.read_csv(out, keep_default_na=False).set_index("text")
    second = df.loc[[w.text for w in flagged]]
    assert (second.annotation_source == "reviewed:human").all() and (second.annotation == second.label).all()
    info = status_of(run_dir)
    assert info["second_looks"] == {"sent": len(flagged), "decided": len(flagged)}
    # what people said of them is known truth about the LLM: its accuracy is estimated on checked rows
    assert info["weighing"]["checked"]["llm"] >= len(flagged)


def test_second_looks_wait_in_the_file_queue_beside_the_stage_rows(tmp_path, bigger) -> None:
    path, gold = bigger
    labels = sorted(set(gold.values()))
    with OracleLLMServer(liar(gold, labels)) as server:
        task = load_task(cascade_task(tmp_path, server.base_url, "[{kind: llm}, {kind: file}]"))
        out = tmp_path / "out.csv"
        whys: set[str] = set()
        rounds = 0
        while True:
            report = run(task, path, out)
            queue = tmp_path / "out.csv.run" / "review_queue.jsonl"
            lines = [json.loads(x) for x in queue.read_text().splitlines()] if queue.exists() else []
            if report.status == "complete" and not lines:
                break
            whys |= {rec["why"] for rec in lines}
            queue.write_text("".join(json.dumps({**rec, "label": gold[rec["text"]]}) + "\n" for rec in lines))
            rounds += 1
            assert rounds < 20
    assert "flagged" in whys and len(whys) > 1
    with RunStore.existing(tmp_path / "out.csv.run") as s:
        sent = [t for t, a in s.answers().items() if "second-look" in a]
        reviews = s.reviews()
    assert sent and all(reviews[t].source == "reviewed:file" for t in sent)
