"""Every progress bar of a long step has a total (so it shows an ETA), and the bar reaches it."""

from __future__ import annotations

from contextlib import contextmanager

import pandas as pd
import pytest

from labeljury.pipeline.ingest import ingest
from labeljury.store import RunStore


class RecordingProgress:
    """A Progress that keeps what each bar was told: its description, total, unit and how far it went."""

    def __init__(self):
        self.bars: list[dict] = []

    @contextmanager
    def bar(self, description, total, unit="rows"):
        rec = {"description": description, "total": total, "unit": unit, "done": 0}
        self.bars.append(rec)

        class _Bar:
            def advance(self, n=1):
                rec["done"] += n

        yield _Bar()

    def log(self, message):
        pass


def _frame(n: int) -> pd.DataFrame:
    # quoted newlines and commas: a line count would get the row count wrong, the bytes are still exact
    return pd.DataFrame({"text": [f'row {i}, "quoted"\nsecond line' if i % 7 else "" for i in range(n)]})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".csv.gz"])
def test_reading_a_streamed_input_counts_bytes_to_the_file_size(tmp_path, suffix):
    path = tmp_path / f"in{suffix}"
    df = _frame(120_000)  # more than one parser chunk
    if suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_csv(path, index=False)
    progress = RecordingProgress()
    with RunStore(tmp_path / "run") as store:
        ingest(store, path, "text", progress)
        assert store.n_rows == len(df)
    (bar,) = progress.bars
    assert bar["unit"] == "bytes"
    assert bar["total"] == path.stat().st_size
    assert bar["done"] == bar["total"]


def test_reading_parquet_counts_rows_from_its_metadata(tmp_path):
    path = tmp_path / "in.parquet"
    _frame(1_234).to_parquet(path)
    progress = RecordingProgress()
    with RunStore(tmp_path / "run") as store:
        ingest(store, path, "text", progress)
    (bar,) = progress.bars
    assert (bar["unit"], bar["total"], bar["done"]) == ("rows", 1_234, 1_234)


def test_the_cli_shows_a_total_and_an_eta_while_reading(tmp_path):
    from rich.console import Console

    from labeljury.progress import RichProgress

    path = tmp_path / "in.csv"
    _frame(5_000).to_csv(path, index=False)
    console = Console(record=True, width=160, force_terminal=True)
    with RunStore(tmp_path / "run") as store:
        ingest(store, path, "text", RichProgress(console))
    shown = console.export_text()
    size_kb = path.stat().st_size / 1000
    assert "reading rows" in shown and "/?" not in shown and "100%" in shown
    assert f"{size_kb:.1f}/{size_kb:.1f} kB" in shown


def test_off_a_terminal_each_step_is_one_line_with_its_total_and_time(tmp_path):
    """In a pipe or a CI log a live bar repeats and is cut at 80 columns: one full line a step instead."""
    from rich.console import Console

    from labeljury.progress import RichProgress

    console = Console(record=True, width=80, force_terminal=False)
    progress = RichProgress(console)
    with progress.bar("specialists voting: a step whose name is longer than eighty columns, every word of it", 3) as b:
        b.advance(3)
    progress.log("a message longer than eighty columns stays on one line, unbroken, for grep and for people " * 2)
    lines = console.export_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("specialists voting: a step whose name") and lines[0].endswith(" s")
    assert "every word of it: 3 rows in " in lines[0] and "━" not in lines[0]
