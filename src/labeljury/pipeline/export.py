"""Export: every input row, its columns in order, plus the annotation columns; written atomically."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .. import data
from ..errors import InputError, RunStoreError
from ..labelsets import LabelSets
from ..progress import Progress, SilentProgress
from ..sources import skipped
from ..store import RunStore

OUTPUT_COLUMNS = ("annotation", "annotation_confidence", "annotation_source", "annotation_flag")
DETAIL_COLUMNS = ("annotation_vote", "annotation_vote_confidence", "annotation_votes", "annotation_review")
FLAG = "vote-disagrees"  # a reviewed row whose label a confident, out-of-sample vote contradicts


def export(store: RunStore, input_path: str | Path, output: str | Path, details: bool = False,
           progress: Progress | None = None, sets: LabelSets | None = None) -> Path:
    """Write `output`. A multi-label task's sets (`sets`) are stored as text; JSONL and Parquet get them as
    lists, CSV as the names joined by the task's separator."""
    progress = progress or SilentProgress()
    output = Path(output)
    as_list = sets is not None and data.ChunkWriter.format_of(output) != "csv"

    def shown(label: str | None) -> str | list[str] | None:
        return list(sets.parse(label) or ()) if as_list and label is not None and sets is not None else label

    if not store.is_done("finalize"):
        raise RunStoreError(f"run {str(store.run_dir)!r} has not finished labeling; rerun `labeljury run` first")
    data.check_output(output, input_path)
    expected = (store.get_meta("fingerprint") or {}).get("input", {}).get("sha256")
    digest = hashlib.sha256()
    with data.ChunkWriter(output) as writer, progress.bar("writing output", store.n_rows) as bar:
        for chunk in data.iter_chunks(input_path, digest=digest):
            start = int(chunk.index.start)  # iter_chunks numbers rows with a RangeIndex
            stop = start + len(chunk)
            ids, skips = store.row_text_ids(start, stop)
            fin = store.final_for(ids)
            # the reviewed rows of this chunk's texts only: memory holds a chunk, not every review
            verdicts = store.verdicts(ids)
            reviews = store.reviews(ids) if details else {}
            rows = [fin.get(int(t)) if t >= 0 else None for t in ids]
            chunk = chunk.copy()
            chunk["annotation"] = [shown(r.label) if r else None for r in rows]
            chunk["annotation_confidence"] = np.array([r.confidence if r and r.confidence is not None else np.nan for r in rows],
                                                     dtype=np.float64)
            chunk["annotation_source"] = [r.source if r else skipped(why) for r, why in zip(rows, skips)]
            chunk["annotation_flag"] = [FLAG if t >= 0 and (int(t) in verdicts and verdicts[int(t)].flagged) else ""
                                        for t in ids]
            if details:
                chunk["annotation_vote"] = [shown(r.vote) if r else None for r in rows]
                chunk["annotation_vote_confidence"] = np.array(
                    [r.vote_confidence if r and r.vote_confidence is not None else np.nan for r in rows], dtype=np.float64)
                chunk["annotation_votes"] = [r.specialist_votes if r else None for r in rows]
                # the reviewer's own answer, whatever decided the row
                chunk["annotation_review"] = [shown(reviews[int(t)].label) if t >= 0 and int(t) in reviews else None
                                              for t in ids]
            writer.write(chunk)
            bar.advance(stop - start)
        if expected is not None and digest.hexdigest() != expected:  # leaving the block discards the output
            raise InputError(f"the input {str(input_path)!r} changed since the run labeled it (its content differs); "
                             "its rows may no longer match their labels: rerun `labeljury run` with a new --run-dir")
    return output
