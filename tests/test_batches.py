"""Data that keeps coming: a run continues an earlier batch's run (`--from`), learns from what it reviewed,
reuses its reviews of texts seen again, notices a batch from another domain, and never touches the
earlier run directory."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from labeljury import load_task, run
from labeljury.cli import app
from labeljury.errors import RunStoreError
from labeljury.review import GoldReviewer
from labeljury.sources import BOOTSTRAP, CARRIED
from labeljury.status import run_status
from labeljury.store import RunStore

from .conftest import make_rows, write_task

SPECIALISTS = "[tfidf-head, embedding-head, vader]"


class CountingGold(GoldReviewer):
    """The gold reviewer, noting every text it is asked about."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked: list[str] = []

    def review(self, items):
        items = list(items)
        self.asked += [it.text for it in items]
        yield from super().review(items)


def _digest(run_dir: Path) -> str:
    return hashlib.sha256((run_dir / "run.db").read_bytes()).hexdigest()


def _markets(n: int, seed: int) -> pd.DataFrame:
    """Texts of another domain (markets news) with the same three labels."""
    rng = random.Random(seed)
    words = {"positive": ["rally", "surge", "beat", "upgrade", "record", "gain"],
             "negative": ["plunge", "downgrade", "miss", "lawsuit", "selloff", "loss"],
             "neutral": ["quarterly", "filing", "announces", "schedule", "dividend", "session"]}
    filler = ["shares", "of", "$ACME", "stock", "earnings", "analysts", "Q3", "NYSE", "futures", "bond", "yield"]
    labels = list(words)
    rows = []
    for i in range(n):
        lab = labels[i % 3]
        w = rng.sample(filler, 5) + rng.sample(words[lab], 2)
        rng.shuffle(w)
        rows.append({"id": f"m{i:05d}", "text": " ".join(w), "label": lab})
    return pd.DataFrame(rows)


@pytest.fixture
def chain(tmp_path: Path):
    """Two batches of the toy task; the second holds 40 texts of the first."""
    task_path = write_task(tmp_path / "task.yaml", specialists=SPECIALISTS, budget=0.15)
    b1 = make_rows(500, seed=11)
    b2 = pd.concat([make_rows(460, seed=12), b1.iloc[:40]], ignore_index=True)
    p1, p2 = tmp_path / "b1.csv", tmp_path / "b2.csv"
    b1.to_csv(p1, index=False)
    b2.to_csv(p2, index=False)
    task = load_task(task_path)
    first = run(task, p1, tmp_path / "b1.out.csv")
    assert first.status == "complete"
    return task, task_path, p1, p2, tmp_path


def test_a_later_batch_learns_from_the_earlier_one_and_reuses_its_reviews(chain) -> None:
    task, _, p1, p2, tmp = chain
    earlier = tmp / "b1.out.csv.run"
    before = _digest(earlier)
    with RunStore.existing(earlier) as s:
        learned_ids, learned = s.learned_labels(include_audit=True)
        earlier_texts = {s.texts_by_id([int(t)])[int(t)][0]: lab for t, lab in zip(learned_ids, learned, strict=True)}
    gold = CountingGold(p2, "label", task.label_names)
    report = run(task, p2, tmp / "b2.out.csv", reviewer=gold, from_run=earlier)
    assert report.status == "complete"
    assert _digest(earlier) == before  # the earlier run directory is only read

    out = pd.read_csv(tmp / "b2.out.csv")
    seen = out[out["text"].isin(earlier_texts)]
    assert len(seen) > 0
    # a text the earlier run reviewed keeps that label, says so, and is not asked again
    assert (seen["annotation_source"] == "earlier:gold").all()
    assert [earlier_texts[t] for t in seen["text"]] == seen["annotation"].tolist()
    assert not set(gold.asked) & set(earlier_texts)
    # this batch's own budget: its reviews, not the carried ones
    assert report.reviews == len(gold.asked) <= report.budget == int(0.15 * len(out))

    with RunStore.existing(tmp / "b2.out.csv.run") as s:
        carried = s.routed(CARRIED)
        assert len(carried) == len(earlier_texts)
        assert s.routed(BOOTSTRAP) == []  # no drift: the earlier specialists start, the bootstrap's reviews go to stages
        assert s.get_meta("budget_plan")["bootstrap"] == 0
        first = s.train_ids("tfidf-head", 1)
        assert (first >= s.n_input_texts).sum() == len(earlier_texts) - seen["text"].nunique()  # version 1 learned from the earlier rows
        assert s.get_meta("drift")["drifted"] is False
    st = run_status(tmp / "b2.out.csv.run")
    assert st["carried_reviews"] == len(earlier_texts) and st["reused_reviews"] == len(seen)
    assert st["texts"] == out["text"].nunique() and st["reviews"] == report.reviews
    assert [b["rows"] for b in st["chain"]] == [500, 500]


def test_a_chain_of_three_carries_every_earlier_batch(chain) -> None:
    task, _, _, p2, tmp = chain
    run(task, p2, tmp / "b2.out.csv", from_run=tmp / "b1.out.csv.run")
    p3 = tmp / "b3.csv"
    make_rows(300, seed=13).to_csv(p3, index=False)
    run(task, p3, tmp / "b3.out.csv", from_run=tmp / "b2.out.csv.run")
    with RunStore.existing(tmp / "b1.out.csv.run") as s1, RunStore.existing(tmp / "b2.out.csv.run") as s2:
        n1 = len(s1.learned_labels(include_audit=True)[0])
        n2_own = s2.count_reviews()
    st = run_status(tmp / "b3.out.csv.run")
    assert st["carried_reviews"] == n1 + n2_own  # batch 1's rows come along through batch 2
    assert [b["rows"] for b in st["chain"]] == [500, 500, 300]
    assert st["chain"][0]["run_dir"].endswith("b1.out.csv.run")


def test_a_batch_from_another_domain_is_reported_as_drift(chain, tmp_path: Path) -> None:
    task, _, _, _, tmp = chain
    shifted = tmp / "markets.csv"
    _markets(400, seed=3).to_csv(shifted, index=False)
    report = run(task, shifted, tmp / "m.out.csv", from_run=tmp / "b1.out.csv.run")
    assert report.status == "complete"
    st = run_status(tmp / "m.out.csv.run")
    drift = st["drift"]
    assert drift["drifted"] is True and drift["auc"] > 0.9
    assert any("$ACME" in e or "shares" in e for e in drift["examples"])  # the new kind of text, shown
    with RunStore.existing(tmp / "m.out.csv.run") as s:
        assert len(s.routed(BOOTSTRAP)) > 0  # a drifted batch keeps its bootstrap sample, as a fresh run would
        # and its specialists learn from its own rows only: the earlier domain's would mislead them
        assert s.learns_from_carried is False and len(s.routed(CARRIED)) > 0
        assert int(s.train_ids("tfidf-head", 1).max()) < s.n_input_texts
    result = CliRunner().invoke(app, ["status", str(tmp / "m.out.csv.run")], terminal_width=200)
    assert "DRIFTED" in result.output
    from labeljury.report import build_report

    html = build_report(tmp / "m.out.csv.run")
    assert "Drift" in html and "DRIFTED" in html and "Batches of this chain" in html


def test_refusals_are_one_line(chain) -> None:
    task, task_path, p1, p2, tmp = chain
    runner = CliRunner()
    # another task: other labels
    other = tmp / "other.yaml"
    other.write_text(task_path.read_text().replace("positive: the author likes something",
                                                   "positive: the author likes something\n  mixed: both"))
    cases = [
        (["run", str(other), "-i", str(p2), "-o", str(tmp / "x.csv"), "--from", str(tmp / "b1.out.csv.run")],
         "another task"),
        (["run", str(task_path), "-i", str(p2), "-o", str(tmp / "y.csv"), "--from", str(tmp / "nowhere")],
         "not a run directory"),
        (["run", str(task_path), "-i", str(p1), "-o", str(tmp / "b1.out.csv"), "--from", str(tmp / "b1.out.csv.run")],
         "own run directory"),
    ]
    for args, words in cases:
        result = runner.invoke(app, args)
        assert result.exit_code != 0, args
        assert words in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp / "x.csv").exists() and not (tmp / "y.csv").exists()
    # a run that continues one must be resumed with the same --from
    run(task, p2, tmp / "b2.out.csv", from_run=tmp / "b1.out.csv.run")
    with pytest.raises(RunStoreError, match="continues"):
        run(task, p2, tmp / "b2.out.csv")
    with pytest.raises(RunStoreError, match="started without --from"):
        run(task, p1, tmp / "b1.out.csv", from_run=tmp / "b2.out.csv.run")


def test_an_unfinished_earlier_run_is_refused(tmp_path: Path) -> None:
    task_path = write_task(tmp_path / "task.yaml", specialists="[tfidf-head]", budget=0.2)
    task_path.write_text(task_path.read_text().replace("{kind: gold, column: label}", "{kind: file}"))
    task = load_task(task_path)
    p = tmp_path / "b.csv"
    make_rows(200, seed=1).to_csv(p, index=False)
    assert run(task, p, tmp_path / "b.out.csv").status == "waiting"
    with pytest.raises(RunStoreError, match="has not finished"):
        run(task, p, tmp_path / "c.out.csv", from_run=tmp_path / "b.out.csv.run")


CHILD = """
import sys
from labeljury import load_task, run
task = load_task(sys.argv[1])
run(task, sys.argv[2], sys.argv[3], from_run=sys.argv[4])
"""


def test_two_batches_from_one_earlier_run_do_not_interfere(chain) -> None:
    task, task_path, _, p2, tmp = chain
    p3 = tmp / "b3.csv"
    make_rows(300, seed=14).to_csv(p3, index=False)
    earlier = tmp / "b1.out.csv.run"
    before = _digest(earlier)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(task_path), str(p), str(tmp / f"{name}.csv"), str(earlier)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for p, name in ((p2, "two"), (p3, "three"))]
    for p in procs:
        assert p.wait(timeout=600) == 0, p.stderr.read().decode()
    assert _digest(earlier) == before
    alone = run(task, p3, tmp / "alone.csv", from_run=earlier)
    assert alone.status == "complete"
    # the same batch continued alone gives the same labels as beside another one
    a, b = pd.read_csv(tmp / "three.csv"), pd.read_csv(tmp / "alone.csv")
    assert a["annotation"].tolist() == b["annotation"].tolist()
    assert json.loads(json.dumps(run_status(tmp / "three.csv.run")["carried_reviews"])) == \
        run_status(tmp / "alone.csv.run")["carried_reviews"]


class FailingGold(GoldReviewer):
    """Answers `limit` rows, then the process 'dies' (an exception out of the run)."""

    def __init__(self, *args, limit: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.limit = limit

    def review(self, items):
        for r in super().review(items):
            if self.limit <= 0:
                raise KeyboardInterrupt
            self.limit -= 1
            yield r


def test_a_killed_later_batch_resumes_to_the_same_output(chain) -> None:
    task, _, _, p2, tmp = chain
    earlier = tmp / "b1.out.csv.run"
    run(task, p2, tmp / "ref.csv", from_run=earlier)
    with pytest.raises(KeyboardInterrupt):
        run(task, p2, tmp / "b2.out.csv", from_run=earlier,
            reviewer=FailingGold(p2, "label", task.label_names, limit=30))
    run(task, p2, tmp / "b2.out.csv", from_run=earlier)
    assert (tmp / "b2.out.csv").read_bytes() == (tmp / "ref.csv").read_bytes()


def test_a_later_batch_stops_asking_when_the_stages_stop_helping(tmp_path: Path) -> None:
    task_path = write_task(tmp_path / "task.yaml", specialists=SPECIALISTS, budget=0.3)
    task = load_task(task_path)
    for i, seed in enumerate((21, 22), 1):
        make_rows(1000, seed=seed).to_csv(tmp_path / f"b{i}.csv", index=False)
    run(task, tmp_path / "b1.csv", tmp_path / "b1.out.csv")
    first = run_status(tmp_path / "b1.out.csv.run")
    assert first["stopped_after_stage"] is None and first["reviews"] == 300  # off for a first batch
    report = run(task, tmp_path / "b2.csv", tmp_path / "b2.out.csv", from_run=tmp_path / "b1.out.csv.run")
    st = run_status(tmp_path / "b2.out.csv.run")
    acc = [m["audit_vote_accuracy"] for m in st["stages"] if not m.get("final")]
    # on for a later batch: the vote's audit accuracy did not rise for two stages, so it stopped
    assert st["stopped_after_stage"] is not None and max(acc[-2:]) <= max(acc[:-2])
    assert report.reviews == 300 - st["unspent_reviews"] < 300
    assert f"{report.reviews}/300 reviews (stopped early: the stages no longer helped; {st['unspent_reviews']} unspent)" \
        in report.summary()
    shown = CliRunner().invoke(app, ["status", str(tmp_path / "b2.out.csv.run")], terminal_width=200).output
    assert f"{st['unspent_reviews']} reviews unspent" in shown
    # the user's choice: review.stop_early: false spends the whole budget
    task_path.write_text(task_path.read_text().replace("policy: margin}", "policy: margin, stop_early: false}"))
    off = load_task(task_path)
    full = run(off, tmp_path / "b2.csv", tmp_path / "b2.full.csv", from_run=tmp_path / "b1.out.csv.run")
    assert full.reviews == 300


def test_a_weighed_reviewers_earlier_rows_carry_the_decided_label_and_are_not_weighed_again(tmp_path: Path) -> None:
    from .test_weigh import NoisyReviewer

    task = load_task(write_task(tmp_path / "task.yaml", budget=0.3))
    b1 = make_rows(600, seed=31)
    b2 = pd.concat([make_rows(560, seed=32), b1.iloc[:40]], ignore_index=True)
    b1.to_csv(tmp_path / "b1.csv", index=False)
    b2.to_csv(tmp_path / "b2.csv", index=False)
    run(task, tmp_path / "b1.csv", tmp_path / "b1.out.csv", reviewer=NoisyReviewer(tmp_path / "b1.csv", task.label_names))
    with RunStore.existing(tmp_path / "b1.out.csv.run") as s:
        ids, learned = s.learned_labels(include_audit=True)
        decided = {s.texts_by_id([int(t)])[int(t)][0]: lab for t, lab in zip(ids, learned, strict=True)}
        beliefs = {s.texts_by_id([t])[t][0]: v.belief for t, v in s.verdicts().items() if v.answer is not None}
    second = NoisyReviewer(tmp_path / "b2.csv", task.label_names)
    report = run(task, tmp_path / "b2.csv", tmp_path / "b2.out.csv", reviewer=second,
                 from_run=tmp_path / "b1.out.csv.run")
    assert report.status == "complete"
    with RunStore.existing(tmp_path / "b2.out.csv.run") as s:
        carried = s.routed(CARRIED)
        texts = {t: x for t, (x, _) in s.texts_by_id(carried).items()}
        reviews = s.reviews(carried)
        # each carries the label the earlier weighing decided, and that weighing's belief in it
        assert all(reviews[t].label == decided[texts[t]] for t in carried)
        assert all(reviews[t].confidence == pytest.approx(beliefs[texts[t]]) for t in carried if texts[t] in beliefs)
        # the weighing here weighs this run's answers only
        assert not set(s.verdicts()) & set(carried)
        assert run_status(tmp_path / "b2.out.csv.run")["weighing"]["rows"]["noisy"] == report.reviews
    out = pd.read_csv(tmp_path / "b2.out.csv")
    reused = out[out["annotation_source"] == "earlier:noisy"]
    assert len(reused) > 0 and set(reused["text"]) <= set(decided)
    # an earlier weighed answer is not counted as certainly right: nothing in this run measured that reviewer
    overall = run_status(tmp_path / "b2.out.csv.run")["estimates"]
    assert overall is None or (overall["overall"].get("unmeasured_rows") or 0) >= len(reused)


def test_a_chain_carries_at_most_what_a_refit_can_learn_from(tmp_path: Path) -> None:
    task = load_task(write_task(tmp_path / "task.yaml", specialists=SPECIALISTS, budget=0.2,
                                extra="continual: {max_train_rows: 40}\n"))
    b1 = make_rows(500, seed=41)
    b2 = pd.concat([make_rows(300, seed=42), b1.iloc[:30]], ignore_index=True)
    b1.to_csv(tmp_path / "b1.csv", index=False)
    b2.to_csv(tmp_path / "b2.csv", index=False)
    run(task, tmp_path / "b1.csv", tmp_path / "b1.out.csv")
    with RunStore.existing(tmp_path / "b1.out.csv.run") as s:
        ids, _ = s.learned_labels(include_audit=True)
        earlier = {s.texts_by_id([int(t)])[int(t)][0] for t in ids}
    assert len(earlier) == 100
    run(task, tmp_path / "b2.csv", tmp_path / "b2.out.csv", from_run=tmp_path / "b1.out.csv.run")
    st = run_status(tmp_path / "b2.out.csv.run")
    reused = len(set(b2["text"]) & earlier)
    assert reused > 0 and st["reused_reviews"] == reused  # every text seen again keeps its label, cap or not
    assert st["carried_reviews"] == reused + 40  # of the others, max_train_rows of them
    out = pd.read_csv(tmp_path / "b2.out.csv")
    assert (out[out["text"].isin(earlier)]["annotation_source"] == "earlier:gold").all()
