"""The LLM meta-controller: it selects the specialists (`select`), checks their label maps against
reviewed labels (`label_map`, `validate`), and turns the validated choice into a saved plan and a
standalone annotation script (`plan`, `codegen`). Imported only when an LLM controls the run."""

from .codegen import render_annotate_script, write_annotate_script
from .plan import Plan, PlanSpecialist, build_plan, read_plan, specialist_entry, write_plan
from .candidates import Candidate, catalog_candidates, gather_candidates, hub_candidates, search_terms
from .label_map import LabelMapCheck, agreement, best_label_map, check_label_map
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
