"""The README's usage blocks, generated from the command line itself (the source of --help).

A block follows a marker line naming the commands it shows (a group stands for its commands):

    <!-- usage: screen batch rules -->
    ```text
    miss-screen screen [CASE]... [--set FIELD=VALUE]... [--format text|json|brief|html] ...
    ```

tests/test_cli_usage.py fails when a block is stale; `python tests/readme_usage.py` rewrites them.
So a new option cannot reach --help without reaching the README, and the README cannot keep an
option the program no longer has. Each synopsis is the command's arguments and options in the
order --help lists them: a value shown by its metavar or its choices (or its name, upper-cased),
an optional one in brackets, a repeatable one followed by `...`, a flag alone.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WIDTH = 100
MARKER = re.compile(
    r"(?P<head>^<!-- usage: (?P<names>[\w ]+) -->\n```text\n)(?P<block>.*?)^```$", re.M | re.S
)


def _root() -> Any:
    from engine.cli import app

    return typer.main.get_command(app)


def _leaves(command: Any, path: list[str]) -> list[tuple[list[str], Any]]:
    subcommands = getattr(command, "commands", None)
    if not subcommands:
        return [(path, command)]
    return [leaf for name, sub in subcommands.items() for leaf in _leaves(sub, [*path, name])]


def _argument(param: Any) -> str:
    name = param.metavar or param.name.upper()
    if not param.required and not name.startswith("["):
        name = f"[{name}]"
    return name + ("..." if param.nargs == -1 else "")


def _option(param: Any) -> str:
    name = max(param.opts, key=len)
    if not param.is_flag:
        choices = param.type_descriptor.choices
        if param.metavar:
            value = param.metavar
        elif choices:
            value = "|".join(str(getattr(c, "value", c)) for c in choices)
        else:
            value = name.lstrip("-").upper().replace("-", "_")
        name = f"{name} {value}"
    if param.required:
        return name
    return f"[{name}]" + ("..." if getattr(param, "multiple", False) else "")


def synopsis(path: list[str], command: Any) -> str:
    """`miss-screen PATH ARGS OPTIONS`, wrapped at WIDTH under the first argument."""
    head = " ".join(["miss-screen", *path])
    words = [
        _argument(p) if p.param_type_name == "argument" else _option(p)
        for p in command.params
        if not getattr(p, "hidden", False)
    ]
    lines = [head]
    for word in words:
        if len(lines[-1]) + 1 + len(word) > WIDTH and lines[-1].strip() != "":
            lines.append(" " * len(head))
        lines[-1] += " " + word
    return "\n".join(lines)


def block(names: list[str]) -> str:
    """The synopses of the named commands (a group: each of its commands), in that order."""
    root = _root()
    synopses = []
    for name in names:
        synopses += [synopsis(path, cmd) for path, cmd in _leaves(root.commands[name], [name])]
    return "\n".join(synopses) + "\n"


def expected_readme(text: str) -> str:
    """The README with every usage block regenerated."""
    return MARKER.sub(lambda m: m["head"] + block(m["names"].split()) + "```", text)


def usage_blocks(text: str) -> list[tuple[str, str]]:
    """(the names after the marker, the block as written) for each usage block."""
    return [(m["names"], m["block"]) for m in MARKER.finditer(text)]


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    README.write_text(expected_readme(README.read_text()))
    print(f"rewrote the usage blocks of {README}")
