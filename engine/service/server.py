"""Running the service: uvicorn on one event loop, with the limits of `serve` (limits.py),
the guarded protocol (protocol.py) and the rate-limited log (logs.py)."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sys
from collections.abc import Sequence

from fastapi import FastAPI

from engine.errors import UsageError
from engine.service.limits import BACKLOG, KEEP_ALIVE, LISTEN_QUEUE, Limits, connection_cap
from engine.service.logs import configure, loop_exception_handler
from engine.service.protocol import protocol_class


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is said (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=LISTEN_QUEUE)
    except OSError as exc:
        shown = f"[{host}]" if ":" in host else host
        code = exc.errno if isinstance(exc.errno, int) and exc.errno > 0 else None
        reason = os.strerror(code) if code else (exc.strerror or str(exc))
        raise UsageError(f"cannot listen on {shown}:{port}: {reason}") from None


def run(app: FastAPI, listener: socket.socket, limits: Limits, forwarded: Sequence[str]) -> None:
    """Serve `app` on `listener` until SIGINT or SIGTERM. `forwarded`: the proxies whose
    X-Forwarded-For and X-Forwarded-Proto are believed (none: those headers are ignored)."""
    import uvicorn

    rate_limit = configure()
    cap = connection_cap(limits.max_connections)
    if cap < limits.max_connections:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        print(
            f"note: at most {cap} connections (not {limits.max_connections}): the open-file "
            f"limit is {soft} (ulimit -n)",
            file=sys.stderr,
        )
    protocol, book = protocol_class(
        cap, limits.header_timeout, limits.body_timeout, limits.max_header_bytes
    )
    config = uvicorn.Config(
        app,
        http=protocol,
        loop="asyncio",
        ws="none",
        backlog=BACKLOG,
        timeout_keep_alive=KEEP_ALIVE,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        proxy_headers=bool(forwarded),
        forwarded_allow_ips=list(forwarded) or None,
        log_config=None,  # logs.configure: one rate-limited line per kind of event
        log_level="warning",
        access_log=False,  # a request's path may hold what should not be written down
        server_header=False,
    )

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            # asyncio listens with the backlog it accepts per turn (kept small so the cap holds
            # between two turns); the kernel's queue is made long again, so a burst of
            # connections waits in it instead of having its SYNs dropped (a second's retry)
            for sock in sockets or ():
                sock.listen(LISTEN_QUEUE)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(loop_exception_handler(book.shed_for_descriptors))
        await Server(config).serve(sockets=[listener])

    try:
        asyncio.run(serve())
    finally:
        listener.close()
        for line in rate_limit.summary():
            print(f"note: {line}", file=sys.stderr)
