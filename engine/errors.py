"""Errors a user can cause and fix: bad case input, bad rule files, bad usage.

Each carries where it happened and what was expected; `str(error)` is the one-line message the CLI
prints after "error: ". Anything that is not a UserError is a bug in miss-screen.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class UserError(Exception):
    """Base class of every error caused by input the user can fix (exit code 2)."""


@dataclass
class CaseProblem:
    """One problem with one field of one case."""

    field: str | None
    message: str
    value: object = None


@dataclass
class CaseInputError(UserError):
    """A case (file, row or --set values) that cannot be screened as given."""

    source: str
    problems: list[CaseProblem]
    row: int | None = None
    case_id: str | None = None

    def where(self) -> str:
        parts = [self.source]
        if self.row is not None:
            parts.append(f"row {self.row}" + (f" (case_id {self.case_id})" if self.case_id else ""))
        elif self.case_id:
            parts.append(f"case_id {self.case_id}")
        return ": ".join(parts)

    def lines(self) -> list[str]:
        """One line per problem, each naming where, the field, the value and what was expected."""
        where = self.where()
        return [
            f"{where}: {p.field}: {p.message}" if p.field else f"{where}: {p.message}"
            for p in self.problems
        ]

    def __str__(self) -> str:
        return "\n".join(self.lines())


@dataclass
class RuleFileError(UserError):
    """A rule file (or condition text) that cannot be loaded."""

    message: str
    path: str | None = None
    line: int | None = None
    key: str | None = None
    extra: list[RuleFileError] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [self._line(), *(e._line() for e in self.extra)]

    def _line(self) -> str:
        where = self.path or "<rules>"
        if self.line is not None:
            where += f":{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"

    def __str__(self) -> str:
        return "\n".join(self.lines())


class UsageError(UserError):
    """A command-line option or argument that does not make sense."""


class LinesError(UserError):
    """Several problems found at once, each printed on its own `error:` line (the first is the
    message)."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__(lines[0])
        self._lines = lines

    def lines(self) -> list[str]:
        return self._lines


class ProblemLines:
    """Error lines for a LinesError, at most `limit` kept and the rest only counted: a file with
    two million bad rows gives 20 lines and "... and 1,999,980 more", in bounded memory."""

    def __init__(self, limit: int = 20) -> None:
        self.limit = limit
        self.shown: list[str] = []
        self.more = 0

    def add(self, line: str) -> None:
        if len(self.shown) < self.limit:
            self.shown.append(line)
        else:
            self.more += 1

    def __bool__(self) -> bool:
        return bool(self.shown)

    def lines(self) -> list[str]:
        return self.shown + ([f"... and {self.more:,} more like these"] if self.more else [])
