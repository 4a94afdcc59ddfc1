"""The real `miss-screen serve` process on 127.0.0.1, called over HTTP: the README's curl
example returns a card, and nothing identifying (nor a token) reaches its stderr, its responses
or its feedback log. Also: without --dev or a trusted issuer, serve serves the form and
refuses CDS calls."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serving import free_port, stop
from tests.test_cds_hooks import IDENTIFIERS, assert_card_invariants, identifying_request

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "cases" / "sites" / "teaching-hospital.yaml"
README = ROOT / "README.md"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    stderr: Path
    feedback: Path


def http(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve")
    port = free_port()
    stderr, feedback = folder / "stderr.txt", folder / "feedback.jsonl"
    with stderr.open("wb") as err:
        process = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "cli.py"),
                "serve",
                "--port",
                str(port),
                "--dev",
                "--site",
                str(SITE),
                "--feedback-log",
                str(feedback),
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=ROOT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if http("GET", url + "/cds-services")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, stderr.read_text()
            assert time.monotonic() < deadline, "the server did not start in 90 s"
            time.sleep(0.2)
        yield Server(url, process, stderr, feedback)
    finally:
        stop(process)


def readme_curl() -> tuple[str, Path]:
    """The path and the posted file of the README's curl example."""
    text = README.read_text()
    block = re.search(r"```sh\n(miss-screen serve --dev[^\n]*\n.*?)```", text, re.S)
    assert block, "the README's CDS Hooks example"
    curl = block[1].replace("\\\n", " ").splitlines()[1]
    words = shlex.split(curl)
    assert words[0] == "curl"
    url = next(w for w in words if w.startswith("http://127.0.0.1:8080/"))
    data = words[words.index("--data") + 1]
    assert data.startswith("@")
    assert "--site cases/sites/teaching-hospital.yaml" in block[1]
    return url.removeprefix("http://127.0.0.1:8080"), ROOT / data[1:]


@pytest.mark.timeout(180)
def test_the_readme_curl_example_returns_a_card(server: Server) -> None:
    path, data = readme_curl()
    status, body = http(
        "POST", server.url + path, data.read_bytes(), {"Content-Type": "application/json"}
    )
    assert status == 200, body
    (card,) = json.loads(body)["cards"]
    assert_card_invariants(card)
    said = re.search(r'"summary": "([^"]*)"', README.read_text().replace("\n", " "))
    assert said, "the README shows the card's summary"
    assert " ".join(said[1].split()) == card["summary"]
    status, page = http("GET", card["source"]["url"])
    assert status == 200
    assert "<h1>" in page


@pytest.mark.timeout(180)
def test_nothing_identifying_reaches_responses_logs_or_feedback(server: Server) -> None:
    request = identifying_request()
    body = json.dumps(request).encode()
    json_headers = {"Content-Type": "application/json"}
    bearer_jwt = "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJNYXJnYXJldCJ9.c2lnbmF0dXJlLXZhbHVl"
    url = server.url + "/cds-services/miss-screen"
    responses = []
    status, text = http("POST", url, body, json_headers)
    assert status == 200, text
    card = json.loads(text)["cards"][0]
    responses.append(text)
    for broken in (body[:-9], body.replace(b'"order-select"', b'"Margaret Thistlewood"')):
        status, text = http("POST", url, broken, json_headers)
        assert status == 400, text
        responses.append(text)
    status, text = http(
        "POST", url, body, {**json_headers, "Authorization": f"Bearer {bearer_jwt}"}
    )
    assert status == 401, text
    responses.append(text)
    feedback = {
        "feedback": [
            {
                "card": card["uuid"],
                "outcome": "overridden",
                "outcomeTimestamp": "2024-11-05T10:00:00Z",
                "overrideReason": {"userComment": "Margaret, 555-867-5309"},
            }
        ]
    }
    status, text = http("POST", url + "/feedback", json.dumps(feedback).encode(), json_headers)
    assert status == 200, text
    responses.append(text)
    time.sleep(0.5)  # let stderr flush what it would write
    written = "\n".join([*responses, server.stderr.read_text(), server.feedback.read_text()])
    assert card["uuid"] in server.feedback.read_text()
    for identifier in (*IDENTIFIERS, bearer_jwt, bearer_jwt.split(".")[1]):
        assert identifier not in written, identifier
    assert "Traceback" not in written
    assert "POST /cds-services" not in server.stderr.read_text()  # no access log at all


@pytest.mark.timeout(120)
def test_serve_without_an_issuer_serves_the_form_and_refuses_every_cds_call() -> None:
    """No --dev and no --trusted-issuer: the clinician's form works; an EHR's call is a 401."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, page = http("GET", url + "/")
                break
            except OSError:
                assert process.poll() is None, "serve exited"
                assert time.monotonic() < deadline, "the server did not start in 90 s"
                time.sleep(0.2)
        assert status == 200
        assert "never an order to operate" in page
        request = json.dumps(identifying_request()).encode()
        status, body = http(
            "POST", url + "/cds-services/miss-screen", request, {"Content-Type": "application/json"}
        )
        assert status == 401
        assert json.loads(body)["resourceType"] == "OperationOutcome"
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    note = err.decode()
    assert "--trusted-issuer" in note
    assert "refused" in note


@pytest.mark.timeout(120)
def test_a_trusted_issuer_needs_the_services_own_url() -> None:
    """Without --public-url or --audience the token's aud would be checked against the Host
    header a caller chooses: serve refuses to start, in one line."""
    jwks = ROOT / "engine" / "service" / "cds-hooks-sandbox-jwks.json"
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "serve",
            "--port",
            str(free_port()),
            "--trusted-issuer",
            f"https://ehr.example.org={jwks}",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: --trusted-issuer needs --public-url")
