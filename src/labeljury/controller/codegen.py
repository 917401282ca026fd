"""Rendering the validated plan into a standalone `annotate.py` (the paper's "generate annotation code").

The script is a fixed, reviewed template (`annotate_template`) into which the plan is inserted as
one JSON string literal (`repr` of `json.dumps`): task names, label names and descriptions are data
in the script, never code. No LLM-written code is executed or even rendered. The result is checked
to compile before it is written, and written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ..errors import RunStoreError
from .annotate_template import PLAN_MARK, TEMPLATE
from .plan import Plan

SCRIPT_FILE = "annotate.py"


def render_annotate_script(plan: Plan) -> str:
    """The source of `annotate.py` for `plan`."""
    literal = repr(json.dumps(plan.model_dump(mode="json"), ensure_ascii=True, separators=(",", ":")))
    if TEMPLATE.count(PLAN_MARK) != 1:  # pragma: no cover - a broken template is a labeljury bug
        raise AssertionError("the annotate.py template must hold exactly one plan mark")
    source = TEMPLATE.replace(PLAN_MARK, literal)
    compile(source, SCRIPT_FILE, "exec")  # a template bug fails here, not in the user's hands
    return source


def write_annotate_script(run_dir: str | Path, plan: Plan) -> Path:
    """Write `run_dir/annotate.py` atomically; checkpoints are found relative to it."""
    run_dir = Path(run_dir)
    path = run_dir / SCRIPT_FILE
    source = render_annotate_script(plan)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".annotate.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(source)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except OSError as err:
        raise RunStoreError(f"cannot write {str(path)!r} ({err.strerror}); check the run directory") from None
    return path
