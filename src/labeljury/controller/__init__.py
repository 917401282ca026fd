"""The LLM meta-controller: it selects the specialists (`select`), checks their label maps against
reviewed labels (`label_map`, `validate`), and turns the validated choice into a saved plan and a
standalone annotation script (`plan`, `codegen`). Every run checks label maps and writes its plan here;
only `select` (with `candidates`) asks an LLM, and only when the task has an `llm:` section and
`specialists: auto`."""

from .candidates import Candidate, catalog_candidates, gather_candidates, hub_candidates, search_terms
from .codegen import render_annotate_script, write_annotate_script
from .label_map import LabelMapCheck, agreement, best_label_map, check_label_map
from .plan import Plan, PlanSpecialist, build_plan, read_plan, specialist_entry, write_plan
from .select import SelectionResult, estimate_selection_cost, select, select_specialists
from .validate import recheck_label_map

__all__ = [
    "Candidate",
    "Plan",
    "PlanSpecialist",
    "build_plan",
    "read_plan",
    "render_annotate_script",
    "specialist_entry",
    "write_annotate_script",
    "write_plan",
    "LabelMapCheck",
    "SelectionResult",
    "agreement",
    "best_label_map",
    "catalog_candidates",
    "check_label_map",
    "estimate_selection_cost",
    "gather_candidates",
    "hub_candidates",
    "recheck_label_map",
    "search_terms",
    "select",
    "select_specialists",
]
