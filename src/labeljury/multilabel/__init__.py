"""Multi-label tasks (`multi_label: true`): a text may carry several labels, or none with `allow_empty`.

One module per role, as for single-label tasks: `specialists` (what the task file may name, built into heads),
`heads` (the estimators: one-vs-rest heads, and a per-label fit of a scorer's own score; a probability per
label), `vote` (combining them per label: max, soft, majority or Dawid-Skene; deciding a set; a row's hardness), `trust` (calibration and the estimate,
on the audit rows), `review` (the reviewers of sets and the cascade), `views` (what the specialists read),
`routing` (the first sample), `batches` (`--from`), `export` (the saved model, annotate.py), `run` (the steps,
on the same run store, budget and reviewers). Reading, checking and
scoring sets is `labeljury.labelsets`; `labeljury eval --multi-label` scores an output.
"""

from .heads import OneVsRestHead
from .run import SetAnnotator, SetPlan, plan_sets
from .trust import Calibration, Estimate

__all__ = ["Calibration", "Estimate", "OneVsRestHead", "SetAnnotator", "SetPlan", "plan_sets"]
