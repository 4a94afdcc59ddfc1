"""The package (issue 26 item 9): a core install that screens cases and batches CSV, JSONL and
Parquet; each extra named in one error line when its feature is asked for; the version written
once (pyproject.toml) and read from the package metadata.

A missing extra is simulated, not uninstalled: a meta-path finder (a sitecustomize.py first on
PYTHONPATH, so the batch's fork server and workers refuse too) makes importing its modules fail
as if they were absent. `make wheel-check` does the same with a real core-only install.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import engine
from engine.cli import app, handle_errors
from engine.extras import EXTRA_MODULES
from tests.conftest import ROOT

EXE = Path(sys.executable).parent / "miss-screen"
EXAMPLE = str(ROOT / "cases" / "examples" / "stenosis-l4-l5.yaml")
COHORT = str(ROOT / "cases" / "cohort" / "synthetic-500.csv")
LABELS = str(ROOT / "cases" / "labels" / "example-labels.csv")
FHIR = str(next((ROOT / "cases" / "fhir").glob("*.json")))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OPTIONAL = sorted({m.partition(".")[0] for ms in EXTRA_MODULES.values() for m in ms})

REFUSE = """\
import os, sys

_REFUSED = frozenset(os.environ["MISS_SCREEN_TEST_REFUSE"].split(","))


class _Refuse:
    '''Imports of the refused top-level modules fail as if they were not installed.'''

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in _REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Refuse())
"""


def run_without(
    modules: list[str], args: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Run the program as if `modules` were not installed."""
    site = tmp_path / "refuse"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(REFUSE)
    env = {
        **os.environ,
        "MISS_SCREEN_TEST_REFUSE": ",".join(modules),
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [str(EXE), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.mark.hostile
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("extra", "args"),
    [
        ("report", ["batch", COHORT, "--out", "r.jsonl", "--report", "r.html"]),
        ("research", ["agree", "--labels", LABELS]),
        ("fhir", ["screen", "--fhir", FHIR]),
        ("service", ["serve", "--port", "0"]),
        ("dask", ["batch", COHORT, "--out", "r.jsonl", "--executor", "dask"]),
    ],
)
def test_a_missing_extra_is_one_line_naming_it(
    extra: str, args: list[str], tmp_path: Path
) -> None:
    done = run_without(OPTIONAL, args, tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: miss-screen "), done.stderr
    assert f"needs the '{extra}' extra" in done.stderr
    assert f"pip install 'miss-screen[{extra}]'" in done.stderr
    assert not (tmp_path / "r.jsonl").exists()  # refused before any work


@pytest.mark.hostile
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "args",
    [
        ["screen", EXAMPLE, "--format", "brief"],
        ["screen", "--set", "diagnosis=disc_herniation", "--format", "json"],
        ["batch", COHORT, "--out", "r.csv", "--summary", "s.json", "--workers", "2"],
        ["batch", COHORT, "--out", "r.parquet", "--workers", "1"],
        ["batch", COHORT, "--out", "r.jsonl", "--detail", "full", "--workers", "1"],
        ["rules", "check"],
        ["rules", "diff", "rules", "rules", "--cohort", COHORT, "--out", "d.md"],
        ["synth", "50", "--out", "s.parquet"],
    ],
    ids=lambda a: " ".join(a[:2]) if a[0] != "batch" else f"batch {Path(a[3]).suffix}",
)
def test_the_core_install_screens_and_batches(args: list[str], tmp_path: Path) -> None:
    """Every optional module refused, as after a plain `pip install .`: the core works."""
    if args[:2] == ["rules", "diff"]:
        args = ["rules", "diff", str(ROOT / "rules"), str(ROOT / "rules"), *args[4:]]
    done = run_without(OPTIONAL, [*args, *(["--progress", "none"] if args[0] == "batch" else [])],
                       tmp_path)
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr, done.stderr
    if args[0] == "batch":
        assert "(balanced)" in done.stderr
        assert (tmp_path / args[3]).stat().st_size > 0


@pytest.mark.timeout(60)
def test_a_missing_module_deep_in_a_command_is_the_same_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An import no `require` guarded still names the extra (exit 2), never a traceback."""

    @handle_errors
    def rules_sweep() -> None:
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib.pyplot")

    with pytest.raises(typer.Exit) as exit_info:
        rules_sweep()
    assert exit_info.value.exit_code == 2
    err = capsys.readouterr().err
    assert err == (
        "error: miss-screen rules sweep needs the 'report' extra (matplotlib.pyplot is not "
        "installed): pip install 'miss-screen[report]'\n"
    )


@pytest.mark.timeout(60)
def test_ctrl_c_while_a_class_is_built_is_an_interrupt_not_our_bug(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A Ctrl-C that lands while a module imported on first use builds a class reaches the
    command as a RuntimeError caused by it (Python 3.11, __set_name__): still the one line
    and exit 130 of any Ctrl-C, never "internal error" and a traceback (it once was, in
    tests/test_hostile.py's Ctrl-C at 0.2 s)."""

    class Interrupting:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    @handle_errors
    def rules_check() -> None:
        try:
            type("Built", (), {"field": Interrupting()})
        except RuntimeError as exc:  # 3.11 wraps it; 3.12 passes it on as it is
            assert isinstance(exc.__cause__, KeyboardInterrupt)  # noqa: PT017
            raise

    with pytest.raises(typer.Exit) as exit_info:
        rules_check()
    assert exit_info.value.exit_code == 130
    assert capsys.readouterr().err == "error: interrupted\n"


@pytest.mark.timeout(60)
def test_every_extra_is_declared_and_all_holds_them() -> None:
    """engine/extras.py and pyproject.toml name the same extras; `all` installs every one."""
    declared = PYPROJECT["project"]["optional-dependencies"]
    assert set(EXTRA_MODULES) <= set(declared)
    (everything,) = declared["all"]
    named = set(re.fullmatch(r"miss-screen\[(.*)\]", everything)[1].split(","))  # type: ignore[index]
    assert named == set(EXTRA_MODULES)
    core = " ".join(PYPROJECT["project"]["dependencies"])
    for module in OPTIONAL:  # nothing optional is required by the core
        assert module not in core.lower(), module


@pytest.mark.timeout(60)
def test_the_version_is_the_metadata_one(tmp_path: Path) -> None:
    """Written once, in pyproject.toml: --version, engine.__version__ and the metadata agree,
    and no module of the package writes a version of its own."""
    version = importlib.metadata.version("miss-screen")
    assert engine.__version__ == version
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"miss-screen {version}\n"
    assert version == PYPROJECT["project"]["version"]  # the shared venv installs this checkout
    assignments = [
        str(p)
        for p in (ROOT / "engine").rglob("*.py")
        if re.search(r"^__version__\s*=", p.read_text(), re.MULTILINE)
    ]
    assert assignments == []


@pytest.mark.timeout(60)
def test_the_wheel_holds_only_the_engine_package() -> None:
    """Only `engine` goes into site-packages (the cli.py shim stays in the checkout)."""
    wheel = PYPROJECT["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert wheel["only-include"] == ["engine"]
    assert set(wheel["force-include"].values()) == {"engine/bundled_rules"}
    assert PYPROJECT["project"]["scripts"] == {"miss-screen": "engine.cli:main"}
