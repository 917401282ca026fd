"""Plan: `plan.json` (specialists, label maps, checkpoints, fitted vote parameters, routing) and the
standalone `annotate.py` rendered from it by a fixed template, in the run directory."""

from __future__ import annotations

import numpy as np

from ..errors import SpecialistError
from ..progress import Progress
from ..registry import Registry
from ..scoring import Scorer
from ..task import SpecialistSpec, Task


def write_plan(task: Task, registry: Registry, scorer: Scorer, progress: Progress) -> None:
    from ..controller.codegen import write_annotate_script
    from ..controller.plan import build_plan, specialist_entry
    from ..controller.plan import write_plan as write_plan_file

    # the label model's parameters (soft-vote weights, Dawid-Skene's fit on every row) come with any vote
    vote = scorer.vote(np.arange(min(1, scorer.store.n_texts)))
    info = registry.weights_source()
    run_dir = registry.run_dir
    try:
        entries = [specialist_entry(
            name, SpecialistSpec.model_validate(info[name]["spec"]), registry.models[name], run_dir=run_dir,
            checkpoint=registry.checkpoint(name, registry.versions[name]) if registry.models[name].trainable else None,
            validation_accuracy=info[name]["validation_accuracy"]) for name in vote.names]
        calibrator = (scorer.store.get_meta("trust") or {}).get("calibrator")
        plan = build_plan(task, entries, vote.result, calibrator=calibrator)
    except SpecialistError as err:
        progress.log(f"no plan.json / annotate.py for this run: {err}")
        return
    write_plan_file(run_dir, plan)
    write_annotate_script(run_dir, plan)
