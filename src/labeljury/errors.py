"""The exception hierarchy. Every error a user can cause is a `LabeljuryError` whose message is one
line that names the problem and the fix; the CLI prints it and exits non-zero, without a traceback."""

from __future__ import annotations


class LabeljuryError(Exception):
    """Base class: a problem the user can fix. `str(err)` is the one-line message shown to them."""

    exit_code: int = 2


class TaskError(LabeljuryError):
    """The task file is missing, not valid YAML, or does not describe a valid task."""


class InputError(LabeljuryError):
    """The input data cannot be read or does not fit the task (missing file, unknown column...)."""


class OutputError(LabeljuryError):
    """The output cannot be written where asked (would overwrite the input, unknown format...)."""


class SpecialistError(LabeljuryError):
    """A specialist cannot be built or loaded (unknown id, missing package, bad label map)."""


class RunStoreError(LabeljuryError):
    """The run directory cannot be used (made for another task or input, corrupt, locked)."""


class ReviewError(LabeljuryError):
    """A reviewer cannot do its job (missing gold column, malformed review file...)."""


class LLMError(LabeljuryError):
    """An LLM call failed in a way retries could not fix, or the LLM settings are wrong."""


class BudgetExceeded(LLMError):
    """The LLM budget (dollars or tokens) would be exceeded by the next call."""


class ExportError(LabeljuryError):
    """A run's model cannot be exported (nothing trained, unknown specialist, output folder in use)."""
