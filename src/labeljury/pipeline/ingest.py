"""Ingest: every input row into the run store, in chunks; duplicate texts share one text id, empty or
non-string texts are kept as rows with a skip reason. Resumes after the last committed chunk."""

from __future__ import annotations

from pathlib import Path

from .. import data
from ..progress import Progress
from ..store import RunStore

STEP = "ingest"


def ingest(store: RunStore, input_path: Path, text_column: str, progress: Progress) -> None:
    if store.is_done(STEP):
        return
    done = store.get_meta("ingested_rows", 0)
    with progress.bar("reading rows", None) as bar:
        for chunk in data.iter_chunks(input_path, columns=[text_column]):
            start = int(chunk.index.start)  # iter_chunks numbers rows with a RangeIndex
            stop = start + len(chunk)
            if stop <= done:
                bar.advance(stop - start)
                continue
            values = chunk[text_column].tolist()[max(0, done - start):]
            texts = [v if data.is_text(v) else None for v in values]
            store.add_rows(max(start, done), texts, [None if t is not None else "empty" for t in texts])
            bar.advance(stop - start)
    store.mark_done(STEP)
