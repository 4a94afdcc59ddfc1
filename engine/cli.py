"""miss-screen command line: screen a case, inspect and test the rules, print the schemas.

Thin by design: parse options, call engine, pick a renderer, map errors to exit codes
(0 screened, 1 --fail-on met or a golden case failed, 2 bad input, rules, usage or internal error,
141 standard output closed early, as `| head` does; 128 + N for signal N: 130, 143, 129).
"""

# No `from __future__ import annotations` here: typer reads the annotations of every command at
# each start, and as strings it would compile and evaluate them all (about 20 ms of a cold
# `screen`); names imported only for type checking are quoted instead.
import contextlib
import copy
import gc
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


def _is_program() -> bool:
    """Run as the program: the console script or the shim is the process's own __main__.
    multiprocessing's fork server imports the program's script again (as __mp_main__, with the
    parent's argv, while its own __main__ is a `-c` string), and forks the workers from there:
    in them this module is a library, so a signal to the whole process group leaves the fork
    server and the workers silent and only the program says `error: interrupted`, once."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is not None and os.path.basename(main_file) in ("miss-screen", "cli.py")


# Run as the program (not imported by tests or other code), Ctrl-C never shows a traceback:
# before the heavy imports below (typer, rich, pydantic, the rules) it ends the process with one
# line; while a command runs it is KeyboardInterrupt, which handle_errors turns into that line;
# once the command is done it is ignored, so the exit code is the command's.
PROGRAM = _is_program()
if PROGRAM:  # imported (tests, a worker's re-import of the script): every signal as it was
    _on_interrupt(_interrupted_while_starting)
# Start-up allocates only objects that live as long as the process (modules, then the rules):
# the cyclic collector would walk them again and again for nothing, about 60 ms of a cold
# `screen` (benchmarks/results.md). It is paused until the command starts (handle_errors),
# and those objects are then frozen out of its walks; load_screener does the same for the rules.
if PROGRAM:
    gc.disable()
    from engine.batch.startup import forbid_core_dumps

    forbid_core_dumps()  # no core file holding case data, whatever crashes (issue 26)
    # pydantic looks for plugins by reading the entry points of every installed distribution
    # when it builds its first model (about 30 ms of a cold `screen`); the program uses none.
    # Set PYDANTIC_DISABLE_PLUGINS to an empty string to have them loaded after all.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import errno
import functools
import json
import re
import traceback
from collections.abc import Callable, Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

import engine as engine_package
from engine.errors import UsageError, UserError
from engine.extras import MissingExtra, extra_of, require
from engine.io.cases import parse_set_options, read_case, read_site, read_text, validate_case
from engine.models import (
    CITATION_WORDS,
    Case,
    Result,
    Scalar,
    SourceRef,
    Verdict,
    evidence_label,
)
from engine.policy import verdict_rank
from engine.rules.bundled import bundled_rules_dir
from engine.rules.condition import to_text
from engine.rules.loader import load_ruleset
from engine.rules.ruleset import Constraint, DerivedRule, Ruleset
from engine.screener import COHORT_ENGINE, ENGINES, Screener
from engine.service.limits import Limits

if TYPE_CHECKING:
    from rich.console import Console

    from engine.batch.summary import BatchSummary
    from engine.batch.worker import OutputFormat
    from engine.derive import Facts
    from engine.mapping import ColumnMapping
    from engine.report.text import Traces

DEFAULT_RULES_DIR = Path(os.environ.get("MISS_SCREEN_RULES") or bundled_rules_dir())

# Help as the tools people know print it: plain text (no colour, boxes or markup, so NO_COLOR
# and a pipe see the same), no placeholder after a flag, -h as well as --help.
CLI_SETTINGS: dict[str, object] = {
    "rich_markup_mode": None,
    "context_settings": {"help_option_names": ["-h", "--help"], "max_content_width": 100},
}
app = typer.Typer(
    name="miss-screen",
    help="Screen whether minimally invasive spine surgery (MISS) is worth discussing. "
    "A screening aid for a conversation, never an order to operate.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    **CLI_SETTINGS,  # type: ignore[arg-type]  # typer's keyword types, held in one dict
)
rules_app = typer.Typer(
    help="List, show, check and test the rules.",
    no_args_is_help=True,
    **CLI_SETTINGS,  # type: ignore[arg-type]
)
schema_app = typer.Typer(
    help="Print the JSON Schema of a case or of a result.",
    no_args_is_help=True,
    **CLI_SETTINGS,  # type: ignore[arg-type]
)
app.add_typer(rules_app, name="rules")
app.add_typer(schema_app, name="schema")

CLOSED_PIPE_EXIT = 128 + signal.SIGPIPE  # 141: what a shell reports for `cmd | head`'s cmd


def terminal(*, stderr: bool = False) -> "Console":
    """A rich console that honours NO_COLOR fully (no bold or underline either: no-color.org
    asks for no ANSI styling at all, where rich drops only the colours) and lets a closed pipe
    reach handle_errors like any other write, instead of exiting 1 on its own."""
    from rich.console import Console

    class Terminal(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    plain = bool(os.environ.get("NO_COLOR"))  # set and not empty, as no-color.org says
    return Terminal(
        stderr=stderr,
        highlight=False,
        soft_wrap=True,
        **({"color_system": None} if plain else {}),  # type: ignore[arg-type]
    )


class LazyTerminal:
    """stdout or stderr as a rich console, made on first use: rich is most of what the JSON
    result of `screen` would import for nothing (about 5 % of a cold `screen --format json`).
    Every attribute is the console's (`stdout.print`, `stderr.rule`); `.console` is the
    console itself, for what takes one (the text report, a progress bar)."""

    def __init__(self, *, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def console(self) -> "Console":
        if self._console is None:
            with long_lived():  # rich's modules
                self._console = terminal(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


def escape(markup: str) -> str:
    """rich.markup.escape, imported when first needed (see LazyTerminal)."""
    from rich.markup import escape as escape_markup

    return escape_markup(markup)


stdout = LazyTerminal()
stderr = LazyTerminal(stderr=True)

P = ParamSpec("P")
R = TypeVar("R")


class ScreenFormat(StrEnum):
    text = "text"
    json = "json"
    brief = "brief"
    html = "html"


class ListFormat(StrEnum):
    text = "text"
    json = "json"


class Audience(StrEnum):
    """Who `screen` writes for: the clinician's report, or the patient's plain summary."""

    clinician = "clinician"
    patient = "patient"


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


def print_user_error(exc: UserError) -> None:
    """One `error:` line per problem: a message with line breaks in it (a library's, such as
    PyYAML's "\\n  in <unicode string>") is joined into its one line."""
    lines = exc.lines() if hasattr(exc, "lines") else [str(exc)]
    for line in lines:
        print(f"error: {' '.join(line.split())}", file=sys.stderr)


def closed_pipe() -> typer.Exit:
    """Standard output was closed early (`| head`): stop quietly, as Python's documentation says
    (signal module, "Note on SIGPIPE"): what is still buffered goes to /dev/null, so flushing at
    exit cannot fail again, and the exit is 141, what a shell reports for such a command."""
    with contextlib.suppress(OSError, ValueError):  # stdout may be gone or replaced (tests)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    return typer.Exit(CLOSED_PIPE_EXIT)


def internal_error() -> typer.Exit:
    """Our bug: say so, with the traceback of the exception being handled (exit 2)."""
    print("internal error, please report:", file=sys.stderr)
    traceback.print_exc()
    return typer.Exit(2)


def interrupted(exc: KeyboardInterrupt) -> typer.Exit:
    """A Ctrl-C (or Interrupted: SIGTERM, SIGHUP): one line, and its exit code (130 for Ctrl-C)."""
    print("error: interrupted", file=sys.stderr)
    return typer.Exit(getattr(exc, "exit_code", 130))


def carried_interrupt(exc: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM, SIGHUP) an exception carries as its cause or context: Python
    3.11 turns one that arrives while a class is being built (a dataclass field's __set_name__,
    a module imported on first use) into a RuntimeError caused by it."""
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, KeyboardInterrupt):
            return found
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return None


def handle_errors(command: Callable[P, R]) -> Callable[P, R]:
    """User errors become one-line messages and exit 2; anything else is our bug (also exit 2)."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if PROGRAM:
            _on_interrupt(signal.default_int_handler)
            gc.freeze()  # what the imports built, out of the collector's walks (see the top)
            gc.enable()
        try:
            try:
                return command(*args, **kwargs)
            finally:
                if sys.stdout is not None:  # a closed pipe seen here, not at exit ("ignored")
                    sys.stdout.flush()
        except typer.Exit:
            raise
        except UserError as exc:
            print_user_error(exc)
            raise typer.Exit(2) from None
        except BrokenPipeError:
            raise closed_pipe() from None
        except ModuleNotFoundError as exc:
            extra = extra_of(exc)
            if extra is None:  # a module of the core install: our bug
                raise internal_error() from None
            feature = f"miss-screen {command.__name__.replace('_', ' ')}"
            print_user_error(MissingExtra(feature, extra, exc.name or ""))
            raise typer.Exit(2) from None
        except OSError as exc:
            if exc.errno not in USER_ERRNOS:
                raise internal_error() from None
            print(f"error: {os_error_line(exc)}", file=sys.stderr)
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            raise interrupted(exc) from None
        except Exception as exc:
            interrupt = carried_interrupt(exc)
            raise (internal_error() if interrupt is None else interrupted(interrupt)) from None
        finally:
            if PROGRAM:
                _on_interrupt(signal.SIG_IGN)

    return wrapper


@contextlib.contextmanager
def long_lived() -> Iterator[None]:
    """Run as the program, what is built inside (the rules, a module imported on first use)
    lives as long as the process: the collector is paused while it is built and its objects
    are then frozen out of its walks, as the start-up's are (see the top of this module)."""
    if not PROGRAM:
        yield
        return
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


def load_screener(rules: Path, engine: str, site: str | None, few_cases: bool = False) -> Screener:
    """Screener.load, its objects long-lived (long_lived). `few_cases` (`screen`): the
    durable-rules layout quicker to build (Screener.load)."""
    with long_lived():
        return Screener.load(rules, engine, site, few_cases=few_cases)


RulesOption = Annotated[
    Path, typer.Option("--rules", metavar="DIR", help="Rules directory.", show_default=False)
]
# `rules check|test [DIR]` take the directory either way
RulesDirArgument = Annotated[
    Path | None,
    typer.Argument(metavar="[DIR]", help="Rules directory (or --rules DIR).", show_default=False),
]
OptionalRulesOption = Annotated[
    Path | None,
    typer.Option("--rules", metavar="DIR", help="Rules directory.", show_default=False),
]
SiteOption = Annotated[
    str | None,
    typer.Option(
        "--site",
        metavar="FILE",
        help="Site profile (YAML of setting fields) for values a case or row lacks.",
        show_default=False,
    ),
]


def engine_named(name: str) -> str:
    """--engine's value if engine.screener.ENGINES lists it (the one list: a new engine is
    offered by every command at once); otherwise a usage error (exit 2) before anything is read."""
    if name not in ENGINES:
        raise typer.BadParameter(f"expected one of {', '.join(ENGINES)}, not {name!r}")
    return name


ENGINE_METAVAR = "|".join(ENGINES)
CohortEngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        parser=engine_named,
        metavar=ENGINE_METAVAR,
        help="Evaluator for every row; the same outputs on each (reference is the test oracle).",
    ),
]
MapOption = Annotated[
    str | None,
    typer.Option(
        "--map",
        metavar="FILE",
        help="Mapping file (YAML): the export's columns, codes and units as fields "
        "(docs/mapping.md; `miss-screen inspect --write-map` drafts one).",
        show_default=False,
    ),
]


def read_mapping(path: str | None) -> "ColumnMapping | None":
    """The `--map` file, loaded and checked (None without the option)."""
    if path is None:
        return None
    from engine.mapping import load_mapping

    return load_mapping(path)


@app.command()
@handle_errors
def screen(
    case_files: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="CASE",
            help="Case files (YAML or JSON), or - for stdin.",
            show_default=False,
        ),
    ] = None,
    set_values: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD=VALUE",
            help="FIELD=VALUE; repeat for a quick case without a file.",
            show_default=False,
        ),
    ] = None,
    output_format: Annotated[
        ScreenFormat,
        typer.Option(
            "--format",
            help="text report, json result, one brief line per case, or a printable html page.",
        ),
    ] = ScreenFormat.text,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Write the output to this file instead of stdout.",
            show_default=False,
        ),
    ] = None,
    rules: RulesOption = DEFAULT_RULES_DIR,
    site: SiteOption = None,
    fail_on: Annotated[
        Verdict | None,
        typer.Option(
            "--fail-on",
            metavar="VERDICT",
            help="Exit 1 when a verdict is this one or higher.",
            show_default=False,
        ),
    ] = None,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            parser=engine_named,
            metavar=ENGINE_METAVAR,
            help="Evaluator (reference is the test oracle).",
        ),
    ] = "durable",
    fhir: Annotated[
        str | None,
        typer.Option(
            "--fhir",
            metavar="FILE",
            help="A FHIR R4 Bundle (collection, searchset or transaction; JSON), or - for stdin.",
            show_default=False,
        ),
    ] = None,
    reference_date: Annotated[
        str | None,
        typer.Option(
            "--reference-date",
            metavar="DATE",
            help="With --fhir: the date ages and observations are taken at (YYYY-MM-DD; today).",
            show_default=False,
        ),
    ] = None,
    details: Annotated[
        bool,
        typer.Option(
            "--details",
            metavar="",
            help="Text report: add each finding's rationale and sources, and why each rule "
            "fired or is still open (its condition, part by part), with a legend.",
        ),
    ] = False,
    legend: Annotated[
        bool,
        typer.Option(
            "--legend", metavar="", help="Text report: explain severity and evidence labels."
        ),
    ] = False,
    audience: Annotated[
        Audience,
        typer.Option(
            "--for",
            help="clinician: the report; patient: a plain-language summary to hand over after "
            "reading it (text, or --format html for one printable page).",
        ),
    ] = Audience.clinician,
) -> None:
    """Screen a case and print its verdict with every finding and its source.

    Example: miss-screen screen cases/examples/stenosis-l4-l5.yaml --details

    Example: miss-screen screen case.yaml --format html --out case.html

    Example: miss-screen screen case.yaml --for patient --format html --out summary.html
    """
    if audience is Audience.patient:
        check_patient_options(output_format, len(case_files or []), details, legend)
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
            out=out,
            details=details,
            legend=legend,
            audience=audience,
        )
        return
    if reference_date is not None:
        raise UsageError("--reference-date applies to --fhir input only")
    files = case_files or []
    if not files and not set_values:
        raise UsageError("give a case file, - for stdin, or --set FIELD=VALUE")
    if set_values and len(files) > 1:
        raise UsageError("--set applies to one case; give at most one case file with it")
    if output_format is ScreenFormat.html and len(files) > 1:
        raise UsageError("--format html makes the page of one case; give one case file")
    if out is not None:
        check_outputs(files, {"--out": out})
    screener = load_screener(rules, engine, site, few_cases=True)
    results = []
    traces: list[Traces | None] = []
    inputs: list[str | None] = list(files) or [None]
    failed = 0
    for case_file in inputs:
        try:
            case_id, values, source = read_screen_case(case_file, set_values or [])
            decision = screener.decide(case_id, values, source=source)
        except UserError as exc:
            if len(inputs) == 1:
                raise
            print_user_error(exc)  # as linters do: say it, screen the other files, exit 2
            failed += 1
            continue
        results.append(screener.result_of(case_id, decision))
        if audience is Audience.patient:
            write_patient_summary(results[0], screener.ruleset, values, output_format, out)
            break
        traces.append(case_traces(decision.facts, screener.ruleset) if details else None)
    if out is not None and out != "-" and results and audience is Audience.clinician:
        write_results(out, results, output_format, screener.ruleset.asked_because)
    shown = results if (out is None or out == "-") and audience is Audience.clinician else []
    for index, result in enumerate(shown):
        if output_format is ScreenFormat.text and index:
            stdout.rule()
        print_result(
            result,
            output_format,
            compact=len(results) > 1,
            details=details,
            legend=legend,
            traces=traces[index],
            reasons=screener.ruleset.asked_because,
        )
    if failed:
        stderr.print(f"{failed} of {len(inputs)} case files could not be screened")
        raise typer.Exit(2)
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
    engine: str,
    reference_date: str | None,
    *,
    out: str | None = None,
    details: bool = False,
    legend: bool = False,
    audience: Audience = Audience.clinician,
) -> None:
    """screen --fhir: map a Bundle to one case (--set overrides), screen it, say where values
    came from. Warnings go to stderr; they name resource types and codes, never content."""
    import datetime as dt

    if files:
        raise UsageError("--fhir screens one Bundle; give no case files with it")
    require("fhir", "miss-screen screen --fhir")
    from engine.fhir import MAX_FHIR_BYTES, fhir_to_case, read_bundle

    try:
        when = dt.date.fromisoformat(reference_date) if reference_date else dt.date.today()
    except ValueError:
        raise UsageError("--reference-date expects a date as YYYY-MM-DD") from None
    source = "<stdin>" if path == "-" else path
    mapped = fhir_to_case(read_bundle(read_text(path, "FHIR", MAX_FHIR_BYTES), source), when)
    raw: dict[str, object] = dict(mapped.case)
    provenance = {name: str(src) for name, src in mapped.provenance.items()}
    if set_values:
        overrides = parse_set_options(set_values)
        if overrides["case_id"] == "cli-case":
            del overrides["case_id"]
        raw.update(overrides)
        provenance.update({name: "--set" for name in overrides})
    case_id, values = validate_case(raw, f"{source} (FHIR)" + (" with --set" if set_values else ""))
    screener = load_screener(rules, engine, site, few_cases=True)
    decision = screener.decide(case_id, values, source=source)
    result = screener.result_of(case_id, decision)
    for warning in mapped.warnings:
        print(f"warning: {source}: {warning}", file=sys.stderr)
    if audience is Audience.patient:
        if out is not None and out != "-":
            check_outputs([path] if path != "-" else [], {"--out": out})
        write_patient_summary(result, screener.ruleset, values, output_format, out)
    elif out is not None and out != "-":
        check_outputs([path] if path != "-" else [], {"--out": out})
        write_results(out, [result], output_format, screener.ruleset.asked_because)
    else:
        traces = case_traces(decision.facts, screener.ruleset) if details else None
        print_result(
            result,
            output_format,
            details=details,
            legend=legend,
            traces=traces,
            reasons=screener.ruleset.asked_because,
        )
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


def check_patient_options(
    output_format: ScreenFormat, files: int, details: bool, legend: bool
) -> None:
    """--for patient: one case, as text or an HTML page; the clinician's switches do not apply."""
    if output_format not in (ScreenFormat.text, ScreenFormat.html):
        raise UsageError("--for patient writes text or html; use --for clinician for json or brief")
    if files > 1:
        raise UsageError("--for patient makes the summary of one case; give one case file")
    if details or legend:
        flag = "--details" if details else "--legend"
        raise UsageError(f"{flag} belongs to the clinician's report, not to --for patient")


def write_patient_summary(
    result: Result,
    ruleset: Ruleset,
    values: Mapping[str, Scalar],
    output_format: ScreenFormat,
    out: str | None,
) -> None:
    """The patient summary (engine/report/patient.py) to stdout or, atomically, to --out."""
    from engine.report.patient import patient_summary

    text = patient_summary(result, ruleset, output_format=output_format.value, case=values)
    if out is None or out == "-":
        sys.stdout.write(text)
    else:
        from engine.batch.writers import write_text_atomically

        write_text_atomically(out, text)


def case_traces(facts: "Facts", ruleset: Ruleset) -> "Traces":
    """Each reported rule's condition traced on the case's facts (for --details)."""
    from engine.report.trace import trace_rule

    return {rule.id: trace_rule(rule, facts) for rule in ruleset.rules}


def write_results(
    out: str,
    results: list[Result],
    output_format: ScreenFormat,
    reasons: Mapping[str, str] | None = None,
) -> None:
    """Write the results to a file (atomically): the HTML page, JSON, brief lines or plain text
    (`reasons`, Ruleset.asked_because: why each open question is asked)."""
    from engine.batch.writers import write_text_atomically

    if output_format is ScreenFormat.html:
        from engine.report.case_html import render_case_html

        text = render_case_html(results[0], reasons=reasons)
    elif output_format is ScreenFormat.json:
        compact = len(results) > 1
        text = "".join(r.model_dump_json(indent=None if compact else 2) + "\n" for r in results)
    elif output_format is ScreenFormat.brief:
        from engine.report.text import brief_line

        text = "".join(brief_line(r) + "\n" for r in results)
    else:
        from rich.console import Console

        from engine.report.text import render_text

        console = Console(record=True, file=open(os.devnull, "w"), width=100, highlight=False)  # noqa: SIM115
        for index, result in enumerate(results):
            if index:
                console.rule()
            render_text(result, console, reasons=reasons)
        text = console.export_text()
    write_text_atomically(out, text)


def print_result(
    result: Result,
    output_format: ScreenFormat,
    *,
    compact: bool = False,
    details: bool = False,
    legend: bool = False,
    traces: "Traces | None" = None,
    reasons: Mapping[str, str] | None = None,
) -> None:
    """Write one result; several JSON results are written one per line (JSON Lines)."""
    if output_format is ScreenFormat.json:
        sys.stdout.write(result.model_dump_json(indent=None if compact else 2) + "\n")
    elif output_format is ScreenFormat.brief:
        from engine.report.text import brief_line

        sys.stdout.write(brief_line(result) + "\n")
    elif output_format is ScreenFormat.html:
        from engine.report.case_html import render_case_html

        sys.stdout.write(render_case_html(result, reasons=reasons))
    else:
        with long_lived():
            from engine.report.text import render_text
        render_text(
            result, stdout.console, details=details, legend=legend, traces=traces, reasons=reasons
        )


class BatchFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"
    parquet = "parquet"


class InputFormatOption(StrEnum):
    csv = "csv"
    jsonl = "jsonl"
    parquet = "parquet"
    xlsx = "xlsx"


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
        typer.Argument(
            metavar="INPUT",
            help="Cohort files (CSV, JSONL, Parquet), or - for JSONL on stdin.",
        ),
    ],
    out: Annotated[
        str, typer.Option("--out", metavar="FILE", help="Output file, or - for stdout.")
    ],
    output_format: Annotated[
        BatchFormat | None,
        typer.Option(
            "--format",
            help="jsonl (one result per line; see --detail), csv or parquet (flattened); "
            "default from --out.",
            show_default=False,
        ),
    ] = None,
    summary: Annotated[
        str | None,
        typer.Option(
            "--summary", metavar="FILE", help="Write the summary JSON here.", show_default=False
        ),
    ] = None,
    report: Annotated[
        str | None,
        typer.Option(
            "--report", metavar="FILE", help="Write the HTML report here.", show_default=False
        ),
    ] = None,
    errors: Annotated[
        str | None,
        typer.Option(
            "--errors",
            metavar="FILE",
            help="Errors JSONL (default: OUT.errors.jsonl; stderr when OUT is -).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            metavar="N",
            min=1,
            help="Worker processes (default: CPU count).",
            show_default=False,
        ),
    ] = None,
    rules: RulesOption = DEFAULT_RULES_DIR,
    progress: Annotated[
        ProgressMode, typer.Option("--progress", help="Progress bar on stderr.")
    ] = ProgressMode.auto,
    site: SiteOption = None,
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
            metavar="COLUMN",
            help="A column the identifier guard flags wrongly; repeatable.",
            show_default=False,
        ),
    ] = None,
    ignore_unknown_columns: Annotated[
        bool,
        typer.Option(
            "--ignore-unknown-columns",
            metavar="",
            help="Skip columns the data dictionary does not know (the default; listed once).",
        ),
    ] = False,
    strict_columns: Annotated[
        bool,
        typer.Option(
            "--strict-columns",
            metavar="",
            help="Refuse an input with columns the data dictionary does not know.",
        ),
    ] = False,
    delimiter: Annotated[
        str | None,
        typer.Option(
            "--delimiter",
            metavar="CHAR",
            help="CSV delimiter: , ; or tab (default: taken from the header line).",
            show_default=False,
        ),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            "--encoding",
            metavar="NAME",
            help="CSV encoding, e.g. cp1252 or latin-1 (default: UTF-8; a file that is not "
            "UTF-8 is read as cp1252, said once).",
            show_default=False,
        ),
    ] = None,
    sheet: Annotated[
        str | None,
        typer.Option(
            "--sheet",
            metavar="NAME",
            help=".xlsx: the sheet to read (default: the first).",
            show_default=False,
        ),
    ] = None,
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
    mapping: MapOption = None,
    pseudonymise_ids: Annotated[
        str | None,
        typer.Option(
            "--pseudonymise-ids",
            metavar="KEYFILE",
            help="Replace each case id by a keyed hash (p-...), the key kept in KEYFILE "
            "(created, mode 0600, if absent): for ids that are dates, phone numbers, names.",
            show_default=False,
        ),
    ] = None,
    stall_timeout: Annotated[
        float | None,
        typer.Option(
            "--stall-timeout",
            metavar="SECONDS",
            min=0.1,
            help="A worker that makes no progress on a chunk for this long (or longer, when "
            "rows have proved slow) is killed and its rows screened again; a row that keeps "
            "stalling is rejected. Default: 60. With --workers 1 the rows are screened in "
            "this process, unwatched, unless this option is given.",
            show_default=False,
        ),
    ] = None,
    engine: CohortEngineOption = COHORT_ENGINE,
) -> None:
    """Screen a cohort: every row screened or rejected with a reason, outputs in input order.

    Example: miss-screen batch cohort.csv --out results.jsonl --report report.html
    """
    if report is not None:
        require("report", "miss-screen batch --report")
    if executor is Executor.dask:
        require("dask", "miss-screen batch --executor dask")
    elif PROGRAM:  # before pyarrow's threads and the fork server start (tests: a library)
        from engine.batch.allocator import arrow_jemalloc, one_malloc_arena

        one_malloc_arena()
        arrow_jemalloc()
    if executor is Executor.local and (workers or os.cpu_count() or 1) > 1:
        from engine.batch.startup import start_fork_server

        start_fork_server(str(rules), engine)  # its workers' imports and rules, meanwhile
    from engine.batch.run import (  # heavy: pyarrow
        BatchOptions,
        default_errors_path,
        estimate_total_rows,
        rules_sidecar_path,
        run_batch,
    )
    from engine.batch.worker import Detail, OutputFormat, arrow_without_pandas
    from engine.io.pseudonymise import load_key
    from engine.io.tables import InputFormat

    if strict_columns and ignore_unknown_columns:
        raise UsageError("--strict-columns and --ignore-unknown-columns contradict; give one")
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
            "--pseudonymise-ids": pseudonymise_ids,  # the key: never read as data, never replaced
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
        ignore_unknown_columns=not strict_columns,
        delimiter={"tab": "\t", "\\t": "\t"}.get(delimiter or "", delimiter),
        encoding=encoding,
        sheet=sheet,
        executor=executor.value,
        summary=summary,
        report=report,
        detail=detail_level,
        mapping=read_mapping(mapping),
        pseudonym_key=load_key(pseudonymise_ids) if pseudonymise_ids else None,
        stall_timeout=stall_timeout,
        engine=engine,
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

        result = run_batch_dask(options, ruleset, render, batch_notice)
    else:
        if PROGRAM:  # this process only reads, screens and writes files (tests: a library)
            arrow_without_pandas()
        total = estimate_total_rows(options) if progress_style != "none" else None
        with batch_progress(progress_style, total) as advance:
            result = run_batch(options, ruleset, advance, render, batch_notice)
    rec = result.reconciliation
    balanced = "balanced" if rec.balanced else "NOT BALANCED"
    stderr.print(
        f"rows read {rec.rows_read} = screened {rec.rows_screened} + rejected {rec.rows_rejected} "
        f"({balanced}); verdicts: "
        + ", ".join(f"{v.value} {n}" for v, n in result.verdicts.items())
    )
    if result.ignored_columns:
        stderr.print(
            "ignored columns (not in the data dictionary): "
            + escape(", ".join(result.ignored_columns))
        )
    for line in result.normalised_lines():
        stderr.print(escape(line))
    if result.stamp.worker_restarts:
        stalled = result.stamp.worker_stalls
        stderr.print(
            f"warning: a worker process died{' or stalled' if stalled else ''}; its chunks "
            f"were screened again ({result.stamp.worker_restarts} worker restarts"
            f"{f', {stalled} for stalling' if stalled else ''}, nothing lost)"
        )
    if result.duplicates:
        stderr.print(
            f"warning: {len(result.duplicates)} case_ids occur more than once (see the summary)"
        )
    if not rec.balanced:
        raise RuntimeError("reconciliation does not balance: rows were lost")


@app.command()
@handle_errors
def verify(
    summary: Annotated[Path, typer.Argument(help="The summary JSON of a batch (--summary).")],
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", metavar="FILE", help="Check this HTML report too.", show_default=False
        ),
    ] = None,
    html: Annotated[
        str | None,
        typer.Option(
            "--html",
            metavar="FILE",
            help="Write the HTML report of the verified set.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check that a batch output set is one run's: each file has the sha256 its summary records.

    Example: miss-screen verify summary.json --html report.html
    """
    from engine.batch.verify import verify_output_set
    from engine.batch.writers import write_text_atomically

    verified = verify_output_set(summary, report)
    if html is not None:
        write_text_atomically(html, render_batch_report(verified.summary))
    print(f"run {verified.run_id}: {len(verified.files)} files, all as the run committed them")


def batch_notice(text: str) -> None:
    """A line the user should see as it happens (a stalled worker, a stale lock taken over):
    above the progress bar, or between the progress lines."""
    stderr.print(f"warning: {escape(text)}")


class InspectFormat(StrEnum):
    text = "text"
    json = "json"
    html = "html"


@app.command()
@handle_errors
def inspect(
    cohort: Annotated[str, typer.Argument(help="Cohort file (CSV, JSONL, Parquet).")],
    write_map: Annotated[
        str | None,
        typer.Option(
            "--write-map",
            metavar="FILE",
            help="Write a draft mapping file (YAML) to edit, then use with batch --map.",
            show_default=False,
        ),
    ] = None,
    output_format: Annotated[
        InspectFormat, typer.Option("--format", help="Report on stdout: text, json or html.")
    ] = InspectFormat.text,
    rules: RulesOption = DEFAULT_RULES_DIR,
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
            metavar="COLUMN",
            help="A column the identifier guard flags wrongly; repeatable.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Scan a cohort before screening it: what each column maps to and how its values place.

    Example: miss-screen inspect export.csv --write-map mapping.yaml
    """
    from engine.io.tables import InputFormat
    from engine.mapping.inspect import draft_mapping, render_html, render_text, scan

    if cohort == "-":
        raise UsageError("inspect reads a file, not standard input")
    if write_map is not None:
        check_outputs([cohort], {"--write-map": write_map})
    report = scan(
        cohort,
        load_ruleset(rules),
        input_format=InputFormat(input_format.value) if input_format else None,
        allowed=frozenset(allow_column or []),
    )
    if output_format is InspectFormat.json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
    elif output_format is InspectFormat.html:
        sys.stdout.write(render_html(report))
    else:
        sys.stdout.write(render_text(report))
    if write_map is not None:
        from engine.batch.writers import write_text_atomically

        write_text_atomically(write_map, draft_mapping(report))
        stderr.print(
            f"wrote a draft mapping to {write_map}; check it, then: batch --map {write_map}"
        )


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


def render_batch_report(summary: "BatchSummary") -> str:
    from engine.report.html import render_html

    return render_html(summary)


def output_format_for(out: str) -> "OutputFormat":
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
    with Progress(*columns, console=stderr.console, transient=True) as bar:
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
    rows: Annotated[int, typer.Argument(min=1, metavar="N", help="Number of cases.")],
    out: Annotated[
        str, typer.Option("--out", metavar="FILE", help="File to write (.csv, .jsonl or .parquet).")
    ],
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Random seed; same seed, same cohort.")
    ] = 0,
    missing: Annotated[
        float,
        typer.Option("--missing", metavar="SHARE", min=0, max=1, help="Share of values blanked."),
    ] = 0.05,
    corrupt: Annotated[
        float,
        typer.Option(
            "--corrupt", metavar="SHARE", min=0, max=1, help="Share of rows with one corrupt value."
        ),
    ] = 0.01,
) -> None:
    """Write a synthetic, consistent anonymised cohort for tests, demos and benchmarks.

    Example: miss-screen synth 1000 --out cohort.csv --seed 7
    """
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
    include_all: Annotated[
        bool,
        typer.Option(
            "--all", metavar="", help="Also list the constraints and the derived attributes."
        ),
    ] = False,
) -> None:
    """List every rule with its category, severity and message.

    Example: miss-screen rules list --all
    """
    ruleset = load_ruleset(rules)
    others = (
        [
            {"id": c.id, "name": c.meta.name, "kind": "constraint", "field": c.meta.field}
            for c in ruleset.constraints
        ]
        + [
            {"id": d.meta.id, "name": d.meta.name, "kind": "derived", "field": d.field}
            for d in ruleset.derived
        ]
        if include_all
        else []
    )
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
        sys.stdout.write(json.dumps([*rows, *others], indent=2, ensure_ascii=False) + "\n")
        return
    from rich.table import Table  # only this listing draws a table

    table = Table(title=f"{ruleset.name} {ruleset.version}: {len(ruleset.rules)} rules")
    for column in ("id", "category", "severity", "name"):
        table.add_column(column)
    for r in ruleset.rules:
        name = r.meta.name + (" (provisional)" if r.meta.provisional else "")
        table.add_row(r.id, r.meta.category.value, r.meta.severity.value, name)
    for other in others:
        table.add_row(other["id"], other["kind"], "", f"{other['name']} ({other['field']})")
    stdout.print(table)


@rules_app.command("show")
@handle_errors
def rules_show(
    rule_id: Annotated[
        str, typer.Argument(metavar="ID", help="Rule id, e.g. ACC-007, CON-001 or DER-004.")
    ],
    rules: RulesOption = DEFAULT_RULES_DIR,
) -> None:
    """Show one rule: condition, message, rationale and sources.

    Example: miss-screen rules show ACC-008 (or a constraint, CON-001, or DER-004)
    """
    from engine.report.text import source_text

    ruleset = load_ruleset(rules)
    wanted = rule_id.upper()
    rule = ruleset.by_id.get(wanted) or next(
        (r for r in ruleset.rules if wanted in (a.upper() for a in r.meta.aliases)), None
    )
    if rule is None:
        constraint = next((c for c in ruleset.constraints if c.id == wanted), None)
        derived = next(
            (
                d
                for d in ruleset.derived
                if wanted in (d.meta.id, *(a.upper() for a in d.meta.aliases))
            ),
            None,
        )
        if constraint is not None:
            show_constraint(constraint)
            return
        if derived is not None:
            show_derived(derived)
            return
        raise UsageError(f"no rule with id {rule_id}; see 'miss-screen rules list --all'")
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
    if meta.asks_because:
        stdout.print(f"asks because: {escape(meta.asks_because)}")
    if meta.patient:
        stdout.print(f"for the patient: {escape(meta.patient)}")
    if meta.safety_net:
        stdout.print(f"warning symptoms: {escape('; '.join(meta.safety_net.symptoms))}")
        for source in meta.safety_net.sources:
            stdout.print(f"warning symptoms from: {escape(source_text(source))}")
    _show_why(meta.rationale, meta.sources, meta.notes)


def _show_why(rationale: str, sources: list[SourceRef], notes: str | None) -> None:
    """The rationale, each source with its evidence label, and the rule-author notes."""
    from engine.report.text import source_text

    stdout.print(f"rationale: {escape(' '.join(rationale.split()))}")
    for source in sources:
        label = evidence_label([source])
        stdout.print(f"source: {escape(source_text(source))} \\[{escape(label)}]")
    if notes:
        stdout.print(f"notes: {escape(' '.join(notes.split()))}")


def show_constraint(constraint: Constraint) -> None:
    """`rules show CON-...`: what a constraint narrows, when, and why."""
    from engine.report.text import show_value

    meta = constraint.meta
    stdout.print(f"[bold]{meta.id} {meta.name}[/bold] (rules/constraints.yaml)")
    stdout.print(
        f"kind: constraint   narrows: {meta.field}   "
        f"citation: {CITATION_WORDS[meta.evidence.value]}"
    )
    for narrowing in meta.narrowings:
        allowed = ", ".join(show_value(v) for v in narrowing.allowed)
        stdout.print(f"when {escape(narrowing.when)}: {meta.field} is one of {escape(allowed)}")
    _show_why(meta.rationale, meta.sources, meta.notes)


def show_derived(derived: DerivedRule) -> None:
    """`rules show DER-...`: how a derived attribute is computed, and why."""
    from engine.report.text import show_value

    meta = derived.meta
    stdout.print(f"[bold]{meta.id} {meta.name}[/bold] v{meta.version} ({derived.path})")
    stdout.print(
        f"kind: derived attribute   field: {meta.field}   "
        f"provisional: {'yes' if meta.provisional else 'no'}   "
        f"citation: {CITATION_WORDS[meta.evidence.value]}"
    )
    stdout.print(f"description: {escape(' '.join(meta.description.split()))}")
    stdout.print(f"inputs: {', '.join(derived.inputs)}")
    if meta.expression:
        stdout.print(f"expression: {escape(meta.expression)}")
    if meta.condition:
        stdout.print(f"condition: {escape(meta.condition)}")
    for band in meta.bands or []:
        stdout.print(f"band: {escape(show_value(band.value))} when {escape(band.when)}")
    for term in meta.points or []:
        points = ", ".join(f"{k} {v}" for k, v in term.values.items())
        stdout.print(f"points: {term.field}: {escape(points)}")
    if meta.supplied_total:
        stdout.print(f"otherwise the supplied total: {meta.supplied_total}")
    _show_why(meta.rationale, meta.sources, meta.notes)


def rules_dir_of(positional: Path | None, option: Path | None) -> Path:
    """The rules directory of `rules check/test`: DIR or --rules DIR (not two different ones)."""
    if positional is not None and option is not None and positional != option:
        raise UsageError("give the rules directory once: DIR or --rules DIR")
    return positional or option or DEFAULT_RULES_DIR


@rules_app.command("check")
@handle_errors
def rules_check(
    directory: RulesDirArgument = None,
    rules: OptionalRulesOption = None,
) -> None:
    """Load and check every rule file; report each problem as file:line.

    Example: miss-screen rules check --rules my-rules/
    """
    ruleset = load_ruleset(rules_dir_of(directory, rules))
    from engine.goldens import screen_goldens

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
    directory: RulesDirArgument = None,
    rules: OptionalRulesOption = None,
    output_format: Annotated[
        ListFormat, typer.Option("--format", help="Output format.")
    ] = ListFormat.text,
    show_coverage: Annotated[
        bool,
        typer.Option(
            "--coverage",
            help="Also list, per rule, the parts of scope and condition the golden cases never "
            "make true, false or unknown.",
        ),
    ] = False,
) -> None:
    """Run every golden case on both evaluators; exit 1 on any mismatch.

    Example: miss-screen rules test --format json

    Example: miss-screen rules test --coverage
    """
    ruleset = load_ruleset(rules_dir_of(directory, rules))
    covered = None
    if show_coverage:
        from engine.research.coverage import coverage

        covered = coverage(ruleset)
    from engine.goldens import screen_goldens

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
        data: dict[str, object] = {
            "passed": len(results) - len(failed),
            "failed": len(failed),
            "results": rows,
        }
        if covered is not None:
            data["coverage"] = [
                {
                    "rule_id": c.rule_id,
                    "golden_cases": c.cases,
                    "complete": c.complete,
                    "parts": [p.as_json() for p in c.parts],
                }
                for c in covered
            ]
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        for r in results:
            if not r.ok:
                stdout.print(
                    f"[red]FAIL[/red] {r.golden.rule_id}::{r.golden.name} \\[{r.backend}] "
                    f"expected {escape(r.expected)}, got {escape(r.actual)}"
                )
                for detail in r.details:
                    stdout.print(f"     {escape(detail)}")
        if covered is not None:
            for c in covered:
                for part in c.parts:
                    if part.never:
                        stdout.print(
                            f"{c.rule_id} {part.where} never {'/'.join(part.never)}: "
                            f"{escape(part.text)}"
                        )
            gaps = sum(bool(p.never) for c in covered for p in c.parts)
            stdout.print(
                f"coverage: {sum(c.complete for c in covered)} of {len(covered)} rules have every "
                f"part of scope and condition seen true, false and unknown; {gaps} of "
                f"{sum(len(c.parts) for c in covered)} parts miss a state"
            )
        stdout.print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise typer.Exit(1)


class ReportFormat(StrEnum):
    md = "md"
    html = "html"
    json = "json"


@rules_app.command("diff")
@handle_errors
def rules_diff(
    old: Annotated[
        str, typer.Argument(help="Old rules: a folder, or a git revision (HEAD~1:rules).")
    ],
    new: Annotated[str, typer.Argument(help="New rules: a folder, or a git revision.")],
    cohort: Annotated[str, typer.Option("--cohort", help="Cohort file (CSV, JSONL, Parquet).")],
    site: Annotated[
        str | None, typer.Option("--site", help="Site profile for both runs.", show_default=False)
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Report file, or - for stdout.")] = "-",
    output_format: Annotated[
        ReportFormat | None,
        typer.Option(
            "--format",
            help="md, html or json; default from --out (md on stdout).",
            show_default=False,
        ),
    ] = None,
    changes: Annotated[
        str | None,
        typer.Option(
            "--changes",
            help="Cases whose verdict changed, with the rules responsible (.csv or .jsonl); "
            "default OUT.changes.csv beside a report file.",
            show_default=False,
        ),
    ] = None,
    all_outcomes: Annotated[
        bool,
        typer.Option("--all-outcomes", help="List in --changes every case a rule outcome moved."),
    ] = False,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes per run.")] = 1,
    fail_on_change: Annotated[
        bool, typer.Option("--fail-on-change", help="Exit 1 when any verdict changes.")
    ] = False,
    mapping: MapOption = None,
    engine: CohortEngineOption = COHORT_ENGINE,
) -> None:
    """Screen a cohort with two rule sets and report what changed, rule by rule and case by case."""
    from engine.research.diff import diff_cohort
    from engine.research.render import diff_html, diff_markdown

    fmt = output_format or _report_format(out)
    if changes is None and out != "-":
        changes = str(Path(out).with_name(Path(out).name + ".changes.csv"))
    check_outputs([cohort], {"--out": out, "--changes": changes})
    report = diff_cohort(
        old,
        new,
        cohort,
        site=read_site(site) if site else None,
        workers=workers,
        changes_out=changes,
        all_outcome_changes=all_outcomes,
        mapping=read_mapping(mapping),
        engine=engine,
    )
    if fmt is ReportFormat.json:
        text = json.dumps(report.as_json(), indent=2) + "\n"
    elif fmt is ReportFormat.html:
        text = diff_html(report)
    else:
        text = diff_markdown(report)
    _write_report(out, text)
    for warning in report.version_warnings:
        print(f"warning: {warning}", file=sys.stderr)
    stderr.print(
        f"verdict changed in {report.changed} of {report.compared} rows "
        f"({report.share_changed} %); rule outcomes moved in {report.outcome_changed}"
    )
    if fail_on_change and report.changed:
        raise typer.Exit(1)


class SweepFormat(StrEnum):
    text = "text"
    json = "json"
    html = "html"


@rules_app.command("sweep")
@handle_errors
def rules_sweep(
    rule: Annotated[
        str,
        typer.Argument(
            metavar="RULE[:N]",
            help="The rule whose constant moves; RULE:N for its N-th numeric constant.",
        ),
    ],
    start: Annotated[str, typer.Option("--from", metavar="A", help="First value.")],
    stop: Annotated[str, typer.Option("--to", metavar="B", help="Last value (inclusive).")],
    step: Annotated[str, typer.Option("--step", metavar="S", help="Step, more than 0.")],
    cohort: Annotated[
        str, typer.Option("--cohort", metavar="FILE", help="Cohort (CSV, JSONL, Parquet), or -.")
    ],
    rules: RulesOption = DEFAULT_RULES_DIR,
    site: SiteOption = None,
    out: Annotated[
        str, typer.Option("--out", metavar="FILE", help="Report file, or - for stdout.")
    ] = "-",
    output_format: Annotated[
        SweepFormat | None,
        typer.Option(
            "--format", help="text, json or html; default from --out (text on stdout).",
            show_default=False,
        ),
    ] = None,
    examples: Annotated[
        int,
        typer.Option(
            "--examples", metavar="N", min=0, help="Case ids shown per change between values."
        ),
    ] = 10,
    mapping: MapOption = None,
    delimiter: Annotated[
        str | None,
        typer.Option(
            "--delimiter", metavar="CHAR", help="CSV delimiter (default: from the header line).",
            show_default=False,
        ),
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option("--encoding", metavar="NAME", help="CSV encoding.", show_default=False),
    ] = None,
    input_format: Annotated[
        InputFormatOption | None,
        typer.Option("--input-format", help="Override the format taken from the extension.",
                     show_default=False),
    ] = None,
    allow_column: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-column", metavar="COLUMN",
            help="A column the identifier guard flags wrongly; repeatable.", show_default=False,
        ),
    ] = None,
    engine: CohortEngineOption = COHORT_ENGINE,
) -> None:
    """Screen a cohort once per value of one rule's constant, in a copy of the rules in memory:
    verdicts per value and the cases that change between neighbouring values.

    Example: miss-screen rules sweep RAD-005 --from 35 --to 45 --step 1 --cohort cohort.csv
    """  # fmt: skip
    from engine.batch.run import BatchOptions
    from engine.batch.worker import OutputFormat
    from engine.io.tables import InputFormat
    from engine.research.render import sweep_html, sweep_text
    from engine.research.sweep import sweep_cohort, sweep_values

    fmt = output_format or _sweep_format(out)
    if fmt is SweepFormat.html:
        require("report", "miss-screen rules sweep --format html")
    values = sweep_values(start, stop, step)
    check_outputs([cohort], {"--out": out})
    options = BatchOptions(
        inputs=[cohort],
        out="-",
        output_format=OutputFormat.csv,
        rules_dir=str(rules),
        site=read_site(site) if site else {},
        input_format=InputFormat(input_format.value) if input_format else None,
        allow_columns=frozenset(allow_column or []),
        delimiter={"tab": "\t", "\\t": "\t"}.get(delimiter or "", delimiter),
        encoding=encoding,
        mapping=read_mapping(mapping),
        engine=engine,
    )
    report = sweep_cohort(load_ruleset(rules), rule, values, options, examples=examples)
    if fmt is SweepFormat.json:
        text = json.dumps(report.as_json(), indent=2) + "\n"
    elif fmt is SweepFormat.html:
        text = sweep_html(report)
    else:
        text = sweep_text(report)
    _write_report(out, text)
    stderr.print(
        f"{report.rule_id}: {len(report.points)} values of {report.constant.field}; "
        f"{report.rows_screened} rows screened each, {report.rows_rejected} rejected"
    )


def _sweep_format(out: str) -> SweepFormat:
    suffix = Path(out).suffix.lower().lstrip(".")
    if out == "-" or suffix in ("txt", "md", "markdown", "text"):
        return SweepFormat.text
    if suffix in ("html", "htm"):
        return SweepFormat.html
    if suffix == "json":
        return SweepFormat.json
    raise UsageError(f"cannot tell the report format of {out}; use --format text|json|html")


def _report_format(out: str) -> ReportFormat:
    suffix = Path(out).suffix.lower().lstrip(".")
    if out == "-" or suffix in ("md", "markdown", "txt"):
        return ReportFormat.md
    if suffix in ("html", "htm"):
        return ReportFormat.html
    if suffix == "json":
        return ReportFormat.json
    raise UsageError(f"cannot tell the report format of {out}; use --format md|html|json")


def _write_report(out: str, text: str) -> None:
    if out == "-":
        sys.stdout.write(text)
        return
    from engine.batch.writers import write_text_atomically

    write_text_atomically(out, text)


@app.command()
@handle_errors
def agree(
    labels: Annotated[str, typer.Option("--labels", help="CSV: case_id and one column per rater.")],
    cohort: Annotated[
        str | None,
        typer.Option(
            "--cohort", help="Cases (default: the labels file's case fields).", show_default=False
        ),
    ] = None,
    rules: RulesOption = DEFAULT_RULES_DIR,
    site: Annotated[
        str | None, typer.Option("--site", help="Site profile.", show_default=False)
    ] = None,
    out: Annotated[str, typer.Option("--out", help="Report file, or - for stdout.")] = "-",
    output_format: Annotated[
        ReportFormat | None,
        typer.Option("--format", help="md, html or json; default from --out.", show_default=False),
    ] = None,
    allow_column: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-column",
            metavar="COLUMN",
            help="A column the identifier guard flags wrongly; repeatable.",
            show_default=False,
        ),
    ] = None,
    allow_missing: Annotated[
        bool,
        typer.Option("--allow-missing", help="Count and name blank labels instead of refusing."),
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Bootstrap seed.")] = 2026,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Worker processes.")] = 1,
    mapping: MapOption = None,
    engine: CohortEngineOption = COHORT_ENGINE,
) -> None:
    """Agreement of the tool's verdicts with raters: kappa, sensitivity, specificity."""
    require("research", "miss-screen agree")
    from engine.research.agree import agreement
    from engine.research.render import agree_html, agree_markdown

    fmt = output_format or _report_format(out)
    check_outputs([labels, *([cohort] if cohort else [])], {"--out": out})
    report = agreement(
        labels,
        load_ruleset(rules),
        str(rules),
        cohort=cohort,
        site=read_site(site) if site else None,
        workers=workers,
        allow_missing=allow_missing,
        seed=seed,
        mapping=read_mapping(mapping),
        allow_columns=frozenset(allow_column or ()),
        engine=engine,
    )
    if fmt is ReportFormat.json:
        _write_report(out, json.dumps(report.as_json(), indent=2) + "\n")
    elif fmt is ReportFormat.html:
        _write_report(out, agree_html(report))
    else:
        _write_report(out, agree_markdown(report))
    for note in report.notes:
        print(f"warning: {note}", file=sys.stderr)


@app.command()
@handle_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8080,
    site: Annotated[
        str | None,
        typer.Option(
            "--site",
            help="Site profile (equipment, navigation, surgeon experience) applied to every case "
            "and shown as assumptions; never taken from the EHR.",
            show_default=False,
        ),
    ] = None,
    rules: RulesOption = DEFAULT_RULES_DIR,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Development mode: accept unauthenticated CDS Hooks calls and the public "
            "sandbox key. Never in production.",
        ),
    ] = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            metavar="ORIGIN",
            help="An origin (e.g. https://sandbox.cds-hooks.org) allowed to call the CDS Hooks "
            "endpoints from a browser; repeat for several.",
            show_default=False,
        ),
    ] = None,
    trusted_issuer: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-issuer",
            metavar="ISS=JWKS",
            help="A CDS Client whose JWTs are accepted: its iss and its JWKS (an https URL or a "
            "local file); repeat for several. Required unless --dev.",
            show_default=False,
        ),
    ] = None,
    audience: Annotated[
        list[str] | None,
        typer.Option(
            "--audience",
            metavar="URL",
            help="The aud a JWT must carry (default: the URL of the endpoint called, as seen "
            "through --public-url); repeat for several.",
            show_default=False,
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            metavar="URL",
            help="The service's URL as callers see it (behind a proxy): used in the cards' links "
            "and as the expected JWT aud.",
            show_default=False,
        ),
    ] = None,
    feedback_log: Annotated[
        Path | None,
        typer.Option(
            "--feedback-log",
            metavar="FILE",
            help="Append CDS Hooks card feedback (card, outcome, reason code; no identifiers) "
            "to FILE as JSON lines.",
            show_default=False,
        ),
    ] = None,
    max_connections: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=1,
            help="Connections open at once; a new one closes the oldest that waits on its client "
            "(lowered to what the open-file limit allows).",
        ),
    ] = Limits().max_connections,
    header_timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=0.1,
            help="Time for a request's line and headers; then the connection is closed (408).",
        ),
    ] = Limits().header_timeout,
    body_timeout: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            min=0.1,
            help="Time for a request's body once its headers are in; then it is closed (408).",
        ),
    ] = Limits().body_timeout,
    max_header_bytes: Annotated[
        int,
        typer.Option(
            metavar="N",
            min=1024,
            help="Size of a request's line and headers together; larger is refused (431).",
        ),
    ] = Limits().max_header_bytes,
    max_body_bytes: Annotated[
        int,
        typer.Option(metavar="N", min=1, help="Size of a request body; larger is refused (413)."),
    ] = Limits().max_body_bytes,
    forwarded_allow_ips: Annotated[
        list[str] | None,
        typer.Option(
            "--forwarded-allow-ips",
            metavar="ADDR",
            help="A reverse proxy (IP address or network) whose X-Forwarded-For and "
            "X-Forwarded-Proto are believed; repeat for several. Default: none, they are ignored.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the web form (/) and the CDS Hooks service (/cds-services) on one Screener.

    Needs the optional extra: pip install 'miss-screen[service]'.

    Example: miss-screen serve --site cases/sites/teaching-hospital.yaml
    """
    require("service", "miss-screen serve")
    from engine.service.app import ServiceConfig, create_app
    from engine.service.server import listen, run

    issuers = _trusted_issuers(trusted_issuer or [])
    if issuers and not (audience or public_url):
        raise UsageError(
            "--trusted-issuer needs --public-url URL (or --audience URL): a token's aud is checked "
            "against it, never against the Host header a caller sends"
        )
    if feedback_log is not None:
        check_outputs([], {"--feedback-log": str(feedback_log)})
    screener = load_screener(rules, "durable", site)  # its objects frozen out of the GC's walks
    config = ServiceConfig(
        screener=screener,
        dev=dev,
        cors_origins=tuple(cors_origin or ()),
        feedback_log=feedback_log,
        trusted_issuers=issuers,
        audiences=tuple(audience or ()),
        public_url=public_url,
        max_body_bytes=max_body_bytes,
    )
    limits = Limits(max_connections, header_timeout, body_timeout, max_header_bytes, max_body_bytes)
    proxies = _proxies(forwarded_allow_ips or [])
    application = create_app(config)
    listener = listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    bound = listener.getsockname()[1]
    version = engine_package.__version__
    print(f"miss-screen {version}: serving on http://{shown}:{bound}/ (Ctrl-C stops)")
    if dev:
        print(
            "warning: --dev: unauthenticated CDS Hooks calls and the public sandbox key are "
            "accepted; never use it with patient data",
            file=sys.stderr,
        )
    elif not issuers:
        # the web form needs no token; an EHR's call without a trusted issuer is always refused
        print(
            "note: no --trusted-issuer given: the web form is served, and every CDS Hooks call "
            "is refused (401) until an issuer is trusted (or --dev, never with patient data)",
            file=sys.stderr,
        )
    run(application, listener, limits, proxies)


def _proxies(given: list[str]) -> list[str]:
    """--forwarded-allow-ips values (repeated or comma-separated): addresses or networks."""
    import ipaddress

    proxies = [item.strip() for value in given for item in value.split(",") if item.strip()]
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise UsageError(
                f"--forwarded-allow-ips: {proxy!r} is not an IP address or network"
            ) from None
    return proxies


def _trusted_issuers(pairs: list[str]) -> dict[str, str]:
    """--trusted-issuer ISS=JWKS pairs: iss -> a JWKS URL or the text of a JWKS file."""
    from engine.service.auth import read_jwks

    issuers: dict[str, str] = {}
    for pair in pairs:
        iss, sep, source = pair.partition("=")
        if not sep or not iss or not source:
            raise UsageError("--trusted-issuer expects ISS=JWKS_URL_OR_FILE")
        try:
            issuers[iss] = read_jwks(source)
        except OSError as exc:
            raise UsageError(f"--trusted-issuer: cannot read {source}: {exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(f"--trusted-issuer: {exc}") from None
    return issuers


@rules_app.command("docs")
@handle_errors
def rules_docs(
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Folder for the generated pages.")
    ] = Path("docs/rules"),
    rules: RulesOption = DEFAULT_RULES_DIR,
) -> None:
    """Write one Markdown page per rule and an index, generated from the rule files.

    Example: miss-screen rules docs --out docs/rules
    """
    from engine.report.docs import write_docs

    ruleset = load_ruleset(rules)
    written = write_docs(ruleset, out, Path(rules).resolve().parent)
    stderr.print(f"wrote {len(written)} pages to {out}")


@schema_app.command("case")
@handle_errors
def schema_case() -> None:
    """Print the JSON Schema of a case file.

    Example: miss-screen schema case > case.schema.json
    """
    sys.stdout.write(json.dumps(Case.model_json_schema(), indent=2) + "\n")


@schema_app.command("result")
@handle_errors
def schema_result() -> None:
    """Print the JSON Schema of a screening result (the output contract).

    Example: miss-screen schema result
    """
    sys.stdout.write(json.dumps(Result.model_json_schema(), indent=2) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        print(f"miss-screen {engine_package.__version__}")
        raise typer.Exit(0)


@app.callback()
def main_options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            metavar="",
            callback=_version_callback,
            is_eager=True,
            help="Show the version.",
        ),
    ] = False,
) -> None:
    """Screen whether minimally invasive spine surgery (MISS) is worth discussing."""


def command_tree(args: list[str]) -> typer.Typer:
    """The app as `args` need it: only the command or group they name first, so that typer
    builds the options of that one command from its signature and not of all twenty (about
    3 % of a cold `screen`); anything else (options first, no command, a misspelt one that
    click should suggest a name for) gets the whole app. The usage lines, help and errors of
    a command are its own, the same in either tree."""
    name = args[0] if args else None
    commands = [
        info
        for info in app.registered_commands
        if info.callback is not None
        and (info.name or typer.main.get_command_name(info.callback.__name__)) == name
    ]
    groups = [info for info in app.registered_groups if info.name == name]
    if not commands and not groups:
        return app
    lean = copy.copy(app)  # the same settings and callback (--version), fewer commands
    lean.registered_commands = commands
    lean.registered_groups = groups
    return lean


def main() -> None:
    command_tree(sys.argv[1:])()


if __name__ == "__main__":
    main()
