"""Shared fixtures: small generated datasets whose labels the specialists can learn."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHROMIUM = "/usr/bin/chromium"


def require(available: bool, what: str) -> None:
    """Skip a test that needs a real part this machine lacks (Debian's chromium, a Label Studio
    server); in CI (LABELJURY_REQUIRE_BROWSER=1, set by .ci/run, which installs them) fail instead."""
    if available:
        return
    if os.environ.get("LABELJURY_REQUIRE_BROWSER"):
        pytest.fail(f"{what} is missing, and .ci/run should have installed it")
    pytest.skip(f"needs {what} (.ci/run installs it)")

WORDS = {
    "positive": ["great", "wonderful", "love", "excellent", "happy", "fantastic", "delighted", "superb"],
    "negative": ["awful", "terrible", "hate", "horrible", "sad", "disgusting", "angry", "worst"],
    "neutral": ["okay", "average", "the", "meeting", "schedule", "report", "tuesday", "document"],
}
FILLER = ["today", "this", "was", "really", "the", "service", "food", "movie", "phone", "again", "my", "a"]


def make_rows(n: int, seed: int = 0, empties: int = 0, duplicates: int = 0) -> pd.DataFrame:
    """`n` rows of text,label (+ an id column), with some empty texts and duplicated texts."""
    rng = random.Random(seed)
    rows = []
    labels = list(WORDS)
    for i in range(n):
        label = labels[i % 3]
        words = rng.sample(FILLER, 4) + rng.sample(WORDS[label], 2)
        if rng.random() < 0.15:  # some noise so that not everything is easy
            words.append(rng.choice(WORDS[rng.choice(labels)]))
        rng.shuffle(words)
        rows.append({"id": f"r{i:05d}", "text": " ".join(words), "label": label})
    for j in range(duplicates):
        src = rows[rng.randrange(len(rows))]
        rows.insert(rng.randrange(len(rows)), {"id": f"d{j:05d}", "text": src["text"], "label": src["label"]})
    for j in range(empties):
        rows.insert(rng.randrange(len(rows)), {"id": f"e{j:05d}", "text": rng.choice(["", "   "]), "label": "neutral"})
    return pd.DataFrame(rows)


TASK_YAML = """\
name: toy-sentiment
labels:
  negative: the author dislikes something
  neutral: no opinion either way
  positive: the author likes something
instructions: Classify the sentiment of a short review.
text_column: text
specialists: {specialists}
reviewer: {{kind: gold, column: label}}
review: {{budget: {budget}, policy: margin}}
voting: {voting}
"""


def write_task(path: Path, specialists: str = "[tfidf-head, vader]", budget: float = 0.2,
               voting: str = "soft", extra: str = "") -> Path:
    path.write_text(TASK_YAML.format(specialists=specialists, budget=budget, voting=voting) + extra)
    return path


@pytest.fixture
def toy_csv(tmp_path: Path) -> Path:
    path = tmp_path / "toy.csv"
    make_rows(600, seed=1, empties=5, duplicates=20).to_csv(path, index=False)
    return path


@pytest.fixture
def toy_task(tmp_path: Path) -> Path:
    return write_task(tmp_path / "task.yaml")
