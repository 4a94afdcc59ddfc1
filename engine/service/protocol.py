"""uvicorn's HTTP/1.1 protocol with the deadlines and the connection cap it lacks.

uvicorn bounds the request head's size (h11) and the idle time between requests, but not the
time a client may take to send a request: a client that sends one header line every few seconds
holds a connection, and its descriptor, for ever (slowloris). With 1,100 of them on a
1024-descriptor limit, accept() failed and a normal GET waited 28.8 s (issue 26). uvicorn's
`limit_concurrency` answers 503 only once a request head is complete, so it cannot help; its
issue 157 (a request-start timeout) is open. Hence this subclass:

- a request head must be complete within `header_timeout` seconds of the connection (or of the
  first byte of a later request on it), and its body within `body_timeout` seconds of the head;
  otherwise the connection is closed (408 when something was sent and nothing answered);
- at most `cap` connections are open: a new one first closes the oldest connection that is
  waiting on its client (a head or body still coming, or idle between requests), so held
  connections cannot lock out a normal request; when every connection is busy being answered,
  the new one gets a 503;
- a request head (its line and headers) over `max_head_bytes` is answered 431, whether it
  arrives slowly or at once (h11's own limit lets a large head sent whole through).

A connection whose request is complete is never closed for the cap: its answer is being made.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections import OrderedDict
from typing import Any, ClassVar, Literal

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

log = logging.getLogger("miss_screen.service")

Phase = Literal["head", "body", "busy", "idle"]
SHED_PAUSE = 0.5  # seconds between two sheddings for exhausted descriptors
_HEAD_END = re.compile(rb"\n\r?\n")  # the blank line that ends a request head (h11's reading)


def _answer(status: int, reason: str) -> bytes:
    body = f"{status} {reason}\n".encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


TIMEOUT_408 = _answer(408, "Request Timeout")
BUSY_503 = _answer(503, "Service Unavailable")
TOO_LARGE_431 = _answer(431, "Request Header Fields Too Large")


class ConnectionBook:
    """The open connections of one server; those waiting on their client, oldest first."""

    def __init__(self, cap: int, header_timeout: float, body_timeout: float) -> None:
        self.cap = cap
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        # weak: a connection asyncio fails to set up after making its protocol is never told
        # connection_lost, and must not hold a place for ever
        self.open: weakref.WeakSet[GuardedH11Protocol] = weakref.WeakSet()
        self.waiting: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.closing: weakref.WeakSet[GuardedH11Protocol] = weakref.WeakSet()
        self._last_emergency = -SHED_PAUSE
        self._next_cap_note = 0.0

    def admit(self, protocol: GuardedH11Protocol) -> bool:
        """Count a new connection in, closing the oldest waiting ones to stay within the cap;
        False when every other connection is busy and the new one must be refused."""
        while len(self.open) - len(self.closing) >= self.cap and self.waiting:
            now = time.monotonic()
            if now >= self._next_cap_note:  # a hot path in a flood: no log record each time
                self._next_cap_note = now + 1
                log.warning(
                    "oldest waiting connection closed: %d connections open (the cap)", self.cap
                )
            self.shed(next(iter(self.waiting)))
        self.open.add(protocol)
        return len(self.open) - len(self.closing) <= self.cap

    def shed(self, protocol: GuardedH11Protocol) -> None:
        self.waiting.pop(protocol, None)
        self.closing.add(protocol)
        protocol.close_for("cap")

    def shed_for_descriptors(self) -> None:
        """accept() ran out of descriptors (something else holds them): close the oldest tenth
        of the waiting connections, at most once per SHED_PAUSE."""
        now = time.monotonic()
        if now - self._last_emergency < SHED_PAUSE:
            return
        self._last_emergency = now
        log.warning("oldest waiting connections closed: out of file descriptors")
        for protocol in list(self.waiting)[: max(1, len(self.waiting) // 10)]:
            self.shed(protocol)

    def set_waiting(self, protocol: GuardedH11Protocol, waiting: bool) -> None:
        if waiting and protocol in self.open and protocol not in self.closing:
            self.waiting[protocol] = None
            self.waiting.move_to_end(protocol)
        else:
            self.waiting.pop(protocol, None)

    def forget(self, protocol: GuardedH11Protocol) -> None:
        self.open.discard(protocol)
        self.waiting.pop(protocol, None)
        self.closing.discard(protocol)


class GuardedH11Protocol(H11Protocol):
    """H11Protocol with request deadlines and the server's ConnectionBook (`book`, set by
    `protocol_class`)."""

    book: ClassVar[ConnectionBook]
    max_head_bytes: ClassVar[int]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.phase: Phase = "head"
        self.head_bytes = 0  # of the request head being received
        self.head_tail = b""  # its last bytes, where the blank line ending it may begin
        self.deadline: asyncio.TimerHandle | None = None
        self.seen_cycle: object = None
        self.admitted = self.book.admit(self)  # at accept time, before its first byte

    # --- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.admitted:
            log.warning("connection refused: all %d connections are busy", self.book.cap)
            self.book.closing.add(self)
            self.close_for("full")
            return
        self.book.set_waiting(self, True)
        self._arm(self.book.header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.phase == "idle":  # the first bytes of the next request on this connection
            self.phase = "head"
            self.head_bytes = 0
            self.head_tail = b""
            self._arm(self.book.header_timeout)
        if self.phase == "head" and not self._head_fits(data):
            log.warning("request head over %d bytes refused (431)", self.max_head_bytes)
            self._disarm()
            self.transport.write(TOO_LARGE_431)
            self.transport.close()
            return
        super().data_received(data)
        self._follow()

    def _head_fits(self, data: bytes) -> bool:
        """Whether the head being received still fits in max_head_bytes with `data`.

        h11's max_incomplete_event_size bounds only a head still incomplete: a larger head
        sent whole is parsed. Here the blank line ending the head must come within the limit.
        """
        room = self.max_head_bytes - self.head_bytes
        self.head_bytes += len(data)
        if self.head_bytes <= self.max_head_bytes:
            self.head_tail = (self.head_tail + data)[-3:]
            return True
        return _HEAD_END.search(self.head_tail + data[: max(room, 0)]) is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.book.forget(self)
        super().connection_lost(exc)

    # --- uvicorn hooks ---------------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start the next pipelined request
        if self.transport.is_closing():
            return
        if self.cycle is not self.seen_cycle:
            self._follow()
        else:
            self.phase = "idle"  # uvicorn's keep-alive timeout runs now
            self._disarm()
            self.book.set_waiting(self, True)

    # --- deadlines -------------------------------------------------------------------------

    def _follow(self) -> None:
        """Move to the phase the parsed request is in: its body is coming, or it is complete."""
        cycle = self.cycle
        if cycle is None or self.transport.is_closing():
            return
        if cycle is not self.seen_cycle:  # a request head is complete
            self.seen_cycle = cycle
            self.phase = "body"
            self._arm(self.book.body_timeout)
        if self.phase == "body" and not cycle.more_body:  # the whole request is in
            self.phase = "busy"
            self._disarm()
            self.book.set_waiting(self, False)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expired(self) -> None:
        self.deadline = None
        if self.phase == "head":
            log.warning(
                "connection closed: no complete request head within %g s", self.book.header_timeout
            )
        elif self.phase == "body":
            log.warning(
                "connection closed: the request body did not arrive within %g s",
                self.book.body_timeout,
            )
        self.close_for("timeout")

    def close_for(self, reason: Literal["cap", "full", "timeout"]) -> None:
        """Close this connection, answering a client that awaits an answer: 408 to a head or
        body that timed out, 503 to a body cut short for the cap and to a connection refused.
        A head cut short for the cap is closed without a word: in a flood, that answer would
        cost the server as much again as the connection itself."""
        self._disarm()
        if self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle if self.phase == "body" else None
        if cycle is not None:
            self.scope.setdefault("extensions", {})["miss_screen.closed"] = {"reason": reason}
            cycle.disconnected = True  # the application's next receive() says so
            cycle.message_event.set()
        body_unanswered = cycle is not None and not cycle.response_started
        if reason == "timeout" and (body_unanswered or (self.phase == "head" and self.head_bytes)):
            self.transport.write(TIMEOUT_408)
        elif reason == "full" or (reason == "cap" and body_unanswered):
            self.transport.write(BUSY_503)
        self.transport.close()


def protocol_class(
    cap: int, header_timeout: float, body_timeout: float, max_head_bytes: int
) -> tuple[type[GuardedH11Protocol], ConnectionBook]:
    """A GuardedH11Protocol class bound to a new ConnectionBook, for one server."""
    book = ConnectionBook(cap, header_timeout, body_timeout)

    class Protocol(GuardedH11Protocol):
        pass

    Protocol.book = book
    Protocol.max_head_bytes = max_head_bytes
    return Protocol, book
