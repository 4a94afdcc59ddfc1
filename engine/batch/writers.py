"""Write batch outputs as they come, and commit every output of a run together, or none.

Each output is written to a file without a name (Linux O_TMPFILE) in the folder of its target,
or, where the file system cannot do that, to a temp name beside it. Only when every output of the
run is complete are they named: each is first linked to its temp name (a failure there removes
them all), then renamed over its target. A run that fails, is interrupted, or is killed leaves
the previous run's outputs as they were, and no partial file under any name (a killed process
can leave a temp name only where O_TMPFILE is missing; the next run removes it).

Any error the file system gives (read-only folder, full disk, ...) becomes an OutputError: one
line naming the output and the reason.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.batch.worker import FLAT_COLUMNS, FLAT_SCHEMA, OutputFormat
from engine.errors import UserError

PARQUET_ROW_GROUP = 20_000
# Columns of the Parquet output stored with a dictionary: all but case_id, whose values are all
# different (a dictionary of them cost about a fifth of the writing and made the file larger)
DICTIONARY_COLUMNS = [name for name in FLAT_SCHEMA.names if name != "case_id"]
TEMP_SUFFIX = ".tmp"
HASH_BLOCK = 1 << 20
_NO_TMPFILE = (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT)
AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400  # <fcntl.h>


class OutputError(UserError):
    """An output that cannot be written: read-only folder, full disk, and the like."""

    def __init__(self, target: Path, exc: OSError) -> None:
        reason = exc.strerror or str(exc)
        super().__init__(f"cannot write {target}: {reason}; no new output was kept")


# a cell a spreadsheet would evaluate as a formula (OWASP "CSV injection"): = + - @ tab CR
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(row: tuple[str, ...]) -> tuple[str, ...]:
    """A CSV row whose cells no spreadsheet evaluates: a case_id that starts like a formula gets
    a leading apostrophe (-2-3 is written '-2-3), as OWASP advises. The other cells are verdicts,
    rule ids and field names, which never do."""
    if not row[0].startswith(FORMULA_START):
        return row
    return ("'" + row[0], *row[1:])


class AtomicPath:
    """A file written where its target will be, named only by `commit`, removed by `abort`."""

    def __init__(self, target: str) -> None:
        self.target = Path(target)
        self.temp = self.target.with_name(f".{self.target.name}.{os.getpid()}{TEMP_SUFFIX}")
        _remove_stale_temps(self.target)
        self.named = False  # is the file at self.temp (no O_TMPFILE here)?
        self.fd = -1
        try:
            self.fd = os.open(self.target.parent, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o666)
        except AttributeError:  # no O_TMPFILE on this system
            pass
        except OSError as exc:
            if exc.errno not in _NO_TMPFILE or not os.path.isdir("/proc/self/fd"):
                raise OutputError(self.target, exc) from None
        if self.fd < 0 or not os.path.isdir("/proc/self/fd"):
            if self.fd >= 0:
                os.close(self.fd)
            try:
                self.fd = os.open(
                    self.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666
                )
            except OSError as exc:
                raise OutputError(self.target, exc) from None
            self.named = True

    def sha256(self) -> str:
        """The content hash of the file as written so far (call once it is complete)."""
        digest = hashlib.sha256()
        fd = os.open(self.temp, os.O_RDONLY | os.O_CLOEXEC) if self.named else self.fd
        try:
            offset = 0
            while block := os.pread(fd, HASH_BLOCK, offset):
                digest.update(block)
                offset += len(block)
        finally:
            if fd != self.fd:
                os.close(fd)
        return digest.hexdigest()

    def size(self) -> int:
        return os.stat(self.temp).st_size if self.named else os.fstat(self.fd).st_size

    def open(self, mode: str, **kwargs: Any) -> IO[Any]:
        """A file object on the temp file (closing it leaves the file to commit or abort)."""
        return open(self.fd, mode, closefd=False, **kwargs)  # caller closes

    def name_temp(self) -> None:
        """Give the file its temp name beside the target (the first step of committing)."""
        if not self.named:
            try:
                _link_or_copy(self.fd, self.temp)
            except OSError as exc:
                raise OutputError(self.target, exc) from None
            self.named = True

    def rename(self) -> None:
        """Move the named temp file over the target (the second step of committing)."""
        try:
            os.replace(self.temp, self.target)
        except OSError as exc:
            raise OutputError(self.target, exc) from None
        self._close()

    def commit(self) -> None:
        self.name_temp()
        self.rename()

    def abort(self) -> None:
        if self.named:
            self.temp.unlink(missing_ok=True)
            self.named = False
        self._close()

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _link_or_copy(fd: int, path: Path) -> None:
    """Name the nameless file open as `fd` (linkat through /proc, as os.link will not follow
    that link), or copy it to `path` where linking is refused."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    source = f"/proc/self/fd/{fd}".encode()
    if libc.linkat(AT_FDCWD, source, AT_FDCWD, os.fsencode(path), AT_SYMLINK_FOLLOW) == 0:
        return
    code = ctypes.get_errno()
    if code not in (errno.EXDEV, errno.EPERM, errno.ENOENT, errno.EOPNOTSUPP):
        raise OSError(code, os.strerror(code), str(path))
    copy = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        size, offset = os.fstat(fd).st_size, 0
        while offset < size:
            sent = os.sendfile(copy, fd, offset, size - offset)
            if sent == 0:
                break
            offset += sent
    except BaseException:
        os.close(copy)
        path.unlink(missing_ok=True)
        raise
    os.close(copy)


def _remove_stale_temps(target: Path) -> None:
    """Remove temp files a killed run left beside `target` (their process no longer runs)."""
    prefix = f".{target.name}."
    with contextlib.suppress(OSError):
        for entry in os.scandir(target.parent):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(TEMP_SUFFIX)):
                continue
            pid = name[len(prefix) : -len(TEMP_SUFFIX)]
            if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class OutputSet:
    """Every output of a run: committed together when all are complete, or all removed."""

    def __init__(self) -> None:
        self.members: list[AtomicPath] = []

    def add(self, target: str) -> AtomicPath:
        try:
            member = AtomicPath(target)
        except BaseException:
            self.abort()
            raise
        self.members.append(member)
        return member

    def commit(self) -> None:
        """Name every temp file, then rename each over its target; signals wait meanwhile.

        If naming any fails, none is renamed and all are removed.
        """
        with deferred_signals():
            try:
                for member in self.members:
                    member.name_temp()
            except BaseException:
                self.abort()
                raise
            for member in self.members:
                member.rename()
            self.members = []

    def abort(self) -> None:
        for member in self.members:
            member.abort()
        self.members = []


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP until the block ends (main thread only), then act on
    the first that came, as its handler would have."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    signums = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, lambda n, _: pending.append(n)) for s in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            handler = previous[signal.Signals(pending[0])]
            if callable(handler):
                handler(pending[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), pending[0])


class ResultWriter:
    """Output rows in input order: JSON lines, flattened CSV, or flattened Parquet."""

    def __init__(self, target: str, fmt: OutputFormat, outputs: OutputSet) -> None:
        self.format = fmt
        self.atomic = None if target == "-" else outputs.add(target)
        self.where = Path(target)
        self._stream: IO[str] | None = None
        self._binary: IO[bytes] | None = None
        self._csv: Any = None
        self._parquet: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []  # Parquet: record batches built by workers
        self._pending_rows = 0
        if fmt is OutputFormat.parquet:
            if self.atomic is None:
                raise ValueError("Parquet cannot be written to stdout")
            self._binary = self.atomic.open("wb")
            with self._errors():
                self._parquet = pq.ParquetWriter(
                    self._binary, FLAT_SCHEMA, use_dictionary=DICTIONARY_COLUMNS
                )
            return
        if self.atomic is None:
            self._stream = sys.stdout
        else:
            self._stream = self.atomic.open("w", encoding="utf-8", newline="")
        if fmt is OutputFormat.csv:
            self._csv = csv.writer(self._stream, lineterminator="\n")
            with self._errors():
                self._csv.writerow(FLAT_COLUMNS)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            if self.atomic is None:
                raise
            raise OutputError(self.where, exc) from None

    def write(self, records: list[Any]) -> None:
        try:
            if self.format is OutputFormat.jsonl:
                assert self._stream is not None  # noqa: S101  # set for text formats
                for text in records:  # a chunk's lines come as one text: not copied again
                    self._stream.write(text)
                    self._stream.write("\n")
            elif self.format is OutputFormat.csv:
                self._csv.writerows(map(spreadsheet_safe, records))
            else:
                self._pending.extend(records)
                self._pending_rows += sum(batch.num_rows for batch in records)
                if self._pending_rows >= PARQUET_ROW_GROUP:
                    self._flush_parquet(whole_groups=True)
        except OSError as exc:
            if self.atomic is None:
                raise
            raise OutputError(self.where, exc) from None

    def _flush_parquet(self, whole_groups: bool = False) -> None:
        """Write the buffered rows in row groups of PARQUET_ROW_GROUP rows (the last one at
        the end may be shorter): the file's bytes do not depend on how rows were chunked."""
        if self._pending and self._parquet is not None:
            table = pa.Table.from_batches(self._pending, schema=FLAT_SCHEMA).combine_chunks()
            kept = table.num_rows % PARQUET_ROW_GROUP if whole_groups else 0
            self._parquet.write_table(
                table.slice(0, table.num_rows - kept), row_group_size=PARQUET_ROW_GROUP
            )
            self._pending = table.slice(table.num_rows - kept).to_batches() if kept else []
            self._pending_rows = kept

    def finish(self) -> None:
        """Write what is buffered and close: the file is complete, ready to commit."""
        with self._errors():
            if self._parquet is not None:
                self._flush_parquet()
                self._parquet.close()
                self._parquet = None
            if self._binary is not None:
                self._binary.close()
            if self._stream is sys.stdout:
                self._stream.flush()
            elif self._stream is not None:
                self._stream.close()

    def discard(self) -> None:
        """Close without finishing (the output set removes the file)."""
        with contextlib.suppress(Exception):
            if self._parquet is not None:
                self._parquet.close()
        for stream in (self._binary, self._stream):
            if stream is not None and stream is not sys.stdout:
                with contextlib.suppress(Exception):
                    stream.close()


class ErrorWriter:
    """The errors file: one JSON line per problem of a rejected row (or stderr lines)."""

    def __init__(self, target: str | None, outputs: OutputSet) -> None:
        self.atomic = outputs.add(target) if target else None
        self.where = Path(target or "-")
        self._stream: IO[str] = (
            self.atomic.open("w", encoding="utf-8") if self.atomic else sys.stderr
        )

    def write(self, errors: list[dict[str, Any]]) -> None:
        if self.atomic is None:
            for e in errors:
                where = f"{e['source']}: row {e['row']}" + (
                    f" (case_id {e['case_id']})" if e["case_id"] else ""
                )
                field = f"{e['field']}: " if e["field"] else ""
                self._stream.write(f"error: {where}: {field}{e['reason']}\n")
            return
        try:
            self._stream.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors))
        except OSError as exc:
            raise OutputError(self.where, exc) from None

    def finish(self) -> None:
        if self.atomic is not None:
            try:
                self._stream.close()
            except OSError as exc:
                raise OutputError(self.where, exc) from None

    def discard(self) -> None:
        if self.atomic is not None:
            with contextlib.suppress(Exception):
                self._stream.close()


def write_text(atomic: AtomicPath, text: str) -> None:
    """Write a whole output (summary, report) into its temp file."""
    try:
        with atomic.open("w", encoding="utf-8") as stream:
            stream.write(text)
    except OSError as exc:
        raise OutputError(atomic.target, exc) from None


def write_text_atomically(target: str, text: str) -> None:
    """Write one whole file through a temp file and a rename."""
    outputs = OutputSet()
    try:
        write_text(outputs.add(target), text)
    except BaseException:
        outputs.abort()
        raise
    outputs.commit()
