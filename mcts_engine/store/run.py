"""The run directory (an I/O edge): one writer at a time, append-only, nothing computed is ever lost.

Layout of ``runs/NAME/``::

    config.json     the resolved config, its hash, the teacher's description, versions
    trees.jsonl     one finished sample per line (``Tree.to_dict()``), appended + fsynced
    failures.jsonl  one line per failed attempt: {"id", "reason", "time"}
    inflight.jsonl  checkpoints of trees in flight: {"sample_id", "hash", "time", "tree"}, the newest per sample
                    wins; ``"tree": null`` drops the sample's checkpoint (it failed: a retry starts afresh)
    stats.json      run statistics (rewritten atomically as the run goes)
    lock            held (``fcntl.flock``) by the process writing the directory; names its pid and host

A sample is *finished* when its tree line is complete in ``trees.jsonl``; failed samples are retried on
resume, and a sample with a checkpoint continues from it. Every append is one ``write`` of whole lines
followed by ``fsync``; a write that fails (disk full) is cut back to the last complete line before the error
is raised, and a torn last line left by a kill is cut when the directory is next opened.

Readers (``iter_records``, ``failures``) read bytes and decode line by line: a line that is not UTF-8 or
not JSON is reported as an error naming ``FILE:LINE`` and the rest is still read.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..search.tree import Tree
from .files import (
    LOCK,
    DuplicateSample,
    RunError,
    RunLock,
    RunLocked,
    StoreWriteError,
    append_lines,
    atomic_write,
    check_run_dir,
    decode_line,
    iter_jsonl,
    json_line,
    repair_tail,
)

if TYPE_CHECKING:
    from ..samples import EncodedImage

CONFIG, TREES, FAILURES, STATS = "config.json", "trees.jsonl", "failures.jsonl", "stats.json"
INFLIGHT = "inflight.jsonl"


# --------------------------------------------------------------------------------------------
# Checkpoints of trees in flight
# --------------------------------------------------------------------------------------------


class InflightLog:
    """``inflight.jsonl``: checkpoints of the trees in flight (see the module docstring for the record).

    Append-only: each :meth:`write` appends one record per tree (one ``write`` + one ``fsync`` for all).
    The newest record of each live sample is kept in memory; the file is compacted (rewritten atomically
    with those records only) when it outgrows ``max(compact_min_bytes, 4 × live bytes)`` and on a clean
    finish, and removed when nothing is left in flight. On open, the records of finished samples, of
    another config hash (the run was ``--force``d to a new config) and unreadable lines are ignored.
    """

    compact_min_bytes = 32 << 20

    def __init__(self, run: Path, config_hash: str, finished: set[str]) -> None:
        self.path = run / INFLIGHT
        self.hash = config_hash
        self.latest: dict[str, bytes] = {}  # sample id -> its newest record line
        self.unreadable = 0  # lines skipped on open (torn or corrupt)
        self.other_config = 0  # records of another config hash, ignored
        repair_tail(self.path)
        for _, raw, rec, err in iter_jsonl(self.path):
            if err or not isinstance(rec, dict) or "sample_id" not in rec:
                self.unreadable += 1
                continue
            sid = str(rec["sample_id"])
            if rec.get("hash") != config_hash:
                self.other_config += 1
                self.latest.pop(sid, None)
            elif rec.get("tree") is None:
                self.latest.pop(sid, None)
            else:
                self.latest[sid] = raw
        for sid in finished:
            self.latest.pop(sid, None)
        self.size = self.path.stat().st_size if self.path.exists() else 0

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.latest

    def take(self, sample_id: str) -> dict[str, Any] | None:
        """The newest checkpointed tree (a ``Tree.to_dict()``) of ``sample_id``, or None."""
        raw = self.latest.get(sample_id)
        if raw is None:
            return None
        rec, err = decode_line(raw, INFLIGHT, 0)
        return rec.get("tree") if not err and isinstance(rec, dict) and isinstance(rec.get("tree"), dict) else None

    def _line(self, sample_id: str, tree: dict[str, Any] | None, **extra: Any) -> bytes:
        return json_line({"sample_id": sample_id, "hash": self.hash, "time": round(time.time(), 3), **extra, "tree": tree})

    def write(self, trees: dict[str, dict[str, Any]]) -> None:
        """Append one checkpoint per ``{sample_id: tree dict}`` (one write, one fsync)."""
        if not trees:
            return
        lines = {sid: self._line(sid, tree) for sid, tree in trees.items()}
        data = b"".join(lines.values())
        append_lines(self.path, data)
        self.size += len(data)
        self.latest.update(lines)
        if self.size > max(self.compact_min_bytes, 4 * sum(map(len, self.latest.values()))):
            self.compact()

    def drop(self, sample_id: str, reason: str) -> None:
        """Forget a sample's checkpoint on disk too (it failed; its retry starts from scratch)."""
        if self.latest.pop(sample_id, None) is not None:
            line = self._line(sample_id, None, dropped=reason[:200])
            append_lines(self.path, line)
            self.size += len(line)

    def forget(self, sample_id: str) -> None:
        """A sample finished (its tree is in trees.jsonl): its checkpoints are dead weight from now on."""
        self.latest.pop(sample_id, None)

    def compact(self) -> None:
        """Rewrite the file with the newest record of each live sample (atomically); remove it if none."""
        if not self.latest:
            self.path.unlink(missing_ok=True)
            self.size = 0
            return
        data = b"".join(self.latest.values())
        atomic_write(self.path, data)
        self.size = len(data)


# --------------------------------------------------------------------------------------------
# The run directory
# --------------------------------------------------------------------------------------------


class RunStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock: RunLock | None = None
        self._finished: set[str] | None = None

    # --- creation / resume -----------------------------------------------------------------
    @classmethod
    def open_for_generate(cls, path: str | Path, config: dict[str, Any], config_hash: str, force: bool = False,
                          extra: dict[str, Any] | None = None) -> RunStore:
        """Lock and create a run directory, or reopen one whose config hash matches (else refuse unless
        ``force``). Raises :class:`RunLocked` if another live process writes it. Call :meth:`close` (or use
        the store as a context manager) to release the lock; it is also released when the process dies."""
        store = cls(path)
        check_run_dir(store.path)
        try:
            store.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunError(f"{store.path}: cannot create the run directory ({exc.strerror})") from None
        store.lock = RunLock(store.path).acquire()
        try:
            store._open(config, config_hash, force, extra)
        except BaseException:
            store.close()
            raise
        return store

    def _open(self, config: dict[str, Any], config_hash: str, force: bool, extra: dict[str, Any] | None) -> None:
        cfg_path = self.path / CONFIG
        if cfg_path.exists():
            try:
                old = json.loads(cfg_path.read_bytes().decode("utf-8"))
                if not isinstance(old, dict):
                    raise ValueError("not an object")
            except ValueError:
                raise RunError(f"{cfg_path}: unreadable config; use another --out or --force") from None
            if old.get("hash") != config_hash and not force:
                raise RunError(
                    f"{self.path} was created with a different config (hash {old.get('hash')} != {config_hash}); "
                    "use the same recipe/overrides to resume, another --out, or --force"
                )
            if old.get("hash") != config_hash:
                history = old.get("history", []) + [{"hash": old.get("hash"), "config": old.get("config")}]
                extra = {**(extra or {}), "history": history}
            else:
                extra = {**(extra or {}), "history": old.get("history", [])}
        for name in (TREES, FAILURES):
            repair_tail(self.path / name)
        payload = {"hash": config_hash, "config": config, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        atomic_write(cfg_path, json.dumps(payload, indent=2, sort_keys=True, default=str))

    @classmethod
    def open_existing(cls, path: str | Path) -> RunStore:
        """A run directory to read (export, report): no lock, nothing written."""
        store = cls(path)
        if not (store.path / TREES).exists() and not (store.path / CONFIG).exists():
            raise RunError(f"{store.path}: not a run directory (no {TREES} or {CONFIG})")
        return store

    def close(self) -> None:
        """Release the lock (a no-op for a store opened to read)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def inflight(self, config_hash: str, finished: set[str] | None = None) -> InflightLog:
        """The checkpoints of trees in flight (call with the lock held: it may cut a torn line).
        ``finished``: the finished sample ids, if the caller has them already."""
        return InflightLog(self.path, config_hash, self.finished_ids() if finished is None else finished)

    # --- reading ---------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        p = self.path / CONFIG
        if not p.exists():
            return {}
        value, err = decode_line(p.read_bytes(), CONFIG, 1)
        if err or not isinstance(value, dict):
            raise RunError(f"{p}: unreadable config ({err.split(': ', 2)[-1] if err else 'not an object'})")
        return value

    def iter_records(self) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
        """``(line_no, record, error)`` for every line of trees.jsonl; a bad line (not UTF-8, not JSON, torn,
        not a tree record) gives an error naming ``trees.jsonl:LINE``, never an exception."""
        for lineno, _, rec, err in iter_jsonl(self.path / TREES):
            if err:
                yield lineno, None, err
            elif not isinstance(rec, dict) or "sample_id" not in rec:
                yield lineno, None, f"{TREES}:{lineno}: not a tree record"
            else:
                yield lineno, rec, None

    def iter_trees(self) -> Iterator[tuple[Tree | None, str | None]]:
        """Every tree, or an error line naming the row that could not be rebuilt."""
        for lineno, rec, err in self.iter_records():
            if err:
                yield None, err
                continue
            assert rec is not None
            try:
                yield Tree.from_dict(rec), None
            except ValueError as exc:
                yield None, f"{TREES}:{lineno}: {exc}"

    def finished_ids(self) -> set[str]:
        ids = {str(rec["sample_id"]) for _, rec, err in self.iter_records() if rec is not None}
        self._finished = set(ids)
        return ids

    def iter_failures(self) -> Iterator[tuple[dict[str, Any] | None, str | None]]:
        """``(record, error)`` for every line of failures.jsonl (errors name ``failures.jsonl:LINE``)."""
        for lineno, _, rec, err in iter_jsonl(self.path / FAILURES):
            if err:
                yield None, err
            elif not isinstance(rec, dict):
                yield None, f"{FAILURES}:{lineno}: not a failure record"
            else:
                yield rec, None

    def failures(self) -> list[dict[str, Any]]:
        """The readable failure records (a torn or undecodable line is skipped)."""
        return [rec for rec, err in self.iter_failures() if rec is not None]

    def stats(self) -> dict[str, Any]:
        p = self.path / STATS
        return json.loads(p.read_text()) if p.exists() else {}

    # --- writing ---------------------------------------------------------------------------
    def _append(self, name: str, record: dict[str, Any]) -> None:
        append_lines(self.path / name, json_line(record))

    def append_tree(self, tree: Tree | dict[str, Any]) -> None:
        """Append a finished sample; :class:`DuplicateSample` if its id is already finished in trees.jsonl
        (the lock keeps one writer; this is the second line of defence)."""
        rec = tree.to_dict() if isinstance(tree, Tree) else tree
        sid = str(rec.get("sample_id"))
        if self._finished is None:
            self.finished_ids()
        finished = self._finished
        assert finished is not None
        if sid in finished:
            raise DuplicateSample(f"{sid}: already finished in {self.path / TREES}; not stored twice")
        self._append(TREES, rec)
        finished.add(sid)

    def append_failure(self, sample_id: str, reason: str) -> None:
        self._append(FAILURES, {"id": sample_id, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})

    def write_stats(self, stats: dict[str, Any]) -> None:
        atomic_write(self.path / STATS, json.dumps(stats, indent=2, sort_keys=True, default=str))


def save_image(enc: EncodedImage, image_dir: Path | None) -> dict[str, Any]:
    """Write an encoded image once (content-addressed) and return its record for the tree."""
    ext = "jpg" if enc.mime == "image/jpeg" else "png"
    if image_dir is not None:
        path = image_dir / f"{enc.key}.{ext}"
        if not path.exists():
            # one temporary name per thread: samples sharing an image (or a crop) may save it concurrently
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_bytes(enc.data)
            tmp.replace(path)
    f = enc.frame
    return {"key": enc.key, "file": f"images/{enc.key}.{ext}", "width": f.width, "height": f.height, "mime": enc.mime,
            "orig_width": f.orig_width, "orig_height": f.orig_height}


__all__ = ["RunStore", "InflightLog", "RunLock", "RunError", "RunLocked", "StoreWriteError", "DuplicateSample",
           "check_run_dir", "save_image", "CONFIG", "TREES", "FAILURES", "STATS", "INFLIGHT", "LOCK"]
