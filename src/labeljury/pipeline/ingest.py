"""Ingest: every input row into the run store, in chunks; duplicate texts share one text id, empty or
non-string texts are kept as rows with a skip reason. Resumes after the last committed chunk.

Its progress bar has a total from the start: Parquet's row count from its metadata; for CSV and JSONL,
whose rows are known only once read, the file's size in bytes, advanced as the parser reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import data
from ..progress import Bar, Progress
from ..store import RunStore

STEP = "ingest"


def ingest(store: RunStore, input_path: Path, text_column: str, progress: Progress) -> None:
    if store.is_done(STEP):
        return
    done = store.get_meta("ingested_rows", 0)
    by_rows = data.detect_format(input_path) == "parquet"
    total = data.count_rows(input_path) if by_rows else input_path.stat().st_size
    with progress.bar("reading rows", total, unit="rows" if by_rows else "bytes") as bar:
        counter = None if by_rows else _BytesRead(bar)
        keys = store.text_keys()
        for chunk in data.iter_chunks(input_path, columns=[text_column], digest=counter):
            start = int(chunk.index.start)  # iter_chunks numbers rows with a RangeIndex
            stop = start + len(chunk)
            if stop > done:
                values = chunk[text_column].tolist()[max(0, done - start):]
                texts = [v if data.is_text(v) else None for v in values]
                store.add_rows(max(start, done), texts, [None if t is not None else "empty" for t in texts], keys)
            if by_rows:
                bar.advance(stop - start)
    store.mark_done(STEP)


class _BytesRead:
    """Stands where `iter_chunks` takes a digest: it is fed every block of the file as the parser reads
    it, and moves the bar by its size."""

    def __init__(self, bar: Bar):
        self.bar = bar

    def update(self, block: Any) -> None:
        self.bar.advance(len(block))
