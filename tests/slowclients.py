"""Slow clients for the service's hostile tests: `python tests/slowclients.py PORT COUNT SECONDS`.

Holds COUNT connections to 127.0.0.1:PORT for SECONDS, as a slowloris tool does: each sends the
start of a request head, then one more header line about every CYCLE seconds, never the blank
line that ends the head; a connection the server closes is opened again on its next cycle, so
the attack keeps COUNT connections trying. Prints `holding N` once every connection was opened
once, then one JSON line of counts when done. Loopback only; no third-party import, so that a few
of these processes start fast and each stays under a 1024-descriptor limit.
"""

from __future__ import annotations

import json
import random
import selectors
import socket
import sys
import time

CYCLE = 5.0  # seconds between two header lines of one connection (slowloris waits 15)
HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowclients\r\n"


def _open(port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(3)
    try:
        sock.connect(("127.0.0.1", port))
        sock.sendall(HEAD)
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)
    return sock


def hold(port: int, count: int, seconds: float) -> dict[str, int]:
    """Keep `count` slow connections trying for `seconds`; the counts of what happened."""
    rng = random.Random(port + count)  # noqa: S311  # jitter, not a secret
    selector = selectors.DefaultSelector()
    due: dict[int, float] = {}  # slot -> when its next line (or reconnection) is due
    socks: dict[int, socket.socket] = {}
    counts = {"opened": 0, "failed": 0, "closed_by_server": 0, "answered": 0, "max_open": 0}

    def start(slot: int) -> None:
        sock = _open(port)
        due[slot] = time.monotonic() + CYCLE * (0.5 + rng.random())
        if sock is None:
            counts["failed"] += 1
            return
        counts["opened"] += 1
        socks[slot] = sock
        selector.register(sock, selectors.EVENT_READ, slot)

    def drop(slot: int) -> None:
        sock = socks.pop(slot)
        selector.unregister(sock)
        sock.close()
        counts["closed_by_server"] += 1

    for slot in range(count):
        start(slot)
    print(f"holding {len(socks)}", flush=True)
    end = time.monotonic() + seconds
    while (now := time.monotonic()) < end:
        for key, _ in selector.select(timeout=0.05):
            slot = key.data
            try:
                data = socks[slot].recv(4096)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/"):
                counts["answered"] += 1  # a 408 or 503: the server closes after it
            drop(slot)
        for slot in range(count):
            if due[slot] > now:
                continue
            if slot not in socks:
                start(slot)
                continue
            due[slot] = now + CYCLE * (0.5 + rng.random())
            try:
                socks[slot].send(f"X-Slow-{slot}: {int(now)}\r\n".encode())
            except OSError:
                drop(slot)
        counts["max_open"] = max(counts["max_open"], len(socks))
    for sock in socks.values():
        sock.close()
    return counts


if __name__ == "__main__":
    print(json.dumps(hold(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]))), flush=True)
