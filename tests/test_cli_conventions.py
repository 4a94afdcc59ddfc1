"""The command line behaves like the tools people know (issue 26 item 8).

A closed pipe ends quietly with exit 141; a signal to the whole process group gives one
`error: interrupted` line, not one per process; a library's multi-line message is one `error:`
line; -h is --help; no flag shows a value placeholder; NO_COLOR leaves no escape sequence on a
terminal. Each runs the real program (the console script) where the process matters.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import typer
from typer.testing import CliRunner

from engine.cli import CLOSED_PIPE_EXIT, app
from tests.conftest import ROOT

pytestmark = pytest.mark.hostile

EXE = Path(sys.executable).parent / "miss-screen"
EXAMPLES = sorted(str(p) for p in (ROOT / "cases" / "examples").glob("*.yaml"))
COHORT = str(ROOT / "cases" / "cohort" / "synthetic-500.csv")
runner = CliRunner()


def command_paths() -> list[list[str]]:
    """Every command and group of the program, as the words that name it (the top is [])."""
    paths: list[list[str]] = []

    def walk(command: object, path: list[str]) -> None:
        paths.append(path)
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, name])

    walk(typer.main.get_command(app), [])
    return paths


# --- a closed pipe: quiet, exit 141 ------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "args",
    [
        ["screen", *EXAMPLES, *EXAMPLES],  # text, through rich (about 130 kB)
        ["screen", *EXAMPLES, "--format", "json"],  # plain writes (about 250 kB)
        ["batch", COHORT, COHORT, "--out", "-", "--errors", "ERRORS", "--workers", "2"],
    ],
    ids=["screen-text", "screen-json", "batch-out-dash"],
)
def test_a_closed_pipe_ends_quietly_with_141(args: list[str], tmp_path: Path) -> None:
    """`miss-screen ... | head -1`: no traceback, no "internal error", exit 141 as for `yes`."""
    args = [str(tmp_path / "errors.jsonl") if a == "ERRORS" else a for a in args]
    process = subprocess.Popen(
        [str(EXE), *args, *(["--progress", "none"] if args[0] == "batch" else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline()  # what head -1 reads, then it closes the pipe
    process.stdout.close()
    stderr = process.communicate(timeout=100)[1]
    assert process.returncode == CLOSED_PIPE_EXIT == 141, stderr
    assert "Traceback" not in stderr, stderr
    assert "internal error" not in stderr, stderr
    assert "Exception ignored" not in stderr, stderr
    assert "error:" not in stderr, stderr


# --- a signal to the whole process group: one line --------------------------------------------


@pytest.fixture(scope="module")
def big_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cohort") / "big.csv"
    subprocess.run(
        [str(EXE), "synth", "60000", "--out", str(path)], check=True, capture_output=True
    )
    return path


def _wait_for_workers(pid: int, count: int, timeout: float = 90) -> None:
    """Until the batch runs `count` worker processes (the fork server's children)."""
    deadline = time.monotonic() + timeout
    parent = psutil.Process(pid)
    while time.monotonic() < deadline:
        servers = [p for p in parent.children() if "forkserver" in " ".join(p.cmdline())]
        if servers and len(servers[0].children()) >= count:
            return
        time.sleep(0.02)
    pytest.fail("the batch never started its workers")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_signal_to_the_process_group_is_one_error_line(
    big_cohort: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    """`timeout`, a closed terminal or Ctrl-C signal every process of the group: the batch,
    the fork server and each worker. Only the batch speaks, once."""
    process = subprocess.Popen(
        [str(EXE), "batch", str(big_cohort), "--out", str(tmp_path / "o.jsonl"),
         "--workers", "2", "--progress", "none"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a shell's job is
    )
    _wait_for_workers(process.pid, 2)
    os.killpg(process.pid, signum)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 128 + signum, stderr
    assert stderr.splitlines() == ["error: interrupted"], stderr
    assert not (tmp_path / "o.jsonl").exists()


# --- one error line per problem ----------------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("char", ["\x01", "\x07", "\x1b", "\x7f"])
def test_a_yaml_control_character_is_one_error_line(tmp_path: Path, char: str) -> None:
    case = tmp_path / "case.yaml"
    case.write_text(f"case_id: C-1\nage_years: 40\ndiagnosis: \"ste{char}nosis\"\n")
    result = runner.invoke(app, ["screen", str(case)])
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: {case}: malformed YAML: unacceptable character #x")
    assert result.stderr.endswith(" at line 3\n"), result.stderr


# --- -h, and help without placeholders after flags ---------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "top")
def test_h_is_help_and_flags_show_no_placeholder(path: list[str]) -> None:
    short = runner.invoke(app, [*path, "-h"])
    long = runner.invoke(app, [*path, "--help"])
    assert short.exit_code == long.exit_code == 0, short.output
    assert short.output == long.output
    assert "-h, --help" in long.output
    assert "<bool>" not in long.output
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]  # type: ignore[attr-defined]
    flags = [p for p in command.params if getattr(p, "is_flag", False)]
    for flag in flags:
        line = next(
            (ln for ln in long.output.splitlines() if ln.strip().startswith(flag.opts[0])), ""
        )
        # the flag, then two spaces and its help (or the help on the next line): no value
        assert re.match(rf"\s+{re.escape(flag.opts[0])}(\s\s|$)", line), line


# --- NO_COLOR, on a real terminal ---------------------------------------------------------------


def _on_a_terminal(args: list[str], env: dict[str, str]) -> str:
    """Run the program with a pseudo-terminal for stdout and stderr; what it wrote there."""
    main, secondary = pty.openpty()
    process = subprocess.Popen(
        [str(EXE), *args], stdout=secondary, stderr=secondary, stdin=subprocess.DEVNULL, env=env
    )
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the program closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(main)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "args",
    [["rules", "show", "ACC-008"], ["rules", "list"], ["screen", EXAMPLES[0]], ["batch", "-h"]],
    ids=["rules-show", "rules-list", "screen", "help"],
)
def test_no_color_leaves_no_escape_sequence_on_a_terminal(args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PY_COLORS")}
    env.update(TERM="xterm-256color", COLUMNS="100")
    if args[0] == "rules" and args[1] == "show":  # the control: styled when colour is allowed
        env.pop("NO_COLOR", None)
        assert "\x1b[" in _on_a_terminal(args, env)
    plain = _on_a_terminal(args, {**env, "NO_COLOR": "1"})
    assert plain.strip(), "the program wrote nothing"
    assert "\x1b" not in plain, repr(plain[:300])


# --- batch --help says what the default JSONL holds ----------------------------------------------


@pytest.mark.timeout(120)
def test_batch_help_says_what_the_default_jsonl_holds(tmp_path: Path) -> None:
    """The help once said JSONL holds full results while the default is compact (ids, with the
    rule texts once in OUT.rules.json): the help and a default run now agree."""
    text = " ".join(runner.invoke(app, ["batch", "-h"]).output.split())
    assert "full results" not in text
    assert "jsonl (one result per line; see --detail)" in text
    assert "or full (the whole result per line). Default: ids." in text
    out = tmp_path / "r.jsonl"
    done = runner.invoke(app, ["batch", COHORT, "--out", str(out), "--workers", "1",
                               "--progress", "none"])
    assert done.exit_code == 0, done.stderr
    assert (tmp_path / "r.jsonl.rules.json").is_file()  # the rule texts, once
    first = out.read_text().splitlines()[0]
    full = tmp_path / "f.jsonl"
    done = runner.invoke(app, ["batch", COHORT, "--out", str(full), "--workers", "1",
                               "--progress", "none", "--detail", "full"])
    assert done.exit_code == 0, done.stderr
    assert len(first) < len(full.read_text().splitlines()[0])  # ids: the compact line
