"""The limits of `miss-screen serve`: what one client may take of the server.

Each is an option of `serve`; `Limits` holds the defaults once, for the command line, its help
and the README. They are safe facing the open internet without a proxy. The connection cap is
what the open-file limit allows: the soft limit is raised toward the hard one first (as Go's
runtime does), and what is left below it is kept for accept() bursts (BACKLOG connections a
turn of the event loop, a few turns before the oldest is closed) and the process's own files,
up to half the limit.
Nothing heavy is imported here: the command line reads these defaults at start.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# a request body read at most, by default: a patient's Bundle's cap, engine.fhir.MAX_FHIR_BYTES
# (not imported: it would load the FHIR mapper into every command; a test holds them equal)
MAX_BODY_BYTES = 5 * 2**20
BACKLOG = 100  # connections accepted in one turn of the event loop
LISTEN_QUEUE = 4096  # connections the kernel queues until they are accepted (net.core.somaxconn)
RESERVED_FDS = 64  # descriptors kept for the process's own files, threads' and JWKS sockets
KEEP_ALIVE = 5  # seconds an idle connection is kept between two requests (uvicorn's default)


@dataclass(frozen=True)
class Limits:
    """What one client may take of the server; each is an option of `serve`."""

    max_connections: int = 1000
    header_timeout: float = 10.0  # seconds for a request's line and headers
    body_timeout: float = 30.0  # seconds for its body, once the headers are in
    max_header_bytes: int = 16 * 2**10  # the request line and headers together
    max_body_bytes: int = MAX_BODY_BYTES


def connection_cap(requested: int) -> int:
    """The connections this process can hold open: `requested`, or fewer when the open-file
    limit (RLIMIT_NOFILE) leaves less room, after raising its soft limit as far as allowed."""
    margin = RESERVED_FDS + 3 * BACKLOG  # accepted in the turns before the oldest is closed
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = requested + margin
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
            soft = raised
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return requested
    return max(1, min(requested, soft - min(margin, soft // 2)))
