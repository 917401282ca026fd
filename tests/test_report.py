"""The report as a reader sees it: every chart drawn has something in it, every chart left out says why,
on runs without an audit, with continual learning off, and with many labels; looked at in a real browser."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from labeljury import load_task, run
from labeljury.report import write_report

from .conftest import CHROMIUM, make_rows, require, write_task

LOOK = """() => [...document.querySelectorAll('.plot')].map(d => ({
  id: d.id,
  marks: d.querySelectorAll('.scatterlayer .point, .barlayer path, .heatmaplayer image').length,
  ticks: [...d.querySelectorAll('.xtick text, .ytick text')].map(t => t.textContent),
  svg: d.querySelector('.main-svg').getBoundingClientRect().height,
  box: d.getBoundingClientRect().height}))"""


def _look(page_path: Path) -> tuple[list[dict], str]:
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        page.wait_for_function("[...document.querySelectorAll('.plot')].every(d => d.querySelector('.main-svg'))")
        plots = page.evaluate(LOOK)
        text = page.inner_text("body")
        browser.close()
    assert errors == []
    return plots, text


def _assert_nothing_empty(plots: list[dict]) -> None:
    for plot in plots:
        assert plot["marks"] > 0, f"{plot['id']} is drawn empty"
        assert plot["svg"] <= plot["box"] + 1, f"{plot['id']} is cut off"
        # an empty axis autoscales to -100% .. 600%: never an accuracy outside 0..100%
        assert not any(t.endswith("%") and (t.startswith(("−", "-")) or int(t.rstrip("%") or 0) > 100)
                       for t in plot["ticks"] if t.rstrip("%").lstrip("−-").isdigit()), plot


def test_a_run_without_an_audit_draws_no_empty_chart_and_says_why(tmp_path: Path) -> None:
    require(Path(CHROMIUM).exists(), "Debian's chromium")
    make_rows(300, seed=8).to_csv(tmp_path / "in.csv", index=False)  # 60 reviews: no audit
    run(load_task(write_task(tmp_path / "t.yaml", budget=0.2)), tmp_path / "in.csv", tmp_path / "out.csv")
    plots, text = _look(write_report(tmp_path / "out.csv.run", tmp_path / "r.html"))
    _assert_nothing_empty(plots)
    assert {p["id"] for p in plots} == {"spend", "sources", "specialists"}
    assert text.count("Nothing to draw") == 3  # reliability, stages, confusion: each says why instead
    assert "no audit sample" in text and "Not measured on the audit: tfidf-head, vader (the run has no audit sample)" in text


def test_a_run_with_one_stage_and_one_with_many_labels_draw_every_chart_whole(tmp_path: Path) -> None:
    require(Path(CHROMIUM).exists(), "Debian's chromium")
    make_rows(900, seed=2).to_csv(tmp_path / "b.csv", index=False)
    run(load_task(write_task(tmp_path / "b.yaml", budget=0.2, extra="continual: {enabled: false}\n")),
        tmp_path / "b.csv", tmp_path / "b_out.csv")
    plots, text = _look(write_report(tmp_path / "b_out.csv.run", tmp_path / "b.html"))
    _assert_nothing_empty(plots)
    assert "stages" not in {p["id"] for p in plots} and "continual learning is off" in text
    assert "audit rows)" in text  # each estimated group says how many audit rows it rests on

    rng = random.Random(0)
    labels = [f"topic{i:02d}" for i in range(40)]
    vocab = {lab: [f"w{lab}x{j}" for j in range(6)] for lab in labels}
    rows = [{"text": " ".join(rng.sample(vocab[lab], 2) + [rng.choice(vocab[rng.choice(labels)]), "the"]), "label": lab}
            for i in range(3000) for lab in [labels[i % 40]]]
    pd.DataFrame(rows).to_csv(tmp_path / "c.csv", index=False)
    (tmp_path / "c.yaml").write_text("name: many\nlabels: [" + ", ".join(labels) + "]\nspecialists: [tfidf-head]\n"
                                     "reviewer: {kind: gold, column: label}\nreview: {budget: 0.2}\n")
    run(load_task(tmp_path / "c.yaml"), tmp_path / "c.csv", tmp_path / "c_out.csv")
    plots, _ = _look(write_report(tmp_path / "c_out.csv.run", tmp_path / "c.html"))
    _assert_nothing_empty(plots)
    confusion = next(p for p in plots if p["id"] == "confusion")
    assert confusion["box"] > 600 and sum(t.startswith("topic") for t in confusion["ticks"]) == 80  # every label, both axes
