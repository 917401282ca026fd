"""Progress reporting for long steps: rich bars (rate and ETA) in the CLI, silence in the library."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol


class Bar(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Progress(Protocol):
    def bar(self, description: str, total: int | None) -> Iterator[Bar]: ...

    def log(self, message: str) -> None: ...


class _NullBar:
    def advance(self, n: int = 1) -> None:
        pass


class SilentProgress:
    @contextmanager
    def bar(self, description: str, total: int | None) -> Iterator[Bar]:
        yield _NullBar()

    def log(self, message: str) -> None:
        pass


class RichProgress:
    """One rich progress bar per step, with count, rate, elapsed time and ETA."""

    def __init__(self, console=None):  # noqa: ANN001 - rich.console.Console
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextmanager
    def bar(self, description: str, total: int | None) -> Iterator[Bar]:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                                   TextColumn, TimeElapsedColumn, TimeRemainingColumn)

        class _Rate(TextColumn):
            def render(self, task):  # noqa: ANN001, ANN202
                from rich.text import Text

                speed = task.finished_speed or task.speed
                return Text("" if not speed else f"{speed:,.0f}/s", style="progress.data.speed")

        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TaskProgressColumn(), _Rate(""), TimeElapsedColumn(), TextColumn("eta"),
                   TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=False) as p:
            task_id = p.add_task(description, total=total)

            class _B:
                def advance(self, n: int = 1) -> None:
                    p.advance(task_id, n)

            yield _B()

    def log(self, message: str) -> None:
        self.console.print(message)
