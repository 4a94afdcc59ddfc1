"""Where the bundled rule set lives: inside the installed package, or beside it in a checkout.

A wheel carries `rules/` as `engine/bundled_rules/` (pyproject.toml, hatch force-include), so a
non-editable install screens with no repository around it; a source checkout or editable install
reads the repository's own `rules/`, which is the same set.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def bundled_rules_dir() -> Path:
    """The rules directory that ships with this copy of miss-screen."""
    packaged = _PACKAGE / "bundled_rules"
    return packaged if packaged.is_dir() else _PACKAGE.parent / "rules"
