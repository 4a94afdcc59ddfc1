"""Lock a run's output set, so that two runs never write the same files.

Each output file gets a lock file beside it (`.NAME.lock`) holding a kernel lock (flock) for
the whole run, with the owner's pid, process start time, host and run id written in it. The
kernel drops the lock when its process dies, however it dies: a lock file whose lock is free
was left by a run that is gone, and is taken over with a note naming that run. A second run
while the first lives refuses with one line, before it reads any input.

A run removes its lock files when it ends. It unlinks while it still holds the lock, so a run
that opened the old file meanwhile sees, once it gets the lock, that the file is no longer the
one at that name and starts again; no two runs ever hold locks on one name.

flock is not to be trusted on network file systems (NFS emulates it, some servers ignore it):
the committed set is also verifiable (engine/batch/verify.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

from engine.batch.writers import OutputError
from engine.errors import UserError

LOCK_SUFFIX = ".lock"
MAX_LOCK_BYTES = 4096  # what is read of a lock file someone else wrote
# flock refused by the file system itself (some network file systems): the run goes on, unlocked
UNLOCKABLE = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS})


class OutputLocked(UserError):
    """Another live run holds the lock on one of this run's outputs."""


def lock_path(target: str) -> Path:
    """The lock file of an output: `.NAME.lock` in the output's folder."""
    path = Path(target)
    return path.with_name(f".{path.name}{LOCK_SUFFIX}")


def process_start_ticks(pid: int) -> int | None:
    """When a process started (clock ticks since boot, /proc/PID/stat field 22): with the pid,
    it names one process even after the pid is reused. None where /proc has no answer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[19])


def _owner_text(raw: bytes) -> str:
    """The owner a lock file names, in words (pid, start, host), or that it names none."""
    try:
        owner = json.loads(raw)
        return (
            f"pid {int(owner['pid'])} on {str(owner['host'])[:64]}, "
            f"started {str(owner['started'])[:32]}"
        )
    except (ValueError, TypeError, KeyError):
        return "an owner it does not name"


class OutputLocks:
    """The locks of one run's outputs: taken all at once (or none), released together."""

    def __init__(self, run_id: str, started: str, notice: Callable[[str], None] | None) -> None:
        self.run_id, self.started, self._notice = run_id, started, notice
        self._held: list[tuple[Path, int]] = []
        self._owner = json.dumps(
            {
                "pid": os.getpid(),
                "process_start": process_start_ticks(os.getpid()),
                "host": socket.gethostname(),
                "started": started,
                "run_id": run_id,
            }
        ).encode()

    def take(self, targets: list[str]) -> None:
        """Lock every target's lock file, or raise OutputLocked (holding none)."""
        try:
            for target in sorted(set(targets)):
                self._take(target)
        except BaseException:
            self.release()
            raise

    def _take(self, target: str) -> None:
        path = lock_path(target)
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:  # a read-only folder, a full disk: as any output would
                raise OutputError(Path(target), exc) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _owner_text(os.pread(fd, MAX_LOCK_BYTES, 0))
                os.close(fd)
                raise OutputLocked(
                    f"{target} is being written by another run ({owner}); wait for it to "
                    "finish or write to another file"
                ) from None
            except OSError as exc:
                if exc.errno not in UNLOCKABLE:
                    os.close(fd)
                    raise
                if self._notice is not None:  # the lock file still names us, for people
                    self._notice(
                        f"{target}: the file system cannot lock ({exc.strerror}); nothing "
                        "stops a second run on this output set: check it afterwards with "
                        "miss-screen verify"
                    )
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # its owner removed it as we opened it: take the new one
        try:
            left = os.pread(fd, MAX_LOCK_BYTES, 0)
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._owner + b"\n", 0)
        except BaseException:
            os.close(fd)
            raise
        self._held.append((path, fd))
        if left.strip() and self._notice is not None:
            self._notice(
                f"{target}: took over the lock left by a run that is gone ({_owner_text(left)})"
            )

    def release(self) -> None:
        """Remove the lock files, then drop the locks (see the module docstring for why)."""
        for path, fd in reversed(self._held):
            with contextlib.suppress(OSError):
                path.unlink()
            os.close(fd)
        self._held = []
