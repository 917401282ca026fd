"""labeljury: label text datasets cheaply and accurately.

Small specialist models vote on every row; the rows they find hard go to a reviewer (a person, an
LLM, or gold labels for evaluation) within a budget; every row gets a label, a confidence and its
provenance. See `run`.
"""

from .errors import LabeljuryError
from .evaluate import evaluate
from .pipeline import Annotator, RunReport, export, run
from .task import Task, load_task, parse_task

__all__ = ["Annotator", "LabeljuryError", "RunReport", "Task", "evaluate", "export", "load_task",
           "parse_task", "run"]
__version__ = "0.1.0"
