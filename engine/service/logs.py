"""The service's log: one line per kind of event, at most one per kind per minute, no traceback.

Under attack every error repeats: uvicorn's and asyncio's default handlers wrote a traceback per
refused accept (146 MB in 30 s with 1,100 slow connections on a 1024-descriptor limit). Here a
record's kind is its logger, its message template and its exception's type; the first of a kind
in a window is written, the rest are counted and the count is said on the next line of that kind
(and at shutdown). An exception is named by its type (and errno), never by its text, which may
hold what a request sent.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

WINDOW = 60.0  # seconds: one line per kind of event in this time at most
MAX_KINDS = 1000  # kinds remembered; a library that logs preformatted text cannot grow it
_LEVEL_WORDS = {logging.DEBUG: "debug", logging.INFO: "note", logging.WARNING: "warning"}


def exception_words(exc: BaseException) -> str:
    """An exception as a log may name it: its type, and for an OSError its errno in words."""
    name = type(exc).__name__
    code = exc.errno if isinstance(exc, OSError) else None
    if isinstance(code, int):
        return f"{name} {errno.errorcode.get(code, code)}: {os.strerror(code)}"
    return name


@dataclass
class _Kind:
    since: float
    line: str  # the last line written of this kind
    dropped: int = 0


class RateLimit(logging.Filter):
    """Lets the first record of each kind through per `window` seconds, as one line."""

    def __init__(self, window: float = WINDOW, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window = window
        self.clock = clock
        self.kinds: OrderedDict[tuple[str, str, str], _Kind] = OrderedDict()

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        key = (record.name, str(record.msg), type(exc).__name__ if exc else "")
        now = self.clock()
        kind = self.kinds.get(key)
        if kind is not None and now - kind.since < self.window:
            kind.dropped += 1
            return False
        dropped = kind.dropped if kind is not None else 0
        lines = record.getMessage().splitlines()
        message = lines[0] if lines else ""
        if exc is not None:
            message += f" ({exception_words(exc)})"
        self.kinds[key] = _Kind(since=now, line=message)
        self.kinds.move_to_end(key)
        while len(self.kinds) > MAX_KINDS:
            self.kinds.popitem(last=False)
        if dropped:
            message += f" ({dropped} more like this in the last {self.window:g} s)"
        record.msg, record.args = message, None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True

    def summary(self) -> list[str]:
        """What was counted but not yet said, one line per kind (for the end of the run)."""
        kinds = self.kinds.values()
        return [f"{kind.dropped} more of: {kind.line}" for kind in kinds if kind.dropped]


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        word = _LEVEL_WORDS.get(record.levelno, "error")
        return f"{word}: {record.getMessage()}"


def configure(window: float = WINDOW) -> RateLimit:
    """One stderr handler for every logger of the process, behind one RateLimit."""
    limit = RateLimit(window)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(limit)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("miss_screen.service").setLevel(logging.INFO)
    return limit


def loop_exception_handler(
    on_descriptors_exhausted: Callable[[], None],
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """An event loop's exception handler: one line through the log, and, when accept() ran out
    of descriptors, `on_descriptors_exhausted` to free some (the loop retries in a second)."""
    log = logging.getLogger("asyncio")

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            on_descriptors_exhausted()
        message = str(context.get("message") or "event loop error")
        info = (type(exc), exc, exc.__traceback__) if isinstance(exc, BaseException) else None
        log.error(message, exc_info=info)

    return handle
