"""CDS Hooks service latency: the real `miss-screen serve` process on 127.0.0.1, warm, called by
8 concurrent clients (keep-alive connections), against the in-process screen of the same case
in the same run. Target: p99 under 50 ms per call. Called by bench.py (`--only service`)."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUEST = ROOT / "cases" / "cds-hooks" / "order-select-disc-herniation.json"
SITE = ROOT / "cases" / "sites" / "teaching-hospital.yaml"
PATH = "/cds-services/miss-screen"
CLIENTS = 8

Report = Callable[..., None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _percentiles(found: list[float]) -> tuple[float, float]:
    ordered = sorted(found)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _in_process(calls: int) -> list[float]:
    """The same case, screened in-process through the one entry point (no HTTP, no mapping)."""
    from engine.fhir import fhir_to_case
    from engine.screener import Screener

    request = json.loads(REQUEST.read_text())
    resources = [request["prefetch"]["patient"]]
    for key, value in request["prefetch"].items():
        if key != "patient" and value:
            resources += [e["resource"] for e in value["entry"]]
    resources += [e["resource"] for e in request["context"]["draftOrders"]["entry"]]
    case = fhir_to_case(resources, dt.date.today(), hook_instance=request["hookInstance"]).case
    screener = Screener.load(ROOT / "rules", site=str(SITE))
    for _ in range(50):
        screener.screen(case)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        screener.screen(case)
        times.append(time.perf_counter() - start)
    return times


def _client(port: int, body: bytes, calls: int, out: list[float], errors: list[str]) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    try:
        for _ in range(calls):
            start = time.perf_counter()
            connection.request("POST", PATH, body, headers)
            response = connection.getresponse()
            response.read()
            out.append(time.perf_counter() - start)
            if response.status != 200:
                errors.append(str(response.status))
    finally:
        connection.close()


def _wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("miss-screen serve exited at start")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/cds-services")
            if connection.getresponse().status == 200:
                connection.close()
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("miss-screen serve did not start in 90 s")


def bench_service(report: Report, calls_per_client: int = 250) -> None:
    body = REQUEST.read_bytes()
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", "--dev", "--port", str(port),
         "--site", str(SITE)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(port, process)
        warm: list[float] = []
        errors: list[str] = []
        _client(port, body, 100, warm, errors)  # a warm engine: caches filled, pages rendered
        found: list[list[float]] = [[] for _ in range(CLIENTS)]
        threads = [
            threading.Thread(target=_client, args=(port, body, calls_per_client, out, errors))
            for out in found
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - start
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
    latencies = [t for out in found for t in out]
    p50, p99 = _percentiles(latencies)
    inside = _in_process(len(latencies))
    in50, in99 = _percentiles(inside)
    report(
        f"CDS Hooks call, real server, {CLIENTS} clients x {calls_per_client}: p50 / p99",
        f"{p50 * 1e3:.1f} / {p99 * 1e3:.1f} ms",
        "p99 < 50 ms",
        p99 < 0.050 and not errors,
    )
    report(
        "  same case screened in-process (Screener.screen): p50 / p99",
        f"{in50 * 1e3:.2f} / {in99 * 1e3:.2f} ms",
        f"service p50 = {p50 / in50:.0f}x",
    )
    report(
        "  service throughput, calls/s (errors)",
        f"{len(latencies) / elapsed:.0f} ({len(errors)})",
        f"mean {statistics.mean(latencies) * 1e3:.1f} ms",
    )
