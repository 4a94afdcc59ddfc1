"""miss-screen command line: screen a case, inspect and test the rules, print the schemas.

Thin by design: parse options, call engine, pick a renderer, map errors to exit codes
(0 screened, 1 --fail-on met or a golden case failed, 2 bad input, rules, usage or internal error).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

# SIGTERM (`timeout`, a scheduler) and SIGHUP (a closed terminal) end a command as Ctrl-C does
OTHER_INTERRUPTS = (signal.SIGTERM, signal.SIGHUP)
_PREVIOUS = {s: signal.getsignal(s) for s in (signal.SIGINT, *OTHER_INTERRUPTS)}


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP while a command runs: unwinds like Ctrl-C, so every cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.exit_code = 128 + signum  # as a shell reports a process that signal ended


def _interrupted_while_starting(signum: int, frame: object) -> None:
    """Ctrl-C before the command runs: nothing to clean up, so no traceback, only a line."""
    sys.stderr.write("error: interrupted\n")
    os._exit(128 + signum)


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def _on_interrupt(handler: signal.Handlers | object) -> None:
    """Set the SIGINT handler, and SIGTERM's and SIGHUP's alike (only the main thread may;
    elsewhere Python's stay). While a command runs (Python's default_int_handler for SIGINT),
    SIGTERM and SIGHUP raise Interrupted. A signal ignored from the start (nohup) stays so."""
    other = _raise_interrupted if handler is signal.default_int_handler else handler
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, handler)  # type: ignore[arg-type]  # a handler or a constant
        for signum in OTHER_INTERRUPTS:
            if _PREVIOUS[signum] is not signal.SIG_IGN:
                signal.signal(signum, other)  # type: ignore[arg-type]  # a handler or a constant


# Run as the program (not imported by tests or other code), Ctrl-C never shows a traceback:
# before the heavy imports below (typer, rich, pydantic, the rules) it ends the process with one
# line; while a command runs it is KeyboardInterrupt, which handle_errors turns into that line;
# once the command is done it is ignored, so the exit code is the command's.
PROGRAM = os.path.basename(sys.argv[0]) in ("miss-screen", "cli.py")
_on_interrupt(_interrupted_while_starting)

import errno
import functools
import json
import re
import traceback
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine import __version__
from engine.errors import UsageError, UserError
from engine.goldens import screen_goldens
from engine.io.cases import parse_set_options, read_case, read_site, read_text, validate_case
from engine.models import CITATION_WORDS, Case, Result, Scalar, Verdict, evidence_label
from engine.policy import verdict_rank
from engine.report.text import brief_line, render_text, source_text
from engine.rules.bundled import bundled_rules_dir
from engine.rules.condition import to_text
from engine.rules.loader import load_ruleset
from engine.screener import Screener

if TYPE_CHECKING:
    from engine.batch.summary import BatchSummary
    from engine.batch.worker import OutputFormat

DEFAULT_RULES_DIR = Path(os.environ.get("MISS_SCREEN_RULES") or bundled_rules_dir())

app = typer.Typer(
    name="miss-screen",
    help="Screen whether minimally invasive spine surgery (MISS) is worth discussing. "
    "A screening aid for a conversation, never an order to operate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
rules_app = typer.Typer(help="List, show, check and test the rules.", no_args_is_help=True)
schema_app = typer.Typer(
    help="Print the JSON Schema of a case or of a result.", no_args_is_help=True
)
app.add_typer(rules_app, name="rules")
app.add_typer(schema_app, name="schema")

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


class ScreenFormat(StrEnum):
    text = "text"
    json = "json"
    brief = "brief"


class ListFormat(StrEnum):
    text = "text"
    json = "json"


class Engine(StrEnum):
    durable = "durable"
    reference = "reference"


# what a full disk, a read-only folder or a folder in place of a file raise: never our bug
USER_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.EISDIR,
        errno.ENOTDIR,
    }
)
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.\d+\.tmp")  # writers' temp files: .NAME.PID.tmp


def os_error_line(exc: OSError) -> str:
    """One line for an OSError the user can fix, naming the file (not its temp name)."""
    name = exc.filename2 if exc.errno == errno.EISDIR and exc.filename2 else exc.filename
    where = ""
    if name is not None:
        path = Path(os.fsdecode(name))
        temp = _TEMP_NAME.fullmatch(path.name)
        where = f"{path.with_name(temp['name']) if temp else path}: "
    return f"{where}{exc.strerror or exc}; nothing was written under that name"


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """User errors become one-line messages and exit 2; anything else is our bug (also exit 2)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if PROGRAM:
            _on_interrupt(signal.default_int_handler)
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except UserError as exc:
            lines = exc.lines() if hasattr(exc, "lines") else [str(exc)]
            for line in lines:
                print(f"error: {line}", file=sys.stderr)
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in USER_ERRNOS:
                print("internal error, please report:", file=sys.stderr)
                traceback.print_exc()
                raise typer.Exit(2) from None
            print(f"error: {os_error_line(exc)}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or Interrupted: SIGTERM, SIGHUP
            print("error: interrupted", file=sys.stderr)
            raise typer.Exit(getattr(exc, "exit_code", 130)) from None
        except Exception:
            print("internal error, please report:", file=sys.stderr)
            traceback.print_exc()
            raise typer.Exit(2) from None
        finally:
            if PROGRAM:
                _on_interrupt(signal.SIG_IGN)

    return wrapper


RulesOption = Annotated[Path, typer.Option("--rules", help="Rules directory.", show_default=False)]


@app.command()
@handle_errors
def screen(
    case_files: Annotated[
        list[str] | None,
        typer.Argument(help="Case files (YAML or JSON), or - for stdin.", show_default=False),
    ] = None,
    set_values: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="FIELD=VALUE; repeat for a quick case without a file.", show_default=False
        ),
    ] = None,
    output_format: Annotated[
        ScreenFormat,
        typer.Option("--format", help="text report, json result, or one brief line per case."),
    ] = ScreenFormat.text,
    rules: RulesOption = DEFAULT_RULES_DIR,
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="Site profile (YAML of setting fields) for values the case lacks.",
            show_default=False,
        ),
    ] = None,
    fail_on: Annotated[
        Verdict | None,
        typer.Option(
            "--fail-on", help="Exit 1 when a verdict is this one or higher.", show_default=False
        ),
    ] = None,
    engine: Annotated[
        Engine, typer.Option("--engine", help="Evaluator (reference is the test oracle).")
    ] = Engine.durable,
    fhir: Annotated[
        str | None,
        typer.Option(
            "--fhir",
            help="A FHIR R4 Bundle (collection, searchset or transaction; JSON), or - for stdin.",
            show_default=False,
        ),
    ] = None,
    reference_date: Annotated[
        str | None,
        typer.Option(
            "--reference-date",
            help="With --fhir: the date ages and observations are taken at (YYYY-MM-DD; today).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Screen a case and print its verdict with every finding and its source."""
    if fhir is not None:
        screen_fhir(
            fhir,
            case_files or [],
            set_values or [],
            output_format,
            rules,
            site,
            fail_on,
            engine,
            reference_date,
        )
        return
    if reference_date is not None:
        raise UsageError("--reference-date applies to --fhir input only")
    files = case_files or []
    if not files and not set_values:
        raise UsageError("give a case file, - for stdin, or --set FIELD=VALUE")
    if set_values and len(files) > 1:
        raise UsageError("--set applies to one case; give at most one case file with it")
    screener = Screener.load(rules, engine, site)
    results = []
    inputs: list[str | None] = list(files) or [None]
    for case_file in inputs:
        case_id, values, source = read_screen_case(case_file, set_values or [])
        results.append(screener.screening(case_id, values, source=source).result)
    for index, result in enumerate(results):
        if output_format is ScreenFormat.text and index:
            stdout.rule()
        print_result(result, output_format, compact=len(results) > 1)
    if fail_on is not None and any(
        verdict_rank(r.verdict) <= verdict_rank(fail_on) for r in results
    ):
        raise typer.Exit(1)


def screen_fhir(
    path: str,
    files: list[str],
    set_values: list[str],
    output_format: ScreenFormat,
    rules: Path,
    site: str | None,
    fail_on: Verdict | None,
    engine: Engine,
    reference_date: str | None,
) -> None:
    """screen --fhir: map a Bundle to one case (--set overrides), screen it, say where values
    came from. Warnings go to stderr; they name resource types and codes, never content."""
    import datetime as dt

    if files:
        raise UsageError("--fhir screens one Bundle; give no case files with it")
    try:
        from engine.fhir import fhir_to_case, read_bundle
    except ImportError:
        raise UsageError("--fhir needs the fhir extra: pip install 'miss-screen[fhir]'") from None
    try:
        when = dt.date.fromisoformat(reference_date) if reference_date else dt.date.today()
    except ValueError:
        raise UsageError("--reference-date expects a date as YYYY-MM-DD") from None
    source = "<stdin>" if path == "-" else path
    mapped = fhir_to_case(read_bundle(read_text(path, "FHIR"), source), when)
    raw: dict[str, object] = dict(mapped.case)
    provenance = {name: str(src) for name, src in mapped.provenance.items()}
    if set_values:
        overrides = parse_set_options(set_values)
        if overrides["case_id"] == "cli-case":
            del overrides["case_id"]
        raw.update(overrides)
        provenance.update({name: "--set" for name in overrides})
    case_id, values = validate_case(raw, f"{source} (FHIR)" + (" with --set" if set_values else ""))
    screener = Screener.load(rules, engine, site)
    result = screener.screening(case_id, values, source=source).result
    for warning in mapped.warnings:
        print(f"warning: {source}: {warning}", file=sys.stderr)
    print_result(result, output_format)
    if output_format is ScreenFormat.text:
        print_provenance(provenance)
    if fail_on is not None and verdict_rank(result.verdict) <= verdict_rank(fail_on):
        raise typer.Exit(1)


def print_provenance(provenance: dict[str, str]) -> None:
    """Where each value of a FHIR-mapped case came from: one line per field."""
    stdout.rule("Where the values came from (FHIR)")
    width = max(map(len, provenance), default=0)
    for name, src in provenance.items():
        stdout.print(f"  {name:<{width}}  {escape(src)}")


def read_screen_case(
    case_file: str | None, set_values: list[str]
) -> tuple[str, dict[str, Scalar], str]:
    """A case from a file, stdin or --set pairs; --set values override the file's."""
    if case_file is None:
        case_id, values = validate_case(parse_set_options(set_values), "--set")
        return case_id, values, "--set"
    source = "<stdin>" if case_file == "-" else case_file
    case_id, values = read_case(case_file)
    if set_values:
        overrides = parse_set_options(set_values)
        if overrides["case_id"] == "cli-case":
            overrides["case_id"] = case_id
        case_id, values = validate_case({**values, **overrides}, f"{source} with --set")
    return case_id, values, source


def print_result(result: Result, output_format: ScreenFormat, *, compact: bool = False) -> None:
    """Write one result; several JSON results are written one per line (JSON Lines)."""
    if output_format is ScreenFormat.json:
        sys.stdout.write(result.model_dump_json(indent=None if compact else 2) + "\n")
    elif output_format is ScreenFormat.brief:
        sys.stdout.write(brief_line(result) + "\n")
    else:
        render_text(result, stdout)


class BatchFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


class InputFormatOption(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"


class DetailOption(StrEnum):
    ids = "ids"
    full = "full"


class ProgressMode(StrEnum):
    auto = "auto"
    bar = "bar"
    none = "none"


class Executor(StrEnum):
    local = "local"
    dask = "dask"


@app.command()
@handle_errors
def batch(
    inputs: Annotated[
        list[str],
        typer.Argument(help="Cohort files (CSV, JSONL, Parquet), or - for JSONL on stdin."),
    ],
    out: Annotated[str, typer.Option("--out", help="Output file, or - for stdout.")],
    output_format: Annotated[
        BatchFormat | None,
        typer.Option(
            "--format",
            help="jsonl (full results), csv or parquet (flattened); default from --out.",
            show_default=False,
        ),
    ] = None,
    summary: Annotated[
        str | None,
        typer.Option("--summary", help="Write the summary JSON here.", show_default=False),
    ] = None,
    report: Annotated[
        str | None, typer.Option("--report", help="Write the HTML report here.", show_default=False)
    ] = None,
    errors: Annotated[
        str | None,
        typer.Option(
            "--errors",
            help="Errors JSONL (default: OUT.errors.jsonl; stderr when OUT is -).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help="Worker processes (default: CPU count).", show_default=False
        ),
    ] = None,
    rules: RulesOption = DEFAULT_RULES_DIR,
    progress: Annotated[
        ProgressMode, typer.Option("--progress", help="Progress bar on stderr.")
    ] = ProgressMode.auto,
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="Site profile (YAML of setting fields) for rows that lack them.",
            show_default=False,
        ),
    ] = None,
    input_format: Annotated[
        InputFormatOption | None,
        typer.Option(
            "--input-format",
            help="Override the format taken from the extension.",
            show_default=False,
        ),
    ] = None,
    allow_column: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-column",
            help="A column the identifier guard flags wrongly; repeatable.",
            show_default=False,
        ),
    ] = None,
    ignore_unknown_columns: Annotated[
        bool,
        typer.Option(
            "--ignore-unknown-columns", help="Skip columns the data dictionary does not know."
        ),
    ] = False,
    executor: Annotated[
        Executor,
        typer.Option(
            "--executor", help="local processes, or dask (pip install 'miss-screen[dask]')."
        ),
    ] = Executor.local,
    detail: Annotated[
        DetailOption | None,
        typer.Option(
            "--detail",
            help="JSONL: ids (rule ids, questions; rule texts once in OUT.rules.json) "
            "or full (the whole result per line). Default: ids.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Screen a cohort: every row screened or rejected with a reason, outputs in input order."""
    if executor is Executor.local and (workers or os.cpu_count() or 1) > 1:
        from engine.batch.startup import start_fork_server

        start_fork_server(str(rules))  # its workers' imports and rules, while this one starts
    from engine.batch.run import (  # heavy: pyarrow
        BatchOptions,
        default_errors_path,
        estimate_total_rows,
        rules_sidecar_path,
        run_batch,
    )
    from engine.batch.worker import Detail, OutputFormat
    from engine.io.tables import InputFormat

    fmt = OutputFormat(output_format.value) if output_format else output_format_for(out)
    if out == "-" and fmt is OutputFormat.parquet:
        raise UsageError("Parquet cannot go to stdout; give --out FILE.parquet")
    if detail is DetailOption.full and fmt is not OutputFormat.jsonl:
        raise UsageError("--detail full applies to JSONL output; CSV and Parquet rows are flat")
    detail_level = Detail(detail.value) if detail else Detail.ids
    rules_path = rules_sidecar_path(out, fmt, detail_level)
    if errors == "-":  # stderr, as with --out -
        errors_path = None
    else:
        errors_path = errors if errors is not None else default_errors_path(out)
    errors_option = "--errors" if errors is not None else "--errors (default OUT.errors.jsonl)"
    check_outputs(
        inputs,
        {
            "--out": out,
            errors_option: errors_path,
            "--summary": summary,
            "--report": report,
            "--detail ids (OUT.rules.json)": rules_path,
        },
    )
    ruleset = load_ruleset(rules)
    options = BatchOptions(
        inputs=inputs,
        out=out,
        output_format=fmt,
        rules_dir=str(rules),
        errors=errors_path,
        workers=workers or os.cpu_count() or 1,
        site=read_site(site) if site else {},
        input_format=InputFormat(input_format.value) if input_format else None,
        allow_columns=frozenset(allow_column or []),
        ignore_unknown_columns=ignore_unknown_columns,
        executor=executor.value,
        summary=summary,
        report=report,
        detail=detail_level,
    )
    progress_style = (
        "none"
        if progress is ProgressMode.none
        else "bar"
        if sys.stderr.isatty()
        else "lines"  # a log or a notebook cell: plain lines, never a bar's blank line
    )
    render = render_batch_report if report else None
    if executor is Executor.dask:
        from engine.batch.dask_executor import run_batch_dask  # optional extra

        result = run_batch_dask(options, ruleset, render)
    else:
        total = estimate_total_rows(options) if progress_style != "none" else None
        with batch_progress(progress_style, total) as advance:
            result = run_batch(options, ruleset, advance, render)
    rec = result.reconciliation
    balanced = "balanced" if rec.balanced else "NOT BALANCED"
    stderr.print(
        f"rows read {rec.rows_read} = screened {rec.rows_screened} + rejected {rec.rows_rejected} "
        f"({balanced}); verdicts: "
        + ", ".join(f"{v.value} {n}" for v, n in result.verdicts.items())
    )
    if result.stamp.worker_restarts:
        stderr.print(
            f"warning: a worker process died; its chunks were screened again "
            f"({result.stamp.worker_restarts} worker restarts, nothing lost)"
        )
    if result.duplicates:
        stderr.print(
            f"warning: {len(result.duplicates)} case_ids occur more than once (see the summary)"
        )
    if not rec.balanced:
        raise RuntimeError("reconciliation does not balance: rows were lost")


def check_outputs(inputs: list[str], outputs: dict[str, str | None]) -> None:
    """Before any work, refuse outputs that would overwrite an input or one another (symlinks
    and hard links seen through), that are folders, devices or pipes, or that go to a folder
    that does not exist.

    `outputs`: option name -> path (None: not written; "-": a standard stream).
    """
    sources = {_file_identity(Path(i)): i for i in inputs if i != "-"}
    seen: dict[tuple[object, ...], str] = {}
    for option, output in outputs.items():
        if output is None or output == "-":
            continue
        target = Path(output).resolve()
        if target.is_dir():
            raise UsageError(f"{option} {output} is a folder; give a file name")
        if not target.parent.is_dir():
            raise UsageError(f"{option} {output}: the folder {target.parent} does not exist")
        if target.exists() and not target.is_file():  # a device, a pipe: never replaced
            raise UsageError(f"{option} {output} is not a regular file; give a file name")
        identity = _file_identity(target)
        if identity in sources:
            raise UsageError(
                f"{option} {output} is also an input; write the output to another file"
            )
        if identity in seen:
            raise UsageError(
                f"{seen[identity]} and {option} are the same file ({output}); "
                "give each output its own path"
            )
        seen[identity] = option


def _file_identity(path: Path) -> tuple[object, ...]:
    """What makes two paths one file: device and inode if it exists, else the resolved path."""
    try:
        info = path.stat()
    except OSError:
        return ("path", str(path.resolve()))
    return ("inode", info.st_dev, info.st_ino)


def render_batch_report(summary: BatchSummary) -> str:
    from engine.report.html import render_html

    return render_html(summary)


def output_format_for(out: str) -> OutputFormat:
    from engine.batch.worker import OutputFormat

    suffix = Path(out).suffix.lower().lstrip(".")
    if out == "-" or suffix in ("jsonl", "ndjson", "json"):
        return OutputFormat.jsonl
    if suffix in ("csv", "parquet"):
        return OutputFormat(suffix)
    raise UsageError(f"cannot tell the output format of {out}; use --format jsonl|csv|parquet")


PROGRESS_INTERVAL_ENV = "MISS_SCREEN_PROGRESS_INTERVAL"  # seconds between plain lines (10)


@contextlib.contextmanager
def batch_progress(
    style: str, total: tuple[int, bool] | None = None
) -> Iterator[Callable[[int], None] | None]:
    """Progress on stderr: a rich bar on a terminal, periodic plain lines otherwise, or nothing.

    `total`: the rows expected and whether that is exact (Parquet metadata) or an estimate
    (CSV and JSONL by bytes); with it the bar and the lines show a share and the time left.
    """
    if style == "none":
        yield None
        return
    if style == "lines":
        yield progress_lines(total, float(os.environ.get(PROGRESS_INTERVAL_ENV) or 10))
        return
    # imported here: `screen`, the command timed cold, never shows a bar
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    label = "screening" if total is None or total[1] else "screening (total estimated)"
    columns = [SpinnerColumn(), TextColumn(label), MofNCompleteColumn(), TimeElapsedColumn()]
    if total is not None:
        columns[2:2] = [BarColumn()]
        columns.append(TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True) as bar:
        expected = total[0] if total else None
        task = bar.add_task("rows", total=expected)
        done = 0

        def advance(rows: int) -> None:
            nonlocal done
            done += rows
            if expected is not None and done > expected:  # an estimate ran short
                bar.update(task, total=done)
            bar.advance(task, rows)

        yield advance


def progress_lines(total: tuple[int, bool] | None, interval_s: float) -> Callable[[int], None]:
    """A progress callback writing one plain line to stderr at most every `interval_s`:
    rows done, of how many (~ when estimated), the share, elapsed and time left."""
    import time

    started = last = time.monotonic()
    done = 0

    def advance(rows: int) -> None:
        nonlocal done, last
        done += rows
        now = time.monotonic()
        if now - last < interval_s:
            return
        last = now
        elapsed = now - started
        line = f"screening: {done} rows"
        if total is not None:
            expected = max(total[0], done)
            share = done / expected if expected else 1.0
            line += f" of {'' if total[1] else '~'}{expected} ({share:.0%})"
            if 0 < share < 1:
                line += (
                    f", {elapsed:.0f} s elapsed, about {elapsed * (1 - share) / share:.0f} s left"
                )
            else:
                line += f", {elapsed:.0f} s elapsed"
        else:
            line += f", {elapsed:.0f} s elapsed"
        print(line, file=sys.stderr, flush=True)

    return advance


@app.command()
@handle_errors
def synth(
    rows: Annotated[int, typer.Argument(min=1, help="Number of cases.")],
    out: Annotated[str, typer.Option("--out", help="File to write (.csv, .jsonl or .parquet).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same cohort.")] = 0,
    missing: Annotated[
        float, typer.Option("--missing", min=0, max=1, help="Share of values blanked.")
    ] = 0.05,
    corrupt: Annotated[
        float, typer.Option("--corrupt", min=0, max=1, help="Share of rows with one corrupt value.")
    ] = 0.01,
) -> None:
    """Write a synthetic, consistent anonymised cohort for tests, demos and benchmarks."""
    from engine.synth import cohort_format, write_cohort

    cohort_format(Path(out))  # an unknown extension is refused before any work
    check_outputs([], {"--out": out})
    written = write_cohort(Path(out), rows, seed, missing=missing, corrupt=corrupt)
    stderr.print(f"wrote {written} synthetic cases to {out}")


@rules_app.command("list")
@handle_errors
def rules_list(
    rules: RulesOption = DEFAULT_RULES_DIR,
    output_format: Annotated[
        ListFormat, typer.Option("--format", help="Output format.")
    ] = ListFormat.text,
) -> None:
    """List every rule with its category, severity and message."""
    ruleset = load_ruleset(rules)
    if output_format is ListFormat.json:
        rows = [
            {
                "id": r.id,
                "name": r.meta.name,
                "version": r.meta.version,
                "category": r.meta.category.value,
                "severity": r.meta.severity.value,
                "provisional": r.meta.provisional,
                "evidence": r.meta.evidence.value,
                "scope": to_text(r.scope) if r.scope else None,
                "when": to_text(r.when),
                "message": r.meta.message,
            }
            for r in ruleset.rules
        ]
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return
    table = Table(title=f"{ruleset.name} {ruleset.version}: {len(ruleset.rules)} rules")
    for column in ("id", "category", "severity", "name"):
        table.add_column(column)
    for r in ruleset.rules:
        name = r.meta.name + (" (provisional)" if r.meta.provisional else "")
        table.add_row(r.id, r.meta.category.value, r.meta.severity.value, name)
    stdout.print(table)


@rules_app.command("show")
@handle_errors
def rules_show(
    rule_id: Annotated[str, typer.Argument(help="Rule id, e.g. ACC-007.")],
    rules: RulesOption = DEFAULT_RULES_DIR,
) -> None:
    """Show one rule: condition, message, rationale and sources."""
    ruleset = load_ruleset(rules)
    rule = ruleset.by_id.get(rule_id.upper()) or next(
        (r for r in ruleset.rules if rule_id.upper() in (a.upper() for a in r.meta.aliases)), None
    )
    if rule is None:
        raise UsageError(f"no rule with id {rule_id}; see 'miss-screen rules list'")
    meta = rule.meta
    stdout.print(f"[bold]{meta.id} {meta.name}[/bold] v{meta.version} ({rule.path})")
    stdout.print(
        f"category: {meta.category.value}   severity: {meta.severity.value}   "
        f"evidence: {meta.evidence.value}   provisional: {'yes' if meta.provisional else 'no'}"
    )
    stdout.print(
        f"level of evidence: {escape(evidence_label(meta.sources))}   "
        f"citation: {CITATION_WORDS[meta.evidence.value]}"
    )
    if rule.scope:
        stdout.print(f"scope: {escape(to_text(rule.scope))}")
    stdout.print(f"when: {escape(to_text(rule.when))}")
    stdout.print(f"message: {escape(meta.message)}")
    stdout.print(f"rationale: {escape(' '.join(meta.rationale.split()))}")
    for source in meta.sources:
        label = evidence_label([source])
        stdout.print(f"source: {escape(source_text(source))} \\[{escape(label)}]")
    if meta.notes:
        stdout.print(f"notes: {escape(' '.join(meta.notes.split()))}")


@rules_app.command("check")
@handle_errors
def rules_check(
    directory: Annotated[
        Path, typer.Argument(help="Rules directory.", show_default=False)
    ] = DEFAULT_RULES_DIR,
) -> None:
    """Load and check every rule file; report each problem as file:line."""
    ruleset = load_ruleset(directory)
    Screener.from_ruleset(ruleset)  # compiles every rule and checks durable-rules' limits
    goldens = screen_goldens({"reference": Screener.from_ruleset(ruleset, "reference")})
    invalid = [g for g in goldens if g.actual == "invalid case"]
    for bad in invalid:
        for detail in bad.details:
            print(
                f"error: {bad.golden.path}: golden case {bad.golden.name}: {detail}",
                file=sys.stderr,
            )
    if invalid:
        raise typer.Exit(2)
    stdout.print(
        f"{ruleset.name} {ruleset.version}: {len(ruleset.rules)} rules, "
        f"{len(ruleset.derived)} derived attributes, {len(ruleset.constraints)} constraints "
        f"OK (sha256 {ruleset.sha256[:12]})"
    )


@rules_app.command("test")
@handle_errors
def rules_test(
    directory: Annotated[
        Path, typer.Argument(help="Rules directory.", show_default=False)
    ] = DEFAULT_RULES_DIR,
    output_format: Annotated[
        ListFormat, typer.Option("--format", help="Output format.")
    ] = ListFormat.text,
) -> None:
    """Run every golden case on both evaluators; exit 1 on any mismatch."""
    ruleset = load_ruleset(directory)
    results = screen_goldens(
        {engine: Screener.from_ruleset(ruleset, engine) for engine in ("durable", "reference")}
    )
    failed = [r for r in results if not r.ok]
    if output_format is ListFormat.json:
        rows = [
            {
                "rule_id": r.golden.rule_id,
                "kind": r.golden.kind,
                "name": r.golden.name,
                "backend": r.backend,
                "ok": r.ok,
                "expected": r.expected,
                "actual": r.actual,
                "details": r.details,
            }
            for r in results
        ]
        sys.stdout.write(
            json.dumps(
                {"passed": len(results) - len(failed), "failed": len(failed), "results": rows},
                indent=2,
            )
            + "\n"
        )
    else:
        for r in results:
            if not r.ok:
                stdout.print(
                    f"[red]FAIL[/red] {r.golden.rule_id}::{r.golden.name} \\[{r.backend}] "
                    f"expected {escape(r.expected)}, got {escape(r.actual)}"
                )
                for detail in r.details:
                    stdout.print(f"     {escape(detail)}")
        stdout.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


@rules_app.command("docs")
@handle_errors
def rules_docs(
    out: Annotated[Path, typer.Option("--out", help="Folder for the generated pages.")] = Path(
        "docs/rules"
    ),
    rules: RulesOption = DEFAULT_RULES_DIR,
) -> None:
    """Write one Markdown page per rule and an index, generated from the rule files."""
    from engine.report.docs import write_docs

    ruleset = load_ruleset(rules)
    written = write_docs(ruleset, out, Path(rules).resolve().parent)
    stderr.print(f"wrote {len(written)} pages to {out}")


@schema_app.command("case")
@handle_errors
def schema_case() -> None:
    """Print the JSON Schema of a case file."""
    sys.stdout.write(json.dumps(Case.model_json_schema(), indent=2) + "\n")


@schema_app.command("result")
@handle_errors
def schema_result() -> None:
    """Print the JSON Schema of a screening result (the output contract)."""
    sys.stdout.write(json.dumps(Result.model_json_schema(), indent=2) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        print(f"miss-screen {__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Screen whether minimally invasive spine surgery (MISS) is worth discussing."""


if not PROGRAM:  # imported: every signal as usual from here on
    with contextlib.suppress(ValueError):
        for _signum, _handler in _PREVIOUS.items():
            signal.signal(_signum, _handler)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
