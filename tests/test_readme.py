"""The README is executable: every `$ miss-screen ...` and `$ python cli.py ...` line is run.

Each command in a ```console block of README.md is followed by the output it must print. Every
expected line other than `...` must appear in the output, in order (compared after .rstrip()); a
`...` line stands for any number of lines, and `…` inside a line for any text within it (a value
that every rule edit changes, such as the ruleset's sha256 or its rule count). The exit code
must be 0 unless the command ends with a `# exits N` comment. `miss-screen` lines run in-process
through typer's CliRunner (a `< FILE` redirect becomes the runner's stdin); `python cli.py` lines
run as a real process. Other `$` lines (`$ make demo`) are not run here. ```pycon blocks are run
as doctests (see the end of this file).
"""

from __future__ import annotations

import glob
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
EXITS = re.compile(r"\s+#\s*exits\s+(\d+)\s*$")
TESTED_PREFIXES = ("miss-screen", "python cli.py")


@dataclass(frozen=True)
class Example:
    """One tested command of the README, with the output lines expected under it."""

    line: int
    command: str
    expected: tuple[str, ...]
    exit_code: int

    @property
    def id(self) -> str:
        return f"README.md:{self.line}:{' '.join(self.command.split()[:3])}"


def readme_examples(text: str) -> list[Example]:
    """Every tested command in the README's console blocks, with its expected output."""
    examples: list[Example] = []
    in_console = False
    current: tuple[int, str] | None = None
    expected: list[str] = []

    def close() -> None:
        if current is not None:
            lineno, command = current
            exits = EXITS.search(command)
            examples.append(
                Example(
                    line=lineno,
                    command=EXITS.sub("", command),
                    expected=tuple(expected),
                    exit_code=int(exits.group(1)) if exits else 0,
                )
            )

    for lineno, line in enumerate(text.splitlines(), start=1):
        if not in_console:
            in_console = line.strip() == "```console"
            continue
        if line.strip() == "```":
            close()
            in_console, current, expected = False, None, []
        elif line.startswith("$ "):
            close()
            command = line[2:].strip()
            current = (lineno, command) if command.startswith(TESTED_PREFIXES) else None
            expected = []
        elif current is not None:
            expected.append(line.rstrip())
    return examples


EXAMPLES = readme_examples(README.read_text(encoding="utf-8"))


def split_command(command: str) -> tuple[list[str], str | None]:
    """Arguments after the program name (globs expanded) and the file redirected to stdin."""
    words = shlex.split(command)
    assert not {"|", ">", ">>", "&&", ";"} & set(words), f"not runnable in-process: {command}"
    stdin_file = None
    if "<" in words:
        at = words.index("<")
        stdin_file = words[at + 1]
        words = words[:at] + words[at + 2 :]
    program_words = 2 if words[0] == "python" else 1
    args: list[str] = []
    for word in words[program_words:]:
        matches = sorted(glob.glob(word)) if glob.has_magic(word) else []
        args.extend(matches or [word])
    return args, stdin_file


def run(example: Example) -> tuple[int, str]:
    """Run one README command from the repository root; return its exit code and all output."""
    args, stdin_file = split_command(example.command)
    stdin = Path(stdin_file).read_text(encoding="utf-8") if stdin_file else None
    if example.command.startswith("python "):
        proc = subprocess.run(
            [sys.executable, "cli.py", *args],
            cwd=ROOT,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return proc.returncode, proc.stdout + proc.stderr
    result = CliRunner().invoke(app, args, input=stdin, prog_name="miss-screen")
    output = result.stdout + result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        output += f"\n(exception: {result.exception!r})"
    return result.exit_code, output


def missing_line(expected: tuple[str, ...], output: str) -> str | None:
    """The first expected line (other than `...`) not found in order in the output, if any."""
    lines = iter(line.rstrip() for line in ANSI.sub("", output).splitlines())
    for want in expected:
        if want == "...":
            continue
        if not any(line_matches(line, want) for line in lines):
            return want
    return None


def line_matches(line: str, want: str) -> bool:
    """The whole line equals the expected one, each `…` in it standing for any text."""
    if "…" not in want:
        return line == want
    pattern = ".*".join(re.escape(part) for part in want.split("…"))
    return re.fullmatch(pattern, line) is not None


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.id)
def test_readme_example(example: Example, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    exit_code, output = run(example)
    assert exit_code == example.exit_code, f"$ {example.command}\n{output}"
    assert "Traceback" not in output, output
    missing = missing_line(example.expected, output)
    assert missing is None, (
        f"$ {example.command}\nexpected line not found in order:\n{missing}\n--- output:\n{output}"
    )


def test_readme_documents_the_main_commands() -> None:
    commands = [e.command for e in EXAMPLES]
    assert len(commands) >= 10, commands
    for needed in ("screen", "--format brief", "--set", "rules check", "python cli.py"):
        assert any(needed in c for c in commands), needed
    assert any(e.exit_code == 2 for e in EXAMPLES), "no bad-input example"
    assert all(e.expected for e in EXAMPLES), "a command with no expected output tests nothing"


def test_missing_line_needs_order_and_whole_lines() -> None:
    output = "a\nb  \nc\n"
    assert missing_line(("a", "...", "c"), output) is None
    assert missing_line(("b",), output) is None
    assert missing_line(("c", "a"), output) == "a"
    assert missing_line(("b c",), output) == "b c"
    assert missing_line(("",), "a") == ""
    assert missing_line(("sha256 …)",), "x\nsha256 0123abcd)\n") is None
    assert missing_line(("a … c",), "a b c\n") is None
    assert missing_line(("a … c",), "a b c d\n") == "a … c"  # still the whole line
    assert missing_line(("a … c",), "x a b c\n") == "a … c"


# --- Python examples ----------------------------------------------------------------------------
# Every ```pycon block of README.md runs as a doctest in a fresh namespace, from the checkout's
# root: each `>>>` line's output must match what follows it (ELLIPSIS: `...` in an output line
# stands for any text; NORMALIZE_WHITESPACE: runs of spaces compare equal).

PYCON = re.compile(r"^```pycon\n(.*?)^```", re.S | re.M)


def readme_pycon_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, source) of every pycon block of the README."""
    return [(text[: m.start()].count("\n") + 2, m.group(1)) for m in PYCON.finditer(text)]


@pytest.mark.parametrize(
    ("line", "block"), readme_pycon_blocks(README.read_text()), ids=lambda v: str(v)[:30]
)
@pytest.mark.timeout(120)
def test_readme_python_example(line: int, block: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import doctest

    monkeypatch.chdir(ROOT)
    test = doctest.DocTestParser().get_doctest(block, {}, f"README.md:{line}", str(README), line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    failures: list[str] = []
    runner.run(test, out=failures.append)
    assert runner.failures == 0, "".join(failures)
    assert runner.tries >= 1


def test_the_readme_has_a_python_example() -> None:
    assert readme_pycon_blocks(README.read_text()), "the Python API section lost its example"
