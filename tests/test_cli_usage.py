"""The README's usage blocks are the command line's own (issue 26 item 8: help texts match the
README). They are generated from the commands that --help describes (tests/readme_usage.py), so
this fails when an option is added, renamed or dropped without `python tests/readme_usage.py`."""

from __future__ import annotations

import pytest
import typer

from engine.cli import app
from tests.readme_usage import README, block, expected_readme, usage_blocks


@pytest.mark.timeout(60)
def test_the_readme_usage_blocks_are_the_commands_own() -> None:
    text = README.read_text()
    assert expected_readme(text) == text, "stale usage block: run python tests/readme_usage.py"


@pytest.mark.timeout(60)
def test_every_command_is_in_a_usage_block() -> None:
    shown = "".join(written for _, written in usage_blocks(README.read_text()))
    every = list(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for line in block(every).splitlines():
        if line.startswith("miss-screen "):
            assert line in shown, f"not in the README's usage blocks: {line}"
