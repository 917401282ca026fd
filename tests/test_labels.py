"""The one rule that matches a value to a label: case and Unicode forms are ignored, the same way
everywhere (the task's duplicate check, gold, queues, imports, the LLM's answers), so two labels it
cannot tell apart are refused, and a value in another form matches its label."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pandas as pd
import pytest
from pydantic import TypeAdapter

from labeljury import load_task
from labeljury.errors import TaskError
from labeljury.labels import LabelMatcher
from labeljury.llm.prompt import label_type
from labeljury.review.base import ReviewItem
from labeljury.review.gold import GoldReviewer

NFC, NFD = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")


@pytest.mark.parametrize("pair", [("straße", "STRASSE"), (NFC, NFD), ("Ａ", "a"), ("yes", "YES")])
def test_two_labels_the_rule_cannot_tell_apart_are_refused(tmp_path: Path, pair: tuple[str, str]) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nlabels: [{pair[0]!r}, {pair[1]!r}, other]\nspecialists: [tfidf-head]\n"
                    "reviewer: {kind: gold, column: label}\n", encoding="utf-8")
    with pytest.raises(TaskError, match="each label must be listed once"):
        load_task(path)


def test_a_value_in_another_case_or_unicode_form_matches_its_label() -> None:
    m = LabelMatcher([NFC, "straße", "neutral"])
    assert m.match(NFD) == NFC and m.match(f" {NFD.upper()} ") == NFC
    assert m.match("STRASSE") == "straße" and m.match("Straße") == "straße"
    assert m.match("cafe") is None and m.match("strase") is None


def test_gold_and_the_llms_answers_match_by_the_same_rule(tmp_path: Path) -> None:
    data = tmp_path / "in.csv"
    pd.DataFrame({"text": ["one", "two", "three"], "label": [NFD, "STRASSE", "neutral"]}).to_csv(data, index=False)
    labels = [NFC, "straße", "neutral"]
    gold = GoldReviewer(data, "label", labels)
    got = {r.key: r.label for r in gold.review([ReviewItem(key=i, text=t, row=i) for i, t in enumerate(["one", "two", "three"])])}
    assert got == {0: NFC, 1: "straße", 2: "neutral"}
    answer = TypeAdapter(label_type(labels))
    assert answer.validate_python(NFD) == NFC and answer.validate_python("STRASSE") == "straße"
