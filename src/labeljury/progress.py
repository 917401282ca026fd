"""Progress reporting for long steps: rich bars (rate and ETA) in the CLI, silence in the library.

Every bar has a total, so it can show an ETA; a step whose row count is unknown until it has read
everything (a CSV or JSONL input) counts bytes of the file instead (`unit="bytes"`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Protocol

Unit = Literal["rows", "bytes"]


class Bar(Protocol):
    def advance(self, n: int = 1) -> None: ...


class Progress(Protocol):
    def bar(self, description: str, total: int | None, unit: Unit = "rows") -> Iterator[Bar]: ...

    def log(self, message: str) -> None: ...


class _NullBar:
    def advance(self, n: int = 1) -> None:
        pass


class SilentProgress:
    @contextmanager
    def bar(self, description: str, total: int | None, unit: Unit = "rows") -> Iterator[Bar]:
        yield _NullBar()

    def log(self, message: str) -> None:
        pass


class RichProgress:
    """One rich progress bar per step, with count, rate, elapsed time and ETA."""

    def __init__(self, console=None):  # noqa: ANN001 - rich.console.Console
        from rich.console import Console

        self.console = console or Console(stderr=True)

    @contextmanager
    def bar(self, description: str, total: int | None, unit: Unit = "rows") -> Iterator[Bar]:
        if not self.console.is_terminal:  # a pipe or a CI log: one line per step, when it ends
            yield from self._line(description, total, unit)
            return
        from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress,
                                   TaskProgressColumn, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        class _Rate(TextColumn):
            def render(self, task):  # noqa: ANN001, ANN202
                from rich.text import Text

                speed = task.finished_speed or task.speed
                return Text("" if not speed else f"{speed:,.0f}/s", style="progress.data.speed")

        count = [DownloadColumn(), TaskProgressColumn(), TransferSpeedColumn()] if unit == "bytes" else [
            MofNCompleteColumn(), TaskProgressColumn(), _Rate("")]
        columns = [TextColumn("{task.description}"), BarColumn(), *count, TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=False) as p:
            task_id = p.add_task(description, total=total)

            class _B:
                def advance(self, n: int = 1) -> None:
                    p.advance(task_id, n)

            yield _B()

    def _line(self, description: str, total: int | None, unit: Unit) -> Iterator[Bar]:
        import time

        done = [0]
        started = time.perf_counter()

        class _Count:
            def advance(self, n: int = 1) -> None:
                done[0] += n

        yield _Count()
        seconds = time.perf_counter() - started
        count = done[0] if total is None else total
        what = f"{count / 2**20:,.1f} MiB" if unit == "bytes" else f"{count:,} {unit}"
        self.console.print(f"{description}: {what} in {seconds:.1f} s", highlight=False, soft_wrap=True)

    def log(self, message: str) -> None:
        self.console.print(message, soft_wrap=not self.console.is_terminal)
