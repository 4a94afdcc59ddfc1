"""Helpers for tests that run the real `miss-screen serve` process on 127.0.0.1."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM, then SIGKILL if the server has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@dataclass
class Served:
    """A `miss-screen serve` process started by `start_serve`."""

    port: int
    process: subprocess.Popen[bytes]
    stderr: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_serve(args: list[str], folder: Path, fd_limit: int | None = None) -> Served:
    """`miss-screen serve ARGS` on a free port, its stderr in FOLDER, under an open-file limit
    (RLIMIT_NOFILE, soft and hard) when given; returns once it answers GET /."""
    port = free_port()
    stderr = folder / f"serve-{port}.stderr"

    def limit() -> None:
        if fd_limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))

    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "serve", "--port", str(port), *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=ROOT,
            preexec_fn=limit,  # only setrlimit, before exec
        )
    served = Served(port, process, stderr)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(served.url + "/", timeout=10) as response:  # noqa: S310
                if response.status == 200:
                    return served
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise AssertionError(f"serve did not start: {stderr.read_text()}")
        time.sleep(0.2)
