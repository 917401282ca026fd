"""The review desk: hands the routed rows that have no answer yet to the reviewer and stores each answer
in the run store the moment it is given, so a killed run never asks for a review twice.

It is where every row sent for review passes: the bootstrap sample and each stage's hard rows. It asks
and stores, nothing more: weighing the answers is the next step (`weighing.Weigher`, run by
`RunContext.review` after every round that asked something).
A reviewer that cannot answer a row returns it with `label=None` and a `queued:<why>` source (the
row keeps the specialists' vote); one that must wait for a person returns it `pending`, and the run
stops with status "waiting" until it is rerun.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ReviewError
from ..progress import Progress, SilentProgress
from ..sources import HARD, SECOND_LOOK, SENT_ON, queued, reviewer_of
from ..store import RunStore
from .base import Reviewer, ReviewItem, ReviewResult
from .cascade import CascadeReviewer

Opinions = Callable[[list[int]], dict[int, dict[str, Any]]]
# A reviewer whose answers are mostly unusable is misconfigured (a wrong gold column, labels that do
# not match, an unreachable server): the run stops instead of spending its budget on nothing.
UNUSABLE_SHARE = 0.5
UNUSABLE_MIN = 4
EXPECTED = ("queued:llm-budget",)  # the LLM budget ran out: by design, not a fault
# An LLM answer that failed for a passing reason is asked again on a later run (after RETRY_AFTER
# seconds): a raised budget, a server that is back. Never silently final.
TRANSIENT = ("queued:llm-budget", "queued:llm-timeout", "queued:llm-connection", "queued:llm-http-",
             "queued:llm-bad-response")
RETRY_AFTER = 30.0


@dataclass(frozen=True)
class Asked:
    """What one round of review did: how many rows were put to the reviewer (second looks included), and
    whether every row asked for has an answer that stands (a second look does not hold the run up)."""

    asked: int
    settled: bool


class ReviewDesk:
    """Asks the reviewer and stores what it says (and the vote's prior of each row asked)."""

    def __init__(self, store: RunStore, reviewer: Reviewer, progress: Progress | None = None,
                 labels: Sequence[str] = (), second_look: bool = True):
        self.store = store
        self.second_look_on = second_look
        self.reviewer = reviewer
        self.progress = progress or SilentProgress()
        self.labels = list(labels)

    def ask(self, ids: Sequence[int], why: str | Mapping[int, str], opinions: Opinions | None = None) -> Asked:
        """Ask about the rows `ids` that have no answer yet, saying why each is asked (one reason for
        all, or one a row), with what the specialists said of them (`opinions`) when given; and, in a
        cascade, send the rows whose answer was flagged on to the next reviewer (`second_looks`).
        Says how many rows it asked, and whether none of `ids` waits for an answer."""
        s = self.store
        done = self._settled(ids)
        todo = [t for t in ids if t not in done]
        again = self.second_looks()
        if not todo and not again:
            return Asked(0, True)
        reason = (lambda t: why) if isinstance(why, str) else why.__getitem__
        texts = s.texts_by_id(todo)
        said = opinions(todo) if opinions is not None else {}
        items = [ReviewItem(key=t, text=texts[t][0], row=texts[t][1], reason=reason(t), **said.get(t, {}))
                 for t in todo]
        s.put_priors({it.key: it.prior for it in items if it.prior is not None})
        pending = 0
        unusable: list[ReviewResult] = []
        whys = {why} if isinstance(why, str) and todo else {reason(t) for t in todo}
        what = ", ".join(sorted(whys | ({SECOND_LOOK} if again else set())))
        sent_on = {it.key for it in again}
        with self.progress.bar(f"review ({what}, {self.reviewer.kind})", len(items) + len(again)) as bar:
            for res in self.reviewer.review(items + again):
                if res.key in sent_on:
                    self._store_second_look(res)
                    bar.advance()
                    continue
                s.put_review(res)
                for earlier in res.trail:
                    s.put_answer(reviewer_of(earlier.source), earlier)
                if not res.pending:
                    s.put_answer(reviewer_of(res.source), res)
                pending += res.pending
                if res.label is None and not res.pending and not res.source.startswith(EXPECTED):
                    unusable.append(res)
                bar.advance()
        if len(unusable) >= UNUSABLE_MIN and len(unusable) > UNUSABLE_SHARE * len(items):
            raise ReviewError(_unusable_message(self.reviewer.kind, unusable, len(items)))
        return Asked(len(items) + len(again), pending == 0)

    def blind_reviewers(self, weighed: frozenset[str]) -> list[Reviewer]:
        """The reviewers that answer audit rows blind (`ask_blind`): in a cascade whose last reviewer is
        trusted (obeyed, not weighed), each earlier one whose answers are weighed."""
        if not isinstance(self.reviewer, CascadeReviewer) or self.reviewer.last.kind in weighed:
            return []
        return [r for r, _ in self.reviewer.reviewers[:-1] if r.kind in weighed]

    def ask_blind(self, ids: Sequence[int], weighed: frozenset[str], opinions: Opinions | None = None) -> int:
        """Ask each blind reviewer (`blind_reviewers`) about audit rows `ids`, as it is asked about a hard
        row (the specialists' votes in context) and without the trusted reviewer's answer: its answers
        measure its confusion matrix (`weighing`) and how often the rows it decides are right (`trust`).
        They are kept as its answers only: an audit row's label stays the trusted reviewer's. A row it
        answered before is not asked again. Returns how many rows were asked."""
        reviewers = self.blind_reviewers(weighed)
        if not reviewers or not ids:
            return 0
        s = self.store
        said = s.answers(ids)
        asked = 0
        for r in reviewers:
            todo = [t for t in ids if r.kind not in said.get(t, {})]
            if not todo:
                continue
            texts = s.texts_by_id(todo)
            opinion = opinions(todo) if opinions is not None else {}
            items = [ReviewItem(key=t, text=texts[t][0], row=texts[t][1], reason=HARD, **opinion.get(t, {}))
                     for t in todo]
            s.put_priors({it.key: it.prior for it in items if it.prior is not None})
            with self.progress.bar(f"review (audit, answered blind by {r.kind} to measure it)", len(items)) as bar:
                for res in r.review(items):
                    if res.label is not None and not res.pending:  # a failed answer is asked again next time
                        s.put_answer(r.kind, res)
                    bar.advance()
            asked += len(items)
        return asked

    def second_look(self) -> Asked:
        """Send the rows flagged since the last ask to the next reviewer (at the end of a run)."""
        return self.ask([], SECOND_LOOK)

    def second_looks(self) -> list[ReviewItem]:
        """In a cascade, the rows an earlier reviewer decided whose answer was flagged as doubtful
        (`weighing`), or that were sent on before and are still waiting, that no later reviewer
        has answered: each as a ReviewItem with reason "flagged" and the earlier answer as `previous`."""
        if not self.second_look_on or not isinstance(self.reviewer, CascadeReviewer) or len(self.reviewer.reviewers) < 2:
            return []
        kinds = self.reviewer.kinds
        earlier = kinds[:-1]
        s = self.store
        flagged = s.flagged_ids()
        # only the flagged rows, and those sent on before, can need a second look
        candidates = sorted(flagged | s.answered_by(SENT_ON))
        answers = s.answers(candidates)
        out: list[ReviewResult] = []
        for t, r in sorted(s.reviews(candidates).items()):
            who = reviewer_of(r.source)
            if r.label is None or who not in earlier:
                continue
            said = answers.get(t, {})
            if not (t in flagged or SENT_ON in said):
                continue
            later = kinds[kinds.index(who) + 1:]
            if any(k in said for k in later):  # a later reviewer tried (and could not answer either)
                continue
            out.append(r)
        if not out:
            return []
        texts = s.texts_by_id([r.key for r in out])
        priors = s.priors([r.key for r in out])
        items = []
        for r in out:
            p = priors.get(r.key)
            best = None if p is None else max(range(len(p)), key=p.__getitem__)
            vote = None if best is None or best >= len(self.labels) else self.labels[best]
            items.append(ReviewItem(key=r.key, text=texts[r.key][0], row=texts[r.key][1], reason=SECOND_LOOK,
                                    vote=vote, confidence=None if vote is None else float(p[best]),  # type: ignore[index]
                                    prior=p, previous=r))
        return items

    def _store_second_look(self, res: ReviewResult) -> None:
        """A later reviewer's answer to a flagged row decides it; while it waits (or when it fails),
        the earlier answer stands, and the row is marked as sent on so that it stays in that queue."""
        s = self.store
        s.put_answer(SENT_ON, ReviewResult(res.key, None, queued(SECOND_LOOK)))
        if res.pending:
            return
        if res.label is not None:
            s.put_review(replace(res, trail=()))
        s.put_answer(reviewer_of(res.source), res)

    def _settled(self, ids: Sequence[int]) -> set[int]:
        """Those of rows `ids` with a review that stands: answered, or failed for a reason that will
        not pass (read for these rows only: a stage's, not every review of the run)."""
        now = time.time()
        return {t for t, (label, source, at) in self.store.answered(ids).items()
                if label is not None or not (source.startswith(TRANSIENT) and now - at >= RETRY_AFTER)}

    def pending(self) -> int:
        return self.store.count_reviews(pending=True)


def _unusable_message(kind: str, unusable: list[ReviewResult], asked: int) -> str:
    """One line naming every cause (most frequent first) with its count, an example and the fix: a column
    with empty values *and* values that are not labels must not be blamed on the empty ones alone."""
    hints = {"queued:gold-label-unknown": "the gold column's values must be the task's labels; check "
                                          "reviewer.column and the label names",
             "queued:gold-label-missing": "the gold column is empty for these rows; check reviewer.column"}
    causes = Counter(r.source for r in unusable).most_common()
    parts, fixes = [], []
    for why, n in causes[:3]:
        example = next((r.reason for r in unusable if r.source == why and r.reason), None)
        parts.append(f"{n} {why}{': ' + example if example else ''}")
        fix = hints.get(why, "check the reviewer's settings (and that its server is reachable), then rerun")
        if fix not in fixes:
            fixes.append(fix)
    more = f", and {len(causes) - 3} other causes" if len(causes) > 3 else ""
    return (f"{len(unusable)} of {asked} {kind} reviews came back without a label ({'; '.join(parts)}{more}); "
            + "; ".join(fixes))
