"""End-to-end runs of the pipeline on generated data, through the Python API."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labeljury import evaluate, load_task, run
from labeljury.errors import RunStoreError
from labeljury.store import RunStore

from .conftest import make_rows, write_task


def test_gold_run_labels_every_row_with_provenance(tmp_path: Path, toy_csv: Path, toy_task: Path) -> None:
    out = tmp_path / "out.csv"
    report = run(load_task(toy_task), toy_csv, out)
    assert report.status == "complete"
    src = pd.read_csv(toy_csv, keep_default_na=False, dtype=str)
    got = pd.read_csv(out, keep_default_na=False, dtype=str)
    # every input column, in order, then the annotation columns; every row, in order
    assert list(got.columns) == [*src.columns, "annotation", "annotation_confidence", "annotation_source",
                                 "annotation_flag"]
    pd.testing.assert_frame_equal(got[src.columns], src)
    empty = src["text"].str.strip() == ""
    assert (got.loc[empty, "annotation_source"] == "skipped:empty").all()
    assert (got.loc[empty, "annotation"] == "").all()
    labeled = got[~empty]
    assert labeled["annotation"].isin(["negative", "neutral", "positive"]).all()
    assert set(labeled["annotation_source"]) <= {"consensus", "vote", "reviewed:gold"}
    conf = labeled["annotation_confidence"].astype(float)
    assert ((conf >= 0) & (conf <= 1)).all()
    # reviewed rows carry the gold label
    rev = labeled["annotation_source"] == "reviewed:gold"
    assert (labeled.loc[rev, "annotation"] == labeled.loc[rev, "label"]).all()
    # the review budget counts unique texts and is never exceeded
    with RunStore(report.run_dir) as store:
        n_reviews = len(store.reviews())
        assert 0 < n_reviews <= int(0.2 * len(src))
        assert store.n_texts < store.n_rows - 5  # duplicates share one text
    # duplicates get the same label
    dup = labeled.groupby("text")["annotation"].nunique()
    assert (dup == 1).all()
    ev = evaluate(out, "label")
    assert ev.accuracy > 0.8
    assert set(ev.specialist_accuracy) == {"tfidf-head", "vader"}
    assert ev.vote_accuracy is not None


def test_rerun_of_finished_run_is_identical_and_asks_nothing(tmp_path: Path, toy_csv: Path, toy_task: Path) -> None:
    out = tmp_path / "out.csv"
    task = load_task(toy_task)
    run(task, toy_csv, out)
    first = out.read_bytes()

    class Refuse:
        kind = "gold"

        def review(self, items):  # noqa: ANN001, ANN201
            raise AssertionError(f"asked again for {len(items)} reviews")

    run(task, toy_csv, out, reviewer=Refuse())
    assert out.read_bytes() == first


def test_file_reviewer_waits_then_resumes(tmp_path: Path, toy_csv: Path) -> None:
    task_path = write_task(tmp_path / "task.yaml", budget=0.1)
    text = task_path.read_text().replace("{kind: gold, column: label}", "{kind: file}")
    task_path.write_text(text)
    task = load_task(task_path)
    out = tmp_path / "out.csv"
    gold = dict(zip(*[pd.read_csv(toy_csv, keep_default_na=False)[c] for c in ("text", "label")]))
    rounds = 0
    while True:
        report = run(task, toy_csv, out)
        if report.status == "complete":
            break
        assert not out.exists()  # nothing written while waiting
        rounds += 1
        assert rounds < 5
        queue = report.queue
        lines = [json.loads(x) for x in queue.read_text().splitlines()]
        assert len(lines) == report.pending > 0
        # a person answers all but one line; the unanswered one keeps the run waiting
        for rec in lines[:-1]:
            rec["label"] = gold[rec["text"]]
        queue.write_text("".join(json.dumps(r) + "\n" for r in lines))
        report = run(task, toy_csv, out)
        assert report.status == "waiting" and report.pending == 1
        lines = [json.loads(x) for x in queue.read_text().splitlines()]
        assert len(lines) == 1
        lines[0]["label"] = gold[lines[0]["text"]].upper()  # labels are matched case-insensitively
        queue.write_text(json.dumps(lines[0]) + "\n")
    assert rounds == 2  # the bootstrap sample, then the hard rows
    got = pd.read_csv(out, keep_default_na=False)
    assert (got["annotation_source"] == "reviewed:file").sum() > 0
    assert evaluate(out, "label").accuracy > 0.8


def test_bad_review_file_label_is_one_line_error(tmp_path: Path, toy_csv: Path) -> None:
    task_path = write_task(tmp_path / "task.yaml", budget=0.1)
    task_path.write_text(task_path.read_text().replace("{kind: gold, column: label}", "{kind: file}"))
    task = load_task(task_path)
    report = run(task, toy_csv, tmp_path / "out.csv")
    lines = [json.loads(x) for x in report.queue.read_text().splitlines()]
    lines[0]["label"] = "meh"
    report.queue.write_text("".join(json.dumps(r) + "\n" for r in lines))
    from labeljury.errors import ReviewError

    with pytest.raises(ReviewError, match="not one of") as e:
        run(task, toy_csv, tmp_path / "out.csv")
    assert "\n" not in str(e.value)


def test_run_dir_of_another_task_is_refused(tmp_path: Path, toy_csv: Path, toy_task: Path) -> None:
    out = tmp_path / "out.csv"
    run(load_task(toy_task), toy_csv, out)
    # the specialists change what the labels mean: a new run directory is needed
    other = write_task(tmp_path / "other.yaml", specialists="[tfidf-head]")
    with pytest.raises(RunStoreError, match="another task file"):
        run(load_task(other), toy_csv, out)
    # the budget does not: the same run goes on (see test_cascade for what it then does)
    assert run(load_task(write_task(tmp_path / "more.yaml", budget=0.25)), toy_csv, out).status == "complete"


@pytest.mark.parametrize("voting,policy", [("majority", "disagreement"), ("soft", "margin"),
                                           ("dawid-skene", "confidence")])
def test_each_voting_method_and_policy_runs_within_budget(tmp_path: Path, toy_csv: Path, voting: str,
                                                          policy: str) -> None:
    path = write_task(tmp_path / "t.yaml", voting=voting, budget=0.15)
    path.write_text(path.read_text().replace("policy: margin", f"policy: {policy}"))
    out = tmp_path / f"{voting}.csv"
    report = run(load_task(path), toy_csv, out)
    assert report.reviews <= report.budget
    assert evaluate(out, "label").accuracy > 0.75
    plan = json.loads((report.run_dir / "plan.json").read_text())
    assert plan["voting"]["method"] == voting and plan["routing"]["policy"] == policy
    with RunStore.existing(report.run_dir) as s:
        assert s.routed("hard") and (s.get_meta("task") or {})["review"]["policy"] == policy


def test_the_policy_decides_which_rows_are_hard(tmp_path: Path, toy_csv: Path) -> None:
    hard = {}
    for policy in ("margin", "confidence", "disagreement"):
        path = write_task(tmp_path / f"{policy}.yaml", budget=0.15)
        path.write_text(path.read_text().replace("policy: margin", f"policy: {policy}"))
        report = run(load_task(path), toy_csv, tmp_path / f"{policy}.csv")
        with RunStore.existing(report.run_dir) as s:
            hard[policy] = set(s.routed("hard"))
    assert all(hard.values())
    assert hard["margin"] != hard["disagreement"] and hard["confidence"] != hard["disagreement"]


def test_disagreement_policy_reviews_only_disagreements(tmp_path: Path, toy_csv: Path) -> None:
    path = write_task(tmp_path / "t.yaml", budget=0.5)
    path.write_text(path.read_text().replace("policy: margin", "policy: disagreement"))
    out = tmp_path / "o.csv"
    report = run(load_task(path), toy_csv, out, details=True)
    got = pd.read_csv(out, keep_default_na=False)
    with RunStore(report.run_dir) as s:
        hard = set(s.routed("hard"))
        boot = set(s.routed("bootstrap"))
    assert hard and not hard & boot
    rows = got[got["annotation_source"] == "reviewed:gold"]
    # a hard-routed row was one where the specialists disagreed
    votes = rows["annotation_votes"].map(json.loads)
    disagree = votes.map(lambda d: len({v for v in d.values() if v}) > 1)
    assert disagree.sum() >= len(hard)


def test_jsonl_and_parquet_inputs(tmp_path: Path, toy_task: Path) -> None:
    df = make_rows(300, seed=4)
    task = load_task(toy_task)
    for ext, write in (("jsonl", lambda p: df.to_json(p, orient="records", lines=True)),
                       ("parquet", lambda p: df.to_parquet(p))):
        src = tmp_path / f"in.{ext}"
        write(src)
        out = tmp_path / f"out.{ext}"
        run(task, src, out)
        got = pd.read_json(out, lines=True, dtype=False) if ext == "jsonl" else pd.read_parquet(out)
        assert len(got) == len(df) and list(got.columns[:3]) == ["id", "text", "label"]
        assert got["annotation"].notna().all()


def test_specialist_worse_than_chance_is_dropped(tmp_path: Path, toy_csv: Path) -> None:
    # zero-shot reads the label descriptions: swapped, it is worse than chance on this data
    # (a bootstrap sample large enough to show it beyond doubt: 90 rows)
    path = write_task(tmp_path / "t.yaml", specialists="[tfidf-head, zeroshot]", budget=0.6)
    text = path.read_text().replace("the author dislikes something", "great wonderful love excellent happy").replace(
        "the author likes something", "awful terrible hate horrible sad").replace(
        "no opinion either way", "great awful love hate")
    path.write_text(text)
    report = run(load_task(path), toy_csv, tmp_path / "o.csv")
    status = {s["name"]: s for s in report.specialists}
    assert status["zeroshot"]["status"] == "dropped"
    assert "below chance" in status["zeroshot"]["note"]
    assert status["tfidf-head"]["status"] == "active"


def test_wrong_label_map_is_replaced_by_the_one_the_reviews_support(tmp_path: Path, toy_csv: Path) -> None:
    # VADER mapped backwards (its negative -> our positive): the bootstrap reviews show the real map
    path = write_task(tmp_path / "t.yaml", specialists=(
        "[tfidf-head, {id: vader, label_map: {negative: positive, positive: negative, neutral: neutral}}]"))
    report = run(load_task(path), toy_csv, tmp_path / "o.csv", details=True)
    status = {s["name"]: s for s in report.specialists}
    assert status["vader"]["status"] == "active" and status["vader"]["validation_accuracy"] > 0.5
    with RunStore(tmp_path / "o.csv.run") as s:
        vader = {e["name"]: e for e in s.specialists()}["vader"]
        assert vader["label_map"] == {"negative": "negative", "positive": "positive", "neutral": "neutral"}
    # a resumed run keeps the corrected map (the same output again, nothing re-asked)
    again = run(load_task(path), toy_csv, tmp_path / "o2.csv", tmp_path / "o.csv.run", details=True)
    assert again.reviews == report.reviews
    assert (tmp_path / "o.csv").read_bytes() == (tmp_path / "o2.csv").read_bytes()


def test_generated_annotate_script_reproduces_the_runs_votes(tmp_path, toy_csv):
    """plan.json + annotate.py, rendered from the validated plan, give the pipeline's own unreviewed
    vote on every row, with nothing but public libraries (labeljury cannot be imported)."""
    import json as _json
    import subprocess
    import sys

    task = write_task(tmp_path / "t.yaml", specialists="[embedding-head, nb-head, hybrid-head, vader]", budget=0.2)
    out = tmp_path / "out.csv"
    run(load_task(task), toy_csv, out, details=True)
    run_dir = tmp_path / "out.csv.run"
    plan = _json.loads((run_dir / "plan.json").read_text())
    assert [s["name"] for s in plan["specialists"]] == ["embedding-head", "nb-head", "hybrid-head", "vader"]
    assert plan["voting"]["method"] == "soft" and len(plan["voting"]["weights"]) == 4
    script_out = tmp_path / "script.csv"
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "labeljury.py").write_text("raise ImportError('annotate.py must not need labeljury')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    done = subprocess.run([sys.executable, str(run_dir / "annotate.py"), str(toy_csv), str(script_out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    ours, theirs = pd.read_csv(out), pd.read_csv(script_out)
    labeled = ours.annotation_vote.notna()
    assert labeled.sum() > 500
    assert (theirs.annotation[labeled] == ours.annotation_vote[labeled]).all()
    # the script calibrates the vote's confidence as the run did (with the run's audit calibrator)
    voted = ours.annotation_source.isin(["consensus", "vote"])
    assert voted.sum() > 300 and plan["calibrator"] is not None
    np.testing.assert_allclose(theirs.annotation_confidence[voted], ours.annotation_confidence[voted], atol=1e-4)


def test_continual_stages_are_gated_and_recorded(tmp_path, toy_csv):
    task = write_task(tmp_path / "t.yaml", specialists="[embedding-head, nb-head]", budget=0.3,
                      extra="continual: {stage_size: 40, holdout: 0.25}\n")
    run(load_task(task), toy_csv, tmp_path / "out.csv")
    with RunStore(tmp_path / "out.csv.run") as s:
        stages = s.stages()
        specs = {e["name"]: e for e in s.specialists()}
        routed = s.routed("hard")
    assert len(stages) >= 3 and stages[-1]["final"] and not stages[0]["final"]
    with RunStore(tmp_path / "out.csv.run") as s:
        audit = set(s.routed("audit"))
        versions = s.versions()
        train_sets = {(v["specialist"], v["version"]): set(s.train_ids(v["specialist"], v["version"]).tolist())
                      for v in versions}
        final_stage = stages[-1]["stage"]
        final = {(v["specialist"], v["version"]) for v in versions if v["stage"] == final_stage}
    # no stage's version trains on the audit (it gates them); the final refit does (measured out of fold)
    assert audit and all(not (ids & audit) for key, ids in train_sets.items() if key not in final)
    assert final and all(audit <= train_sets[key] for key in final)
    for st in stages[:-1]:
        assert st["gate"] == "audit" and st["audit_rows"] == len(audit) and st["train_rows"] > 0
        for name, m in st["specialists"].items():
            if "promoted" in m and m["accuracy_before"] is not None:
                # the gate: a version that is not worse on the audit rows is always promoted (one that is
                # worse only by noise is too: McNemar's test, see test_learning_signal's NotWorse tests)
                if m["accuracy_after"] >= m["accuracy_before"]:
                    assert m["promoted"]
    promoted = sum(m.get("promoted", False) for st in stages for m in st["specialists"].values())
    assert specs["nb-head"]["version"] == 1 + sum(
        st["specialists"]["nb-head"].get("promoted", False) for st in stages)
    assert promoted >= 2 and len(routed) > 0
    # the current version's checkpoint is on disk; superseded ones are gone, their records stay
    ckpts = tmp_path / "out.csv.run" / "checkpoints"
    current = {f"{name}-v{specs[name]['version']}" for name in ("embedding-head", "nb-head")}
    assert {p.name for p in ckpts.iterdir()} == current
    assert (ckpts / f"nb-head-v{specs['nb-head']['version']}" / "head.json").exists()
    assert all((v["checkpoint"] is None) == (f"{v['specialist']}-v{v['version']}" not in current) for v in versions)


def test_keep_checkpoints_all_keeps_every_versions_folder_and_resumes_the_same_run(tmp_path, toy_csv):
    extra = "continual: {{stage_size: 40, keep_checkpoints: {keep}}}\n"
    task = write_task(tmp_path / "t.yaml", specialists="[nb-head, vader]", budget=0.3, extra=extra.format(keep="all"))
    run(load_task(task), toy_csv, tmp_path / "out.csv")
    with RunStore(tmp_path / "out.csv.run") as s:
        versions = [v for v in s.versions() if v["specialist"] == "nb-head"]
    assert len(versions) >= 3
    assert all((tmp_path / "out.csv.run" / v["checkpoint"] / "head.json").exists() for v in versions)
    # which checkpoints stay is not part of the task's identity: the same run continues under the other setting
    write_task(tmp_path / "t.yaml", specialists="[nb-head, vader]", budget=0.3, extra=extra.format(keep="current"))
    report = run(load_task(task), toy_csv, tmp_path / "out.csv")
    assert report.status == "complete"


def test_without_continual_learning_the_heads_are_fitted_once(tmp_path, toy_csv):
    task = write_task(tmp_path / "t.yaml", specialists="[embedding-head, nb-head]", budget=0.3,
                      extra="continual: {enabled: false}\n")
    run(load_task(task), toy_csv, tmp_path / "out.csv")
    with RunStore(tmp_path / "out.csv.run") as s:
        assert s.stages() == [] and {e["version"] for e in s.specialists()} == {1}


def test_finetuned_transformer_continues_training_stage_by_stage(tmp_path, toy_csv):
    """The `finetune` specialist (a tiny random BERT here) is fine-tuned in the stages through
    `update`: each version continues from the last promoted checkpoint (an HF folder) on the new
    reviewed rows plus a replay sample, and `export-model` can ship it."""
    from labeljury.model_export import export_model
    from tests.test_progress import RecordingProgress
    from tests.tiny_models import make_tiny_bert

    tiny = make_tiny_bert(tmp_path / "tiny")
    task = write_task(tmp_path / "t.yaml", budget=0.2, specialists=(
        f"[nb-head, {{id: finetune, options: {{model: '{tiny}', epochs: 1, batch_size: 16, max_length: 16}}}}]"),
        extra="continual: {stage_size: 40, replay: 30}\n")
    progress = RecordingProgress()
    run(load_task(task), toy_csv, tmp_path / "out.csv", progress=progress)
    # every fit and update shows a bar with a total (rows x epochs), and it reaches it
    tuning = [b for b in progress.bars if b["description"].startswith("finetune: ")]
    assert any("updating" in b["description"] for b in tuning) and any("fine-tuning" in b["description"] for b in tuning)
    assert all(b["total"] and b["done"] == b["total"] for b in tuning)
    run_dir = tmp_path / "out.csv.run"
    with RunStore(run_dir) as s:
        spec = {e["name"]: e for e in s.specialists()}["finetune"]
        stages = s.stages()
        version = spec["version"]
        trained = s.train_ids("finetune", version)
    assert spec["status"] == "active" and version >= 2
    assert all("finetune" in st["specialists"] for st in stages)
    ckpt = run_dir / "checkpoints" / f"finetune-v{version}"
    assert (ckpt / "config.json").exists() and (ckpt / "labeljury.json").exists()
    meta = json.loads((ckpt / "labeljury.json").read_text())
    # the last version was an update on new rows + at most 30 replayed ones, not a refit on all
    assert meta["history"][-1]["rows"] < len(trained)
    assert len(meta["history"]) == version
    export_model(run_dir, tmp_path / "model", specialist="finetune")
    assert (tmp_path / "model" / "README.md").exists()


def test_without_embedding_specialists_only_the_bootstrap_samplers_rows_are_encoded(tmp_path):
    """The bootstrap sampler fits k-means on a few thousand rows: a run whose specialists read no
    embeddings encodes just those (not stored), and picks the same rows as from a stored encoder pass."""
    from labeljury.pipeline.bootstrap import route_bootstrap
    from labeljury.pipeline.encode import encode
    from labeljury.pipeline.ingest import ingest
    from labeljury.scoring import Features
    from labeljury.specialists import DEFAULT_ENCODER
    from labeljury.store import CHUNK

    from .test_progress import RecordingProgress

    data = tmp_path / "in.csv"
    make_rows(5_000, seed=3).to_csv(data, index=False)
    picked = {}
    for how in ("stored", "sample only"):
        progress = RecordingProgress()
        with RunStore(tmp_path / how) as store:
            ingest(store, data, "text", progress)
            if how == "stored":
                encode(store, [DEFAULT_ENCODER], progress)
            route_bootstrap(store, 40, Features(store), DEFAULT_ENCODER, seed=0, progress=progress)
            picked[how] = store.routed("bootstrap")
            n_texts = store.n_texts
            stored_chunks = [c for c in range(-(-n_texts // CHUNK)) if store.has_embeddings(DEFAULT_ENCODER, c)]
        encoded = sum(b["done"] for b in progress.bars if b["description"].startswith("encoding"))
        if how == "sample only":
            assert stored_chunks == []
            assert 0 < encoded <= 2_000  # max(20 x 40, 2000) rows, not all ~5,000
        else:
            assert len(stored_chunks) == 3 and encoded == n_texts
    assert len(picked["stored"]) == 40
    assert picked["sample only"] == picked["stored"]



def test_a_feature_cache_too_small_for_the_input_gives_the_same_labels(tmp_path, monkeypatch):
    """Blocks memory cannot keep go to the spill folder and come back from it: the output is the one
    a roomy cache gives, and the folder is gone when the run ends."""
    import labeljury.scoring as scoring

    data = tmp_path / "in.csv"
    make_rows(5_000, seed=5).to_csv(data, index=False)
    task = write_task(tmp_path / "task.yaml", budget=0.1)
    reference = tmp_path / "ref.csv"
    run(load_task(task), data, reference, tmp_path / "ref.run")

    reads = []
    read = scoring.Features._read_spilled
    monkeypatch.setattr(scoring.Features, "_read_spilled", lambda self, key: reads.append(key) or read(self, key))
    monkeypatch.setattr(scoring, "CACHE_BYTES", 2_000_000)  # about one chunk's n-grams, of three
    out = tmp_path / "out.csv"
    run(load_task(task), data, out, tmp_path / "out.run")
    assert reads  # blocks were pushed out and read back
    assert out.read_bytes() == reference.read_bytes()
    assert not (tmp_path / "out.run" / "feature-cache").exists()
