"""Scale: no step holds the vote of every row (it streams a chunk at a time), refits learn from a
bounded number of reviewed rows, and what is computed by chunk is what computing it at once gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from labeljury import load_task, run, voting
from labeljury.cli import app
from labeljury.scoring import Scorer
from labeljury.store import CHUNK, RunStore
from labeljury.training import bounded_rows
from labeljury.trust import CalibrationBins, ece

from .conftest import make_rows, write_task

runner = CliRunner()


def _whole_vote(store: RunStore, method: str, labels: list[str]) -> voting.VoteResult:
    """The final versions' vote of every text at once, from the stored predictions: what the run
    would give if it held the whole tensor."""
    names = [s["name"] for s in store.specialists() if s["status"] == "active"]
    versions = {s["name"]: s["version"] for s in store.specialists()}
    n = store.n_texts
    P = np.full((n, len(names), len(labels)), np.nan, np.float32)
    for j, name in enumerate(names):
        for c in range(-(-n // CHUNK)):
            P[c * CHUNK:(c + 1) * CHUNK, j] = store.get_predictions(name, versions[name], c)
    if method == "dawid-skene":
        t, lab = store.learned_labels()
        known = np.full(n, -1)
        known[t] = [labels.index(x) for x in lab]
        return voting.dawid_skene(P, known=known)
    return voting.aggregate(P, method, **({"weights": _weights(store, names, len(labels))} if method == "soft" else {}))


def _weights(store: RunStore, names: list[str], k: int) -> np.ndarray:
    info = {s["name"]: s for s in store.specialists()}
    acc = np.array([info[n]["validation_accuracy"] if info[n]["validation_rows"] else np.nan for n in names])
    seen = np.array([info[n]["validation_rows"] or 0 for n in names], dtype=float)
    return voting.log_odds_weights(acc, seen, k)


@pytest.mark.parametrize("method", ["soft", "dawid-skene"])
def test_no_step_holds_the_vote_of_every_row_and_the_labels_are_the_whole_votes(tmp_path: Path, monkeypatch,
                                                                                 method: str) -> None:
    data = tmp_path / "in.csv"
    make_rows(5_000, seed=4, duplicates=40).to_csv(data, index=False)
    task = load_task(write_task(tmp_path / "t.yaml", budget=0.1, voting=method))
    largest = {"tensor": 0, "vote": 0}
    tensor, chunk_tensor = Scorer.tensor, Scorer.chunk_tensor

    def counted_tensor(self, ids):  # noqa: ANN001, ANN202
        largest["tensor"] = max(largest["tensor"], len(ids))
        return tensor(self, ids)

    def counted_chunk(self, chunk):  # noqa: ANN001, ANN202
        P, names = chunk_tensor(self, chunk)
        largest["tensor"] = max(largest["tensor"], len(P))
        return P, names

    monkeypatch.setattr(Scorer, "tensor", counted_tensor)
    monkeypatch.setattr(Scorer, "chunk_tensor", counted_chunk)
    for model in (voting.SoftVote, voting.DawidSkene):
        predict = model.predict

        def counted_predict(self, P, known=None, _predict=predict):  # noqa: ANN001, ANN202
            largest["vote"] = max(largest["vote"], len(P))
            return _predict(self, P, known)

        monkeypatch.setattr(model, "predict", counted_predict)
    report = run(task, data, tmp_path / "out.csv")
    assert report.status == "complete" and report.texts > 2 * CHUNK
    # every tensor and every vote of the run covered one chunk at most (the old steps held all 5,000)
    assert 0 < largest["tensor"] <= CHUNK and 0 < largest["vote"] <= CHUNK, largest
    with RunStore.existing(tmp_path / "out.csv.run") as store:
        whole = _whole_vote(store, method, task.label_names)
        final = {t: (vote, conf) for t, vote, conf in store.conn.execute("SELECT text_id, vote, vote_confidence FROM final")}
        assert len(final) == store.n_texts
        got = np.array([task.label_names.index(final[t][0]) for t in range(store.n_texts)])
        np.testing.assert_array_equal(got, whole.label)
        np.testing.assert_allclose([final[t][1] for t in range(store.n_texts)], whole.confidence, atol=1e-6)
        # the estimate counts every input row: duplicated texts by how often they occur
        estimate = store.get_meta("trust")["estimates"]["overall"]
        assert estimate["rows"] == report.rows


def test_refits_learn_from_at_most_max_train_rows(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    make_rows(1_500, seed=5).to_csv(data, index=False)
    task_path = write_task(tmp_path / "t.yaml", budget=0.3, extra="continual: {max_train_rows: 60}\n")
    task = load_task(task_path)
    run(task, data, tmp_path / "out.csv")
    with RunStore.existing(tmp_path / "out.csv.run") as store:
        stages = store.stages()
        versions = store.versions("tfidf-head")
        # several refits (how many the gate promotes depends on the audit's draw), none past the bound
        assert len(versions) >= 3 and max(v["train_count"] for v in versions) <= 60
        bounded = [st for st in stages if st["reviewed_rows"] > st["train_rows"]]
        assert bounded and all(st["train_rows"] == 60 for st in bounded)
        # a stage's own new rows come first: each bounded stage's version learned from all of them
        for v in versions:
            st = next((s for s in stages if s["stage"] == v["stage"] and not s["final"]), None)
            if st is None or st["reviewed_rows"] <= 60:
                continue
            new = set(store.routed("hard", v["stage"])) & set(store.learned_labels()[0].tolist())
            if len(new) <= 60:
                assert new <= set(store.train_ids("tfidf-head", v["version"]).tolist())
    res = runner.invoke(app, ["status", str(tmp_path / "out.csv.run")])
    assert res.exit_code == 0 and " of " in res.output
    # the default leaves a fingerprint unchanged; another value makes another task
    assert load_task(write_task(tmp_path / "d.yaml", extra="continual: {max_train_rows: 100000}\n")).fingerprint() == \
        load_task(write_task(tmp_path / "e.yaml", extra="continual: {}\n")).fingerprint() != task.fingerprint()


def test_bounded_rows_takes_the_newest_then_a_sample_of_the_rest() -> None:
    train = np.arange(0, 1000, 2)
    newest = np.arange(900, 1000, 2)
    assert np.array_equal(bounded_rows(train, newest, None, 0), train)
    assert np.array_equal(bounded_rows(train, newest, 500, 0), train)
    got = bounded_rows(train, newest, 120, 0)
    assert len(got) == 120 and np.all(np.diff(got) > 0) and set(newest) <= set(got) and set(got) <= set(train)
    assert np.array_equal(got, bounded_rows(train, newest, 120, 0)) and not np.array_equal(got, bounded_rows(train, newest, 120, 1))
    few = bounded_rows(train, newest, 20, 0)
    assert len(few) == 20 and set(few) <= set(newest)


def test_calibration_bins_give_the_ece_of_every_row() -> None:
    rng = np.random.default_rng(9)
    conf, right = rng.random(5000), (rng.random(5000) < 0.7).astype(float)
    bins = CalibrationBins(15)
    for a in range(0, 5000, 333):
        bins.add(conf[a:a + 333], right[a:a + 333])
    assert bins.ece() == pytest.approx(ece(conf, right, 15), abs=1e-12)
    assert np.isnan(CalibrationBins().ece())


def test_task_rejects_a_max_train_rows_below_one(tmp_path: Path) -> None:
    res = runner.invoke(app, ["plan", str(write_task(tmp_path / "t.yaml", extra="continual: {max_train_rows: 0}\n")),
                              "--input", str(tmp_path / "missing.csv")])
    assert res.exit_code != 0 and "max_train_rows" in res.output and "Traceback" not in res.output


def test_calibration_bins_give_the_reliability_of_every_row() -> None:
    from labeljury.trust import reliability

    rng = np.random.default_rng(10)
    conf, right = rng.random(3000) ** 0.5, (rng.random(3000) < 0.8).astype(float)
    bins = CalibrationBins(10)
    for a in range(0, 3000, 700):
        bins.add(conf[a:a + 700], right[a:a + 700])
    got, want = bins.reliability(), reliability(conf, right)
    assert [b["rows"] for b in got] == [b["rows"] for b in want]
    for g, w in zip(got, want, strict=True):
        assert g["low"] == w["low"] and g["confidence"] == pytest.approx(w["confidence"])
        assert g["accuracy"] == pytest.approx(w["accuracy"])
