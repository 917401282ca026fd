"""Who answers a multi-label run's rows, and how: one reviewer of sets (`gold`, `file`, `llm`, `human`), or a
cascade of an LLM then a trusted reviewer (`gold`, `file` or `human`).

`SetDesk` asks them: the audit and the first sample blind, a stage's hard rows with the vote's set and
per-label scores in context. In a cascade the trusted reviewer answers the audit and the first sample (they
measure and seed) and what the LLM does not settle; the LLM also answers, as it answers a hard row, the audit
rows a stage would have picked, which measure how often the sets it decides are right (`settled`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TaskError
from ..labelsets import LabelSets
from ..progress import Progress
from ..review.base import Reviewer, ReviewItem
from ..sources import AUDIT, BOOTSTRAP, HARD, reviewed, reviewer_of
from ..store import RunStore
from ..task import ReviewerSpec, Task
from . import trust, vote

TRUSTED = ("gold", "file", "human")  # reviewers whose sets are taken as right


def make_set_reviewer(task: Task, input_path: Path, run_dir: Path) -> Reviewer:
    """The task's reviewer of sets: one of `gold`, `file`, `llm`, `human`, or a cascade of an LLM then a trusted
    reviewer (`gold`, `file` or `human`), which answers the audit, the first sample and what the LLM does not
    settle (no answer, or one under the LLM's `min_confidence`)."""
    from ..review.cascade import CascadeReviewer

    specs = task.reviewer
    kinds = [r.kind for r in specs]
    if len(specs) == 2 and kinds[0] == "llm" and kinds[1] in TRUSTED:
        return CascadeReviewer([(_one_set_reviewer(specs[0], task, input_path, run_dir), specs[0].min_confidence),
                                (_one_set_reviewer(specs[1], task, input_path, run_dir), None)])
    if len(specs) != 1:
        raise TaskError(f"a multi-label task is reviewed by one reviewer, or by an LLM then a trusted reviewer (gold, "
                        f"file or human), not {', '.join(kinds)}; reorder or shorten the `reviewer:` list")
    return _one_set_reviewer(specs[0], task, input_path, run_dir)


def _one_set_reviewer(spec: ReviewerSpec, task: Task, input_path: Path, run_dir: Path) -> Reviewer:
    from ..review import FileReviewer, GoldReviewer

    sets = task.label_sets
    if spec.kind == "human":  # people on the review page (`labeljury review`), its API or Label Studio
        from ..review.human import HumanReviewer

        return HumanReviewer(run_dir)
    if spec.kind == "gold":
        return GoldReviewer(input_path, spec.column or "label", task.label_names, sets)
    if spec.kind == "llm":
        from ..review.llm import make_llm_reviewer

        return make_llm_reviewer(task, run_dir)
    path = Path(spec.path).expanduser() if spec.path else Path("review_queue.jsonl")
    return FileReviewer(path if path.is_absolute() else run_dir / path, task.label_names, sets)


class SetDesk:
    """Asks the run's reviewer about rows of a multi-label run and stores every answer (see the module doc)."""

    def __init__(self, task: Task, sets: LabelSets, reviewer: Reviewer, progress: Progress):
        self.task = task
        self.sets = sets
        self.reviewer = reviewer
        self.progress = progress

    def first_reviewer(self) -> Reviewer | None:
        """The LLM first in a cascade (it decides the hard rows it settles), else None."""
        from ..review.cascade import CascadeReviewer

        return self.reviewer.reviewers[0][0] if isinstance(self.reviewer, CascadeReviewer) else None

    def measure_first_reviewer(self, store: RunStore, stage: int) -> None:
        """In a cascade: ask the LLM about the audit rows stage `stage` would have picked, as it is asked about
        the stage's hard rows (the vote in context), and keep its answers beside the trusted reviewer's: they
        measure how often the rows it decides are right (`trust.Settled`). Each is asked once (a failed answer
        too: a row it would not have settled)."""
        llm = self.first_reviewer()
        if llm is None:
            return
        marked = store.stages()[stage].get("marked") or []
        asked = store.answered_by(llm.kind)
        todo = [t for t in marked if t not in asked]
        if not todo:
            return
        texts, priors = store.texts_by_id(todo), store.priors(todo)
        items = [self.item(t, texts[t], HARD, priors.get(t)) for t in todo]
        with self.progress.bar(f"reviewing (audit rows the stage picked, answered by {llm.kind} to measure it)",
                               len(items)) as bar:
            for r in llm.review(items):
                if not r.pending:
                    store.put_answer(llm.kind, r)
                bar.advance(1)

    def review(self, store: RunStore, ids: Sequence[int], finish: bool) -> bool:
        """Ask the reviewer for the rows of `ids` without an answer; False while some wait for a person."""
        answered = store.reviews(ids)
        todo = [t for t in ids if t not in answered]
        if not todo:
            return True
        texts = store.texts_by_id(todo)
        reasons = dict.fromkeys(store.routed(HARD), HARD) | dict.fromkeys(store.routed(BOOTSTRAP), BOOTSTRAP) | \
            dict.fromkeys(store.routed(AUDIT), AUDIT)
        priors = store.priors(todo)  # the vote's per-label probabilities, for the rows routed as hard
        items = [self.item(t, texts[t], reasons.get(t, HARD), priors.get(t)) for t in todo]
        waiting = 0
        assert self.reviewer is not None
        from ..review.cascade import CascadeReviewer

        # in a cascade the trusted reviewer answers the audit and the first sample (they measure and seed); the LLM
        # decides only hard rows, on which the audit rows a stage picks measure it
        cascade = isinstance(self.reviewer, CascadeReviewer)
        batches = [(self.reviewer.last, [it for it in items if it.reason != HARD]),
                   (self.reviewer, [it for it in items if it.reason == HARD])] if cascade else [(self.reviewer, items)]
        with self.progress.bar(f"reviewing ({self.reviewer.kind})", len(items)) as bar:
            for reviewer, batch in batches:
                for r in reviewer.review(batch) if batch else ():
                    store.put_review(r)
                    for said in (*r.trail, r) if cascade and not r.pending else ():
                        store.put_answer(reviewer_of(said.source), said)
                    waiting += r.pending
                    bar.advance(1)
        return waiting == 0 or finish

    def item(self, key: int, text: tuple[str, int], reason: str, prior: list[float] | None) -> ReviewItem:
        if prior is None or reason == AUDIT:  # the audit and the first sample are asked blind
            return ReviewItem(key=key, text=text[0], row=text[1], reason=reason)
        P = np.asarray([prior])  # noqa: N806
        S = vote.decide(P, bool(self.task.allow_empty))  # noqa: N806
        voted = self.sets.text(name for j, name in enumerate(self.task.label_names) if S[0, j])
        return ReviewItem(key=key, text=text[0], row=text[1], reason=reason, vote=voted,
                          confidence=float(vote.set_probability(P, S)[0]), prior=list(prior))

    def settled(self, store: RunStore, reviews: dict[int, Any], indicators: Any) -> tuple[trust.Settled | None, set[int]]:
        """In a cascade: the rows the LLM decided, and the audit rows that measure it (`trust.Settled`)."""
        llm = self.first_reviewer()
        if llm is None:
            return None, set()
        audit = set(store.routed(AUDIT))
        decided = sorted(t for t, r in reviews.items() if r.source == reviewed(llm.kind) and t not in audit)
        min_confidence = self.task.reviewer[0].min_confidence
        said = store.answers(sorted(audit))
        rows = []
        for t in sorted(audit):
            mine, truth = said.get(t, {}).get(llm.kind), reviews.get(t)
            if mine is None or mine.label is None or truth is None or truth.label is None:
                continue
            if min_confidence is not None and (mine.confidence is None or mine.confidence < min_confidence):
                continue  # it would have sent the row on: the trusted reviewer decides such rows
            rows.append((t, mine.label, truth.label))
        ids = np.array([t for t, _, _ in rows], np.int64)
        settled = trust.Settled(indicators([truth for _, _, truth in rows]),
                                indicators([mine for _, mine, _ in rows]),
                                store.row_counts_of(ids).astype(np.float64), len(decided),
                                int(store.row_counts_of(np.array(decided, np.int64)).sum()), llm.kind)
        return settled, set(decided)

    def against(self) -> str:
        """What the estimate measures against: the reviewer's answers, taken as right."""
        if self.first_reviewer() is not None:
            return (f"the {self.task.trusted_reviewer.kind} reviewer's sets, taken as right; the rows the LLM decided "
                    "count as often right as its sets were on the audit rows a stage picked (answered by both)")
        kind = self.task.reviewer[0].kind
        if kind == "llm":
            return ("the LLM reviewer's sets, taken as right: its own mistakes are not counted (no person checked "
                    "them), so this is agreement with the LLM, not accuracy")
        return f"the {kind} reviewer's sets, taken as right"
