"""The names the run store keeps and the pipeline reads back, in one place: where a row's label came
from (`annotation_source`), why a row was sent for review, and the steps a run marks done.

These strings are stored in run directories: changing one breaks resuming the runs made before it."""

from __future__ import annotations

# -- where a label came from (`annotation_source`) ----------------------------------------------------------
CONSENSUS = "consensus"  # every specialist voted and agreed
VOTE = "vote"  # they did not; the vote decided
UNREVIEWED = (CONSENSUS, VOTE)  # the two sources the calibration is fitted for
REVIEWED = "reviewed"  # reviewed:<reviewer>: that reviewer decided the row
QUEUED = "queued"  # queued:<why>: no reviewer settled it yet
SKIPPED = "skipped"  # skipped:<why>: not labeled (an empty text, no vote)
OUTWEIGHED = "vote:over"  # vote:over-<reviewer>: the reviewer's answer was weighed, and the vote decided
EARLIER = "earlier"  # earlier:<reviewer>: reviewed in an earlier run this one continues (`--from`), not again


def reviewed(reviewer: str) -> str:
    return f"{REVIEWED}:{reviewer}"


def queued(why: str) -> str:
    return f"{QUEUED}:{why}"


def skipped(why: str) -> str:
    return f"{SKIPPED}:{why}"


def outweighed(reviewer: str) -> str:
    return f"{OUTWEIGHED}-{reviewer}"


def earlier(reviewer: str) -> str:
    return f"{EARLIER}:{reviewer}"


def reviewer_of(source: str) -> str:
    """The reviewer a source names: reviewed:llm -> llm, queued:gold-label-missing -> gold."""
    kind, _, rest = source.partition(":")
    return rest if kind in (REVIEWED, EARLIER) else rest.split("-")[0]


# -- why a row is reviewed (the routing table's `why`, a review item's `reason`) ------------------------------
AUDIT = "audit"  # a random sample (known probabilities): measures; only the final refit trains on it
BOOTSTRAP = "bootstrap"  # a diverse first sample: trains the first versions
HARD = "hard"  # a stage's hardest rows
# Texts an earlier run brought (`--from`): its reviewed rows, and a uniform sample of its input that a new
# batch is compared with for drift. Never asked, never counted against the budget.
CARRIED = "carried"
REFERENCE = "reference"
WEIGHED = "weighed-earlier"  # the reason of a carried review that was a weighed reviewer's answer
# A second look: a reviewed row whose answer the out-of-sample vote contradicts with confidence is sent on
# to the next reviewer of a cascade. It is asked with the reason SECOND_LOOK; the answers table marks the
# row with the pseudo-reviewer SENT_ON while it waits there (two stored names of one event).
SECOND_LOOK = "flagged"
SENT_ON = "second-look"

# -- meta keys read back by more than one step ---------------------------------------------------------------
AUDIT_OOF = "audit_oof"  # the final refit's out-of-fold predictions on the audit rows it also trained on
AUDIT_INCLUSION = "audit_inclusion"  # each audit row's probability of being drawn (absent: a uniform draw)
AUDIT_BOUGHT = "audit_bought"  # what the audit cost and bought (`pipeline.finalize`)
FROM_RUN = "from_run"  # the run directory an earlier batch was labeled in, which this run continues
INPUT_TEXTS = "input_texts"  # the texts of this run's own input: ids below it (carried ones come after)
DRIFT = "drift"  # the new batch against what the earlier run learned from (`pipeline.carry`)

# -- steps a run marks done (`RunStore.mark_done`), in the order a run takes them ------------------------------
INGEST = "ingest"
CARRY = "carry"
ROUTE_AUDIT = "route:audit"
ROUTE_BOOTSTRAP = "route:bootstrap"
VALIDATE = "validate"
CROSS_FIT_PRIORS = "cross-fit priors"
FINAL_UPDATE = "update:final"
FINALIZE = "finalize"


def route_hard(stage: int) -> str:
    return f"route:hard:{stage}"


def update(stage: int) -> str:
    return f"update:{stage}"
