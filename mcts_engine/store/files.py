"""File primitives of the run directory (``store/run.py`` builds on them): the errors, whole-line appends that
never leave a partial line, atomic rewrites, cutting a torn last line, decoding JSONL line by line from bytes,
and the directory's lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK = "lock"

# The system calls an append makes, module-level so a test can make the disk fail (disk full).
_write, _fsync = os.write, os.fsync


class RunError(RuntimeError):
    """A run directory that cannot be used as asked (one line, names the path)."""


class RunLocked(RunError):
    """Another live process writes this run directory."""


class StoreWriteError(RunError):
    """An append to the run directory failed (disk full, I/O error); what was on disk before is intact."""

    def __init__(self, path: Path, exc: OSError) -> None:
        self.path, self.errno = path, exc.errno
        super().__init__(f"cannot write {path}: {exc.strerror or exc}")


class DuplicateSample(RunError):
    """``append_tree`` of a sample that is already finished in trees.jsonl."""


# --------------------------------------------------------------------------------------------
# Low-level file operations
# --------------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, text: str | bytes) -> None:
    """Write a whole file under a temporary name, fsync it, then rename it over ``path``."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    data = text.encode() if isinstance(text, str) else text
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StoreWriteError(path, exc) from None
    _fsync_dir(path.parent)


def append_lines(path: Path, data: bytes) -> None:
    """Append whole lines and fsync. On failure the file is cut back to its size before, then
    :class:`StoreWriteError` is raised: a failed append never leaves a partial line behind."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StoreWriteError(path, exc) from None
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[_write(fd, view):]
            _fsync(fd)
        except OSError as exc:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass  # the next open cuts the torn line (repair_tail)
            raise StoreWriteError(path, exc) from None
    finally:
        os.close(fd)


def json_line(record: dict[str, Any]) -> bytes:
    """One JSONL line as UTF-8 bytes (text that cannot be UTF-8, e.g. a lone surrogate, is written escaped)."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str) + "\n"
    try:
        return line.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode("ascii")


def repair_tail(path: Path) -> int:
    """Cut a torn (non newline-terminated) last line. Returns bytes removed."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return 0
        # Walk back to the previous newline.
        pos = size - 1
        chunk = 65536
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            buf = fh.read(pos - start)
            idx = buf.rfind(b"\n")
            if idx >= 0:
                pos = start + idx + 1
                break
            pos = start
        fh.truncate(pos)
        return size - pos


def decode_line(raw: bytes, name: str, lineno: int) -> tuple[Any, str | None]:
    """One JSONL line as bytes → ``(value, None)`` or ``(None, "NAME:LINE: why")``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"{name}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    try:
        return json.loads(text), None
    except (ValueError, RecursionError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        torn = "" if raw.endswith(b"\n") else ", a torn last line"
        return None, f"{name}:{lineno}: not valid JSON ({why}{torn})"


def iter_jsonl(path: Path) -> Iterator[tuple[int, bytes, Any, str | None]]:
    """``(line_no, raw, value, error)`` for every non-blank line of a JSONL file (missing file: nothing)."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            value, err = decode_line(raw, path.name, lineno)
            yield lineno, raw, value, err


def check_run_dir(path: str | Path) -> None:
    """Raise a one-line :class:`RunError` if ``path`` cannot be a run directory (it, or a parent, is a file)."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunError(f"{p} is a file, not a run directory: pass a directory (new or an earlier run) as --out")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunError(f"{p}: {parent} is a file, not a directory")
            break


# --------------------------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        holder = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _holder_line(run: Path, holder: dict[str, Any]) -> str:
    who = f"pid {holder.get('pid', '?')}" + (f" on {holder['host']}" if holder.get("host") else "")
    since = f" since {holder['since']}" if holder.get("since") else ""
    return (f"{run} is locked by {who}{since}: another generate or eval is writing it; wait for it to finish or "
            "stop it (the lock of a process that died is taken over automatically)")


_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class RunLock:
    """An exclusive lock on a run directory: ``fcntl.flock`` on ``DIR/lock``, which names the holder
    (``{"pid", "host", "since"}``).

    The OS drops a flock when its holder dies (kill -9 included), so a lock left by a dead process is taken
    over by the next process (``took_over`` names the previous holder). The file is never deleted (deleting
    would let two processes lock two different files); it is emptied on release. On a filesystem without
    flock the pid in the file decides: a live pid on this host holds the directory, anything else is stale.
    """

    def __init__(self, run: str | Path) -> None:
        self.run = Path(run)
        self.path = self.run / LOCK
        self.fd: int | None = None
        self.took_over: dict[str, Any] | None = None

    @staticmethod
    def check(run: str | Path) -> None:
        """Raise :class:`RunLocked` if a live process holds ``run``'s lock; touches nothing."""
        path = Path(run) / LOCK
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunLocked(_holder_line(Path(run), _read_holder(fd))) from None
            except OSError:
                return
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunError(f"{self.path}: cannot create the lock file ({exc.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLocked(_holder_line(self.run, holder)) from None
        except OSError as exc:
            if exc.errno not in _NO_FLOCK:
                os.close(fd)
                raise RunError(f"{self.path}: cannot lock ({exc.strerror})") from None
            holder = _read_holder(fd)  # no flock here: the pid file alone decides
            pid = holder.get("pid")
            if (isinstance(pid, int) and pid != os.getpid() and holder.get("host") == socket.gethostname()
                    and _pid_alive(pid)):
                os.close(fd)
                raise RunLocked(_holder_line(self.run, holder)) from None
        previous = _read_holder(fd)
        if previous.get("pid") not in (None, os.getpid()):
            self.took_over = previous  # its process died: the OS dropped its flock
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise StoreWriteError(self.path, exc) from None
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing drops the flock

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown
            pass
