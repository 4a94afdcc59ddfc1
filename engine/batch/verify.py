"""Check that a batch output set is one run's: every reader of a set calls verify_output_set.

Locks (engine/batch/lock.py) keep two runs apart where the file system honours them; on network
storage they may not, and a slow rename there can leave run B's results beside run A's summary.
So the set proves itself: the summary names its run (`stamp.run_id`) and records the sha256 of
every other file it committed (`outputs`), and the HTML report carries the run id. The results
and errors files carry no run id of their own: the same input must give byte-identical results
whatever the run (the output contract), and a CSV has no place for one that every CSV reader
would skip. The hash in the summary binds them to the run instead.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from engine.batch.summary import BatchSummary
from engine.errors import UserError

HASH_BLOCK = 1 << 20
MAX_SUMMARY_BYTES = 64 << 20  # a summary is a few hundred KB; anything far larger is not one
_REPORT_RUN_ID = re.compile(rb'<meta name="miss-screen-run-id" content="([0-9a-f]*)">')


class OutputSetMismatch(UserError):
    """The files of an output set do not all come from the run its summary describes."""


@dataclass(frozen=True)
class VerifiedSet:
    """A set whose every file is the one its run committed."""

    summary: BatchSummary
    files: list[Path]  # the files checked, the summary first

    @property
    def run_id(self) -> str:
        return self.summary.stamp.run_id


def verify_output_set(
    summary_path: str | Path, report_path: str | Path | None = None
) -> VerifiedSet:
    """The summary of a set, once every file it records has the recorded sha256 (and the report,
    if given, names the same run); OutputSetMismatch (one line) otherwise.

    Recorded paths are taken from the summary's folder: the files checked are those beside
    this summary, wherever the set was moved as a whole.
    """
    summary_file = Path(summary_path)
    summary = _read_summary(summary_file)
    run_id = summary.stamp.run_id
    if not run_id:
        raise OutputSetMismatch(
            f"{summary_file}: written by a miss-screen that records no run id; "
            "its output set cannot be verified (run the batch again)"
        )
    files = [summary_file]
    for output in summary.outputs:
        path = summary_file.parent / output.path
        if not path.is_file():
            raise OutputSetMismatch(
                f"{output.path} ({output.option}) of run {run_id} is missing; "
                "the output set is incomplete"
            )
        found = _sha256(path)
        if found != output.sha256:
            raise OutputSetMismatch(
                f"{path} ({output.option}) is not the file run {run_id} wrote (sha256 "
                f"{found[:12]}, its summary records {output.sha256[:12]}); the output set "
                "mixes runs or was changed: run the batch again"
            )
        files.append(path)
    if report_path is not None:
        report = Path(report_path)
        named = _report_run_id(report)
        if named != run_id:
            raise OutputSetMismatch(
                f"{report} is the report of run {named or '(none named)'}, not of run {run_id} "
                f"that wrote {summary_file}; the output set mixes runs"
            )
        files.append(report)
    return VerifiedSet(summary, files)


def _read_summary(path: Path) -> BatchSummary:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SUMMARY_BYTES + 1)
    except OSError as exc:
        raise OutputSetMismatch(f"{path}: cannot read the summary ({exc.strerror})") from None
    if len(raw) > MAX_SUMMARY_BYTES:
        raise OutputSetMismatch(f"{path}: larger than 64 MB; not a batch summary")
    try:
        return BatchSummary.model_validate_json(raw)
    except ValidationError:
        raise OutputSetMismatch(f"{path}: not a batch summary this miss-screen can read") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _report_run_id(report: Path) -> str | None:
    """The run id an HTML report names in its head (None: it names none)."""
    try:
        with report.open("rb") as handle:
            head = handle.read(4096)
    except OSError as exc:
        raise OutputSetMismatch(f"{report}: cannot read the report ({exc.strerror})") from None
    found = _REPORT_RUN_ID.search(head)
    return found.group(1).decode() if found else None
