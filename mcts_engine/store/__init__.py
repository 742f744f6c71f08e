"""The run directory (``runs/NAME/``): one writer at a time, append-only, nothing computed is ever lost.

- ``files``: the primitives (whole-line appends + fsync that never leave a partial line, atomic rewrites, cutting
  a torn last line, decoding JSONL line by line, the directory's lock, the errors).
- ``run``: :class:`RunStore`, the directory's layout (config, trees, failures, in-flight checkpoints, stats,
  content-addressed images) and how a rerun finds what is finished.
- ``checkpoints``: trees in flight during a ``generate`` session, checkpointed on a timer and on SIGINT/SIGTERM
  (imports the search; import it from its module).

Not here: what a tree is (``search.tree``), rebuilding a search from a checkpoint (``search.resume``), reading a
run for export or the report (``export``). docs/run-directory.md describes the files.
"""

from .run import (
    CONFIG,
    FAILURES,
    INFLIGHT,
    LOCK,
    STATS,
    TREES,
    DuplicateSample,
    InflightLog,
    RunError,
    RunLock,
    RunLocked,
    RunStore,
    StoreWriteError,
    check_run_dir,
    save_image,
)

__all__ = ["RunStore", "InflightLog", "RunLock", "RunError", "RunLocked", "StoreWriteError", "DuplicateSample",
           "check_run_dir", "save_image", "CONFIG", "TREES", "FAILURES", "STATS", "INFLIGHT", "LOCK"]
