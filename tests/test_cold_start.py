"""Cold start (issue 29 item 4): `miss-screen screen CASE` imports only what one case needs.

A fresh `screen` of one case is timed by benchmarks/bench.py (target < 0.3 s with a warm rules
cache), and most of that time is imports. A clock in a unit test would fail on a busy machine
and pass on a slow change, so this test holds what the time is made of instead: run as the
program, under `python -X importtime` (which lists every module imported at any point of the
run, lazily or not), a single case must not import what only cohorts, reports, the service or
the research commands use. Importing one of them again, at the top of a module `screen` reaches
(engine/cli.py, engine/screener.py, ...), makes this test fail: move the import into the
function that needs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from engine.cli import app, command_tree
from tests.conftest import ROOT

EXAMPLE = ROOT / "cases" / "examples" / "disc-herniation-l4-l5.yaml"

# third-party and standard-library packages (top-level names) a single case never needs:
# Arrow and numpy (batch I/O), Jinja (HTML reports), libphonenumber (only for a case id shaped
# like a telephone number), openpyxl (xlsx cohorts), the optional extras, and the machinery of
# parallel batches and of the service
NOT_FOR_ONE_CASE = frozenset(
    {
        "pyarrow",
        "numpy",
        "pandas",
        "polars",
        "jinja2",
        "phonenumbers",
        "openpyxl",
        "matplotlib",
        "scipy",
        "statsmodels",
        "dask",
        "distributed",
        "fastapi",
        "uvicorn",
        "jwt",
        "fhir",
        "multiprocessing",
        "concurrent",
        "asyncio",
    }
)
# the engine's modules for other commands: batches (all but the start-up guard every command
# runs first), column mappings, pseudonyms, tabular readers, reports other than the text one,
# the service (but its limits, the defaults of `serve`'s options), research, synthesis, FHIR,
# the golden-case runner and the reference evaluator (`screen` runs durable-rules)
ENGINE_NOT_FOR_ONE_CASE = (
    "engine.batch.",
    "engine.mapping",
    "engine.io.pseudonymise",
    "engine.io.tables",
    "engine.io.columnar",
    "engine.io.columns",
    "engine.report.html",
    "engine.report.case_html",
    "engine.report.markdown",
    "engine.report.docs",
    "engine.service.",
    "engine.research",
    "engine.synth",
    "engine.fhir",
    "engine.goldens",
    "engine.evaluate.reference",
)
ENGINE_ALLOWED = frozenset({"engine.batch.startup", "engine.service.limits"})
# single modules of packages `screen` needs parts of: the email parser read the whole package
# metadata (README included) for engine.__version__, which now reads its header lines only
MODULES_NOT_FOR_ONE_CASE = frozenset({"email.parser", "email.feedparser"})


def imported_by_screen(args: list[str], cache: Path) -> tuple[set[str], str]:
    """Every module a `screen` run as the program imports, and what it printed."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MISS_SCREEN_CACHE_DIR": str(cache),
    }
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(ROOT / "cli.py"), "screen", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # each line: self time, cumulative time and the module name, split by bars
    modules = {
        line.rpartition("|")[2].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and not line.rstrip().endswith("imported package")
    }
    return modules, done.stdout


def not_for_one_case(modules: set[str]) -> list[str]:
    return sorted(
        name
        for name in modules
        if name.partition(".")[0] in NOT_FOR_ONE_CASE
        or name in MODULES_NOT_FOR_ONE_CASE
        or (name.startswith(ENGINE_NOT_FOR_ONE_CASE) and name not in ENGINE_ALLOWED)
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("output", [[], ["--format", "json"]], ids=["text", "json"])
def test_screen_of_one_case_imports_nothing_for_cohorts_or_reports(
    output: list[str], tmp_path: Path
) -> None:
    # first with an empty rules cache (the layout is computed), then with it warm, as timed
    for run in ("cold cache", "warm cache"):
        modules, printed = imported_by_screen([str(EXAMPLE), *output], tmp_path / "cache")
        # the probe sees the run: the evaluator and the case reader were imported
        assert {"engine.evaluate.durable", "engine.io.cases", "yaml"} <= modules, run
        assert not_for_one_case(modules) == [], run
        rich = sorted(name for name in modules if name.partition(".")[0] == "rich")
        if output:  # the JSON result needs no console: rich is for the text report
            assert json.loads(printed)["case_id"] == "EX-001", run
            assert rich == [], run
        else:
            assert printed.startswith("Case EX-001\nVerdict: "), run
            assert "rich.console" in rich, run  # the probe would see it
    assert any((tmp_path / "cache").glob("layout-*.json"))  # the second run read it


@pytest.mark.timeout(60)
def test_the_probe_would_see_a_heavy_import() -> None:
    """The filter catches what it is meant to: a batch module, Arrow, a service module, the
    email parser (not the email message module importlib.metadata needs)."""
    seen = {"engine.batch.worker", "pyarrow.lib", "engine.service.app", "engine.batch.startup"}
    seen |= {"email.parser", "email.message"}
    assert not_for_one_case(seen) == [
        "email.parser",
        "engine.batch.worker",
        "engine.service.app",
        "pyarrow.lib",
    ]


# --- the command tree typer builds -----------------------------------------------------------


def _names(tree: typer.Typer) -> list[str]:
    click_group = typer.main.get_command(tree)
    assert isinstance(click_group, typer.core.TyperGroup)
    return sorted(click_group.commands)


TOP_LEVEL = _names(app)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", TOP_LEVEL)
def test_a_named_command_gets_only_its_own_tree_and_the_same_words(name: str) -> None:
    """`main` has typer build only the command named first on the command line; its help,
    a usage error in it, and --version before it read exactly as with every command built."""
    lean = command_tree([name, "--help"])
    assert _names(lean) == [name]
    runner = CliRunner()
    for args in ([name, "--help"], [name, "--no-such-option"], ["--version"]):
        whole = runner.invoke(app, args, prog_name="miss-screen")
        alone = runner.invoke(lean, args, prog_name="miss-screen")
        assert (alone.exit_code, alone.output) == (whole.exit_code, whole.output), args
    assert _names(app) == TOP_LEVEL  # the whole app keeps every command


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args", [[], ["--help"], ["--version"], ["scren"], ["rules-list"]], ids=repr
)
def test_no_command_named_first_gets_the_whole_tree(args: list[str]) -> None:
    """Top-level help lists every command, and a misspelt name gets click's suggestion from
    all of them: anything but a command's exact name gets the whole app."""
    assert command_tree(args) is app


# --- patterns compiled on first use -------------------------------------------------------------

# run as the program (runpy gives __main__ the shim's file name), then report which of the
# identifier guard's and the clinical vocabulary's patterns were compiled
_PATTERNS_PROBE = """
import contextlib, io, runpy, sys
shim, case = sys.argv[1:]
sys.argv = [shim, "screen", case]
with contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.suppress(SystemExit):
    runpy.run_path(shim, run_name="__main__")
from engine.io import case_ids, clinical
print(printed.getvalue().startswith("Case EX-001"), case_ids._shapes.cache_info().currsize,
      clinical._shapes.cache_info().currsize)
"""


@pytest.mark.timeout(120)
def test_one_ordinary_case_compiles_no_identifier_or_vocabulary_pattern(tmp_path: Path) -> None:
    """An ordinary case id and values the normaliser places need neither the identifier
    guard's full check nor the clinical vocabulary (both only name what an error may show);
    their patterns are compiled on first use, and a screen of such a case uses none."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MISS_SCREEN_CACHE_DIR": str(tmp_path / "cache"),
    }
    done = subprocess.run(
        [sys.executable, "-c", _PATTERNS_PROBE, str(ROOT / "cli.py"), str(EXAMPLE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "0", "0"]


@pytest.mark.timeout(60)
def test_the_vocabulary_patterns_work_once_compiled() -> None:
    """The probe above would see them: a value that needs them compiles them, once."""
    from engine.io import clinical

    assert clinical.is_clinical("L4/5")
    assert clinical.is_clinical("95 mm")
    assert not clinical.is_clinical("John Smith")
    assert clinical._shapes.cache_info().currsize == 1


# --- a batch and pandas -------------------------------------------------------------------------


def _run_program(args: list[str], cwd: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, *flags, str(ROOT / "cli.py"), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_local_batch_imports_no_pandas_and_writes_the_same_bytes(
    workers: str, tmp_path: Path
) -> None:
    """pyarrow imports pandas the first time it converts a Python value (0.2 s and 32 MB a
    process); a local batch, its parent and its pool workers alike, has it look while pandas
    cannot be imported (worker.arrow_without_pandas). The outputs are those of the same batch
    run where pyarrow has pandas (in this process, as a library)."""
    pytest.importorskip("pandas")  # else nothing to keep out
    from engine.synth import write_cohort

    source = tmp_path / "cohort.parquet"
    write_cohort(source, 300, 5, missing=0.1, corrupt=0.03)
    args = ["--detail", "ids", "--workers", workers, "--progress", "none"]
    done = _run_program(
        ["batch", str(source), "--out", str(tmp_path / "a.parquet"), *args],
        tmp_path,
        "-X",
        "importtime",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {
        line.rpartition("|")[2].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "pyarrow.lib" in imported  # the probe sees the run (workers: the fork server's)
    # the guard's refused attempts are listed as `pandas` alone; pandas itself is 600 modules
    assert sorted(m for m in imported if m.startswith("pandas.")) == []
    import pandas  # noqa: F401  # pyarrow has pandas here

    here = CliRunner().invoke(
        app, ["batch", str(source), "--out", str(tmp_path / "b.parquet"), *args]
    )
    assert here.exit_code == 0, here.output
    for name in ("a.parquet", "a.parquet.errors.jsonl"):
        other = name.replace("a.", "b.", 1)
        assert (tmp_path / name).read_bytes() == (tmp_path / other).read_bytes(), name


_PANDAS_AFTER = """
import sys
import pyarrow as pa
from engine.batch.worker import arrow_without_pandas
if sys.argv[1] == "before":
    import pandas as pd
arrow_without_pandas()
import pandas as pd
frame = pa.Table.from_pandas(pd.DataFrame({"a": [1.0, None], "b": ["x", None]}))
print(frame.column("a").null_count, frame.column("b").null_count, frame.to_pandas().shape)
if sys.argv[1] == "before":  # pandas' own missing value, as pyarrow reads it with pandas
    print(pa.array([pd.NA, 1.0], from_pandas=True).null_count)
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("pandas_first", [False, True], ids=["pandas after", "pandas before"])
def test_pyarrow_still_converts_pandas_frames_after_the_guard(
    pandas_first: bool, tmp_path: Path
) -> None:
    """The guard keeps pandas out of a process that never hands pyarrow a pandas object; one
    that imports pandas later still converts frames both ways, and where pandas was imported
    already the guard changes nothing (pd.NA stays a missing value)."""
    pytest.importorskip("pandas")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", _PANDAS_AFTER, "before" if pandas_first else "after"],
        env=env,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    expected = "1 1 (2, 2)\n" + ("1\n" if pandas_first else "")
    assert done.stdout == expected
