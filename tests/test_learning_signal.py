"""Tests that fail when routing or the continual-learning gate is broken.

The toy rows of conftest are separable by their label words: any router and any gate pass an accuracy
assertion there. These rows are not: a third of them carry only a domain word the lexicon does not
know (and a lexicon word pointing the other way), so the specialists disagree on exactly those rows, the
vote gets many of them wrong, and only reviewing them (and training on them) fixes that.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import labeljury.pipeline as pipeline_module
from labeljury import load_task, run
from labeljury.review.base import ReviewItem, ReviewResult
from labeljury.review.gold import GoldReviewer
from labeljury.routing import HardestFirst
from labeljury.store import RunStore

from .conftest import FILLER, WORDS, write_task

DOMAIN = {"positive": ["upgraded", "outperform", "beat"], "negative": ["downgraded", "missed", "default"],
          "neutral": ["scheduled", "filed", "listed"]}
OTHER = {"positive": "negative", "negative": "positive", "neutral": "positive"}


def hard_rows(n: int, seed: int) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    labels = list(WORDS)
    for i in range(n):
        label = labels[i % 3]
        if i % 3 == 0 or rng.random() < 0.3:  # a domain row: the lexicon word misleads
            words = rng.sample(FILLER, 4) + [rng.choice(DOMAIN[label]), rng.choice(WORDS[OTHER[label]])]
        else:
            words = rng.sample(FILLER, 4) + rng.sample(WORDS[label], 2)
        rng.shuffle(words)
        rows.append({"text": " ".join(words) + f" #{i}", "label": label})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def hard_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hard") / "in.csv"
    hard_rows(900, seed=3).to_csv(path, index=False)
    return path


def accuracy_of_unreviewed(out: Path, run_dir: Path) -> float:
    """Accuracy on the rows no reviewer answered: what the specialists and the vote did."""
    df = pd.read_csv(out, keep_default_na=False)
    unreviewed = ~df.annotation_source.str.startswith("reviewed:")
    assert unreviewed.sum() > 300
    return float((df.annotation[unreviewed] == df.label[unreviewed]).mean())


class RandomRows(HardestFirst):
    """A broken router: the budget goes to random unrouted rows."""

    def query_stream(self, votes, budget, exclude=None):  # noqa: ANN001, ANN201
        ids = np.concatenate([v.ids for v in votes])
        free = ids[~np.isin(ids, exclude)] if exclude is not None else ids
        pick = np.random.default_rng(0).permutation(free)[:budget]
        return pick, np.zeros(len(pick))


def test_routing_the_hardest_rows_beats_routing_random_ones(tmp_path: Path, hard_data: Path, monkeypatch) -> None:
    path = write_task(tmp_path / "t.yaml", budget=0.2)
    # a uniform audit in both: the default one favours hard rows, which would help the random routing too
    path.write_text(path.read_text().replace("policy: margin}", "policy: margin, audit_sampling: uniform}"))
    task = load_task(path)
    run(task, hard_data, tmp_path / "hardest.csv")
    hardest = pd.read_csv(tmp_path / "hardest.csv", keep_default_na=False)
    monkeypatch.setattr(pipeline_module, "HardestFirst", RandomRows)
    run(task, hard_data, tmp_path / "random.csv")
    rand = pd.read_csv(tmp_path / "random.csv", keep_default_na=False)
    acc = {name: float((df.annotation == df.label).mean()) for name, df in (("hardest", hardest), ("random", rand))}
    assert acc["hardest"] > acc["random"] + 0.06, acc


class LiesOnHardRows:
    """A reviewer that answers the bootstrap and audit rows from gold and every stage row wrongly."""

    kind = "gold"

    def __init__(self, input_path: Path, labels: Sequence[str]):
        self.gold = GoldReviewer(input_path, "label", labels)
        self.labels = list(labels)

    def review(self, items: Sequence[ReviewItem]) -> Iterator[ReviewResult]:
        reasons = {it.key: it.reason for it in items}
        for r in self.gold.review(items):
            if reasons[r.key] == "hard" and r.label is not None:
                wrong = self.labels[(self.labels.index(r.label) + 1) % len(self.labels)]
                r = ReviewResult(r.key, wrong, r.source, r.confidence)
            yield r


def test_the_gate_rolls_back_what_a_lying_reviewer_taught(tmp_path: Path, hard_data: Path, monkeypatch) -> None:
    task = load_task(write_task(tmp_path / "t.yaml", budget=0.3))
    labels = task.label_names
    out = tmp_path / "gated.csv"
    run(task, hard_data, out, reviewer=LiesOnHardRows(hard_data, labels))
    with RunStore.existing(tmp_path / "gated.csv.run") as s:
        stages = s.stages()
    assert any(e.get("promoted") is False for st in stages for e in st["specialists"].values()), stages  # the audit saw the damage
    gated = accuracy_of_unreviewed(out, tmp_path / "gated.csv.run")

    monkeypatch.setattr("labeljury.continual.NotWorse.promote", lambda self, current, candidate: True)
    out = tmp_path / "always.csv"
    run(task, hard_data, out, reviewer=LiesOnHardRows(hard_data, labels))
    always = accuracy_of_unreviewed(out, tmp_path / "always.csv.run")
    assert gated > always + 0.06, (gated, always)
