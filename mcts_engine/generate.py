"""``generate``: samples → batched MCTS with a teacher → a resumable run directory of trees.

The orchestration only: loading (``samples``), per-sample preparation (each image loaded, resized to
the teacher's frame and encoded ONCE), searching (``search.mcts``), scheduling (``search.scheduler``)
and persistence (``store``). Every finished tree is appended and fsynced as soon as it is done; a
bad sample is recorded as a failure with a one-line reason and the run goes on.

Durability (``docs/run-directory.md``): the run directory is locked for the whole session; every tree in
flight that changed is checkpointed to ``inflight.jsonl`` at least every ``store.checkpoint_s`` seconds, and
SIGINT/SIGTERM checkpoint all of them before the process exits (:class:`Interrupted`, exit 128 + signal); a
sample with a checkpoint continues from it (``search.resume``). A failed append (disk full) stops the run
with one line saying what is kept; the samples in flight are checkpointed if the disk still takes it.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import RunConfig, validate_run_config
from .failures import group_failures, open_failures
from .grounding import ANSWER_OPEN, STEP_STOPS
from .progress import CountingTeacher, Progress, count_samples
from .protocol import final_turn, teacher_system
from .samples import FrameCache, Sample, SampleError, load_samples, unique_samples, watch_downscale
from .search.mcts import TreeSearch
from .search.resume import Resumed, TrackedTeacher, resume
from .search.scheduler import MAX_CONSECUTIVE_TEACHER_FAILURES, Aborted, run_bounded
from .search.tree import Tree
from .store import INFLIGHT, TREES, DuplicateSample, RunError, RunLock, RunStore, StoreWriteError, check_run_dir, save_image
from .store.checkpoints import Checkpointer, Interrupted, route_signals
from .tasks import get_task
from .tasks.base import Task
from .teachers import make_teacher
from .teachers.base import PromptContext, PromptState, Teacher, TeacherError, TeacherUnavailable
from .zoom.environment import MULTITURN_STOPS
from .zoom.observer import make_observer

DATA_DIR = Path(__file__).resolve().parent / "sample_data"  # package data: the bundled sample sets
# MAX_CONSECUTIVE_TEACHER_FAILURES (search.scheduler) samples in a row with nothing usable from the teacher (the
# search raised TeacherError) stop the run; a tree that got something despite errors is stored and resets the count.


def default_data(task: str) -> Path:
    """The bundled sample set of a task: ``mcts_engine/sample_data/<task>_sample/samples.jsonl``."""
    d = DATA_DIR / f"{task}_sample"
    f = d / "samples.jsonl"
    return f if f.exists() else d


def prepare_context(
    sample: Sample, task: Task, run: RunConfig, image_dir: Path | None, frames: FrameCache | None = None
) -> tuple[PromptContext, list[dict[str, Any]]]:
    """Load, resize and encode the sample's images once; build the prompt head and ground truth.

    Raises ``ValueError`` with a one-line reason (bad image, answer not among options, ...). Encoded
    images are written to ``image_dir/<key>.<ext>`` (content-addressed, once) for export and reports.
    With ``frames``, an image already prepared for another sample of the run is reused.
    """
    task.check_sample(sample)
    t = run.teacher
    frames = frames or FrameCache(capacity=0)
    encoded, resized = [], []
    for src in sample.images:
        enc, img = frames.get(src, sample.image_root, t.max_pixels, t.min_pixels, t.image_format, t.jpeg_quality, run.inputs)
        encoded.append(enc)
        resized.append(img)
    frame = encoded[0].frame
    multiturn = run.multiturn.enabled
    final_prefill, final_user = final_turn(run.multiturn) if multiturn else (ANSWER_OPEN, None)
    ctx = PromptContext(
        sample=sample,
        system=teacher_system(run, task, multiturn),  # teacher.system_prompt: task | model | none | @FILE
        user_text=task.user_text(sample),
        images=tuple(encoded),
        truth=task.ground_truth(sample, frame),
        hint_boxes=task.hint_boxes(sample, frame),
        task=task,
        stop=MULTITURN_STOPS if multiturn else STEP_STOPS,
        multiturn=multiturn,
        frame_images=tuple(resized) if multiturn else (),
        final_prefill=final_prefill,
        final_user_text=final_user,
    )
    return ctx, [save_image(enc, image_dir) for enc in encoded]


def summarize(store: RunStore, session: dict[str, Any]) -> dict[str, Any]:
    """Run statistics over every tree in the directory (all sessions), plus this session's timing."""
    finished = solved = calls = choices = ptok = ctok = nodes = 0
    rejected: dict[str, int] = {}
    ids: set[str] = set()
    for _, rec, _err in store.iter_records():
        if rec is None:
            continue
        ids.add(str(rec["sample_id"]))
        finished += 1
        solved += int(bool(rec.get("solved")))
        st = rec.get("stats", {})
        calls += int(st.get("calls", 0))
        choices += int(st.get("choices", 0))
        ptok += int(st.get("prompt_tokens", 0))
        ctok += int(st.get("completion_tokens", 0))
        nodes += len(rec.get("nodes", ()))
        for k, v in (st.get("rejected") or {}).items():
            rejected[k] = rejected.get(k, 0) + int(v)
    groups = group_failures(open_failures(store.failures(), ids))
    open_count = sum(g.count for g in groups)
    reasons = {g.kind: g.count for g in groups}
    return {
        "finished": finished,
        "solved": solved,
        "solve_rate": solved / finished if finished else 0.0,
        "failed": open_count,
        "failure_reasons": reasons,
        "failure_groups": [g.to_dict() for g in groups],
        "calls": calls,
        "choices": choices,
        "prompt_tokens": ptok,
        "completion_tokens": ctok,
        "nodes": nodes,
        "rejected": rejected,
        "session": session,
    }


def run_generate(
    cfg: RunConfig,
    out: str | Path,
    *,
    force: bool = False,
    teacher: Teacher | None = None,
    progress: bool = True,
    status_every: float = 0.0,
) -> dict[str, Any]:
    """Run (or resume) a generation into ``out``; returns the run statistics.

    Raises ``SampleLoadError`` for unreadable input and ``TeacherUnavailable`` if the teacher cannot
    serve, both before the run directory is touched; ``RunError`` for a run directory created with
    another config, an ``out`` that is a file (both before any work), a run directory another process
    holds (``RunLocked``), or a failed append (disk full: the run stops, what is on disk is kept);
    ``Aborted`` if the teacher went down mid-run (everything finished is kept); :class:`Interrupted` after
    SIGINT/SIGTERM checkpointed the trees in flight.
    Progress: a bar on a terminal when ``progress``; else a status line every ``status_every`` seconds (0: none).
    """
    validate_run_config(cfg)  # a ConfigError before any work
    check_run_dir(out)
    RunLock.check(out)
    task = get_task(cfg.task, cfg.task_options)
    data = Path(cfg.data) if cfg.data else default_data(cfg.task)
    samples = unique_samples(load_samples(data, cfg.image_root, cfg.task, cfg.inputs), cfg.limit)
    total = count_samples(data, cfg.limit)
    own_teacher = teacher is None
    cfg.derive()  # a config changed after it was built: PUCT still gets its log-probs
    teacher = teacher or make_teacher(cfg.teacher, seed=cfg.seed)

    async def main() -> dict[str, Any]:
        try:
            await teacher.check()
            store = RunStore.open_for_generate(out, cfg.to_dict(), cfg.hash(), force=force, extra={"teacher": teacher.describe()})
            try:
                prog = Progress(total, 0, progress, interval_s=status_every)
                job = _Generation(cfg, task, store, CountingTeacher(teacher, prog), prog)
                try:
                    await job.run(samples)
                finally:
                    job.finish()
                return job.stats
            finally:
                store.close()
        finally:
            if own_teacher:
                await teacher.aclose()

    restore = _terminate_as_interrupt()
    try:
        return asyncio.run(main())
    finally:
        restore()


class _Generation:
    """One session of a run: searches samples, persists each result the moment it is done, checkpoints the
    trees in flight (``checkpoints.Checkpointer``) and stops cleanly on SIGINT/SIGTERM or a failed write."""

    def __init__(self, cfg: RunConfig, task: Task, store: RunStore, teacher: Teacher, prog: Progress) -> None:
        self.cfg, self.task, self.store, self.teacher, self.prog = cfg, task, store, teacher, prog
        self.image_dir = store.path / "images"
        self.image_dir.mkdir(exist_ok=True)
        self.frames = watch_downscale(cfg.teacher)  # prepared once per image; warns once if teacher.warn_downscale
        self.finished = store.finished_ids()
        self.ckpt = Checkpointer(store.inflight(cfg.hash(), self.finished), cfg.store.checkpoint_s)
        self.session: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "skipped_finished": 0,
                                        "resumed": 0, "checkpoints_discarded": 0}
        if store.lock is not None and store.lock.took_over is not None:
            self.session["lock_taken_over_from"] = store.lock.took_over
        self.teacher_failures_in_a_row = 0
        self.last_teacher_error = ""
        self.stop = asyncio.Event()
        self.halt: BaseException | None = None  # why the session stops early (a signal, a failed write)
        self.clean = False  # the run loop ended normally (every sample it took is done)
        self._main: asyncio.Task | None = None
        self.stats: dict[str, Any] = {}

    async def run(self, samples: Iterator[Sample | SampleError]) -> None:
        cfg = self.cfg
        limit = cfg.search.trees_in_flight or max(4, cfg.teacher.concurrency // max(1, cfg.search.parallel_simulations))
        self._main = asyncio.current_task()
        ticker = asyncio.create_task(self.ckpt.run(self._write_failed))
        restore = route_signals(self._on_signal)
        try:
            await run_bounded(samples, self.work, limit, self.stop)
        except asyncio.CancelledError:
            if self.halt is None:
                raise
            raise self.halt from None
        finally:
            restore()
            ticker.cancel()
        if self.halt is not None:
            raise self.halt
        self.clean = True
        if self.stop.is_set():
            raise Aborted(
                f"stopped: {MAX_CONSECUTIVE_TEACHER_FAILURES} samples in a row got nothing usable from the teacher, "
                f"the last: {self.last_teacher_error}; finished samples are kept, rerun to resume"
            )

    # --- stopping early ---------------------------------------------------------------------
    def _stop_now(self, why: BaseException) -> None:
        if self.halt is None:
            self.halt = why
            self.stop.set()
            if self._main is not None:
                self._main.cancel()

    def _on_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM, on the event loop between two steps: checkpoint every tree in flight, then stop."""
        if self.halt is None:
            self._stop_now(Interrupted(signum, self.ckpt.flush(), self.store.path))

    def _write_failed(self, exc: StoreWriteError) -> None:
        """An append failed (disk full, I/O error): checkpoint what is in flight if the disk still takes it,
        then stop with one line saying what is kept."""
        if self.halt is not None:
            return
        saved, p = self.ckpt.flush(), self.store.path
        flight = sum(1 for live in self.ckpt.live.values() if not live.empty)
        rest = "" if saved == flight else " (the others as of their last checkpoint)"
        self._stop_now(RunError(
            f"stopped: {exc}; kept on disk: {len(self.finished)} finished trees in {p / TREES}, {saved} of "
            f"{flight} trees in flight checkpointed now in {p / INFLIGHT}{rest}; free some space and rerun the "
            "same command to resume"
        ))

    async def _restore(self, item: Sample, root: PromptState, observe: Any) -> Resumed | None:
        """The checkpointed search of ``item``, if there is a usable one."""
        record = self.ckpt.log.take(item.id)
        if record is None:
            return None
        try:
            return await asyncio.to_thread(resume, record, root, self.store.path, observe)
        except ValueError as exc:
            self.session["checkpoints_discarded"] += 1
            self._log(f"--- {item.id}: checkpoint not resumed, the search starts afresh: {exc}\n")
            return None

    def _log(self, text: str) -> None:
        """errors.log: details a one-line reason points to (best effort: a full disk is reported elsewhere)."""
        try:
            with (self.store.path / "errors.log").open("a") as fh:
                fh.write(text)
        except OSError:
            pass

    # --- one sample -------------------------------------------------------------------------
    def _disk_full(self, exc: BaseException) -> bool:
        """A full disk (or quota) while writing an image stops the run like a failed append."""
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            self._write_failed(StoreWriteError(Path(exc.filename or self.image_dir), exc))
            return True
        return False

    def fail(self, sample_id: str, reason: str) -> None:
        try:
            self.ckpt.failed(sample_id, reason)  # a retry starts afresh
            self.store.append_failure(sample_id, reason)
        except StoreWriteError as exc:
            self._write_failed(exc)
            return
        self.prog.fail(sample_id)

    async def work(self, item: Sample | SampleError) -> None:
        if isinstance(item, SampleError):
            self.fail(item.id, item.reason)
            return
        if item.id in self.finished:
            self.session["skipped_finished"] += 1
            self.prog.skip()
            return
        task = self.task
        try:
            ctx, images = await asyncio.to_thread(prepare_context, item, task, self.cfg, self.image_dir, self.frames)
        except ValueError as exc:
            self.fail(item.id, str(exc))
            return
        except OSError as exc:  # writing the frame under images/
            if not self._disk_full(exc):
                self.fail(item.id, f"cannot write {exc.filename or self.image_dir}: {exc.strerror or exc}")
            return
        observe = make_observer(ctx, self.cfg.multiturn, self.image_dir, self.cfg.teacher.image_format,
                                self.cfg.teacher.jpeg_quality) if ctx.multiturn else None
        root = PromptState(ctx)
        resumed = await self._restore(item, root, observe)
        if resumed is not None:
            self.session["resumed"] += 1
            tree = resumed.tree
        else:
            tree = Tree(
                sample_id=item.id,
                task=self.cfg.task,
                frame=ctx.frame,
                sample={**item.to_record(), "image_root": item.image_root},
                truth=ctx.truth,
                prompt={"system": ctx.system, "user": ctx.user_text},
                images=images,
            )
        earlier_s = float(tree.stats.get("seconds", 0.0) or 0.0)
        teacher = TrackedTeacher(self.teacher)
        search = TreeSearch(
            tree, root, teacher, self.cfg.search, lambda ans: task.verify(ans, ctx.truth), observe=observe,
            states=resumed.states if resumed else None, counters=resumed.counters if resumed else None,
        )
        self.ckpt.track(item.id, search, teacher, resumed is not None)
        self.prog.begin(item.id)
        try:
            await search.run()
        except TeacherError as exc:  # the teacher gave this sample nothing usable
            self.last_teacher_error = str(exc)
            self.fail(item.id, f"teacher error: {exc}")
            self.teacher_failures_in_a_row += 1
            if self.teacher_failures_in_a_row >= MAX_CONSECUTIVE_TEACHER_FAILURES:
                self.stop.set()
            return
        except Exception as exc:  # a bug must not lose the run: record it with its traceback
            if self._disk_full(exc):  # writing a multi-turn crop under images/
                return
            self._log(f"--- {item.id}\n{traceback.format_exc()}\n")
            self.fail(item.id, f"internal error {type(exc).__name__}: {exc} (see errors.log)")
            return
        if earlier_s:  # the sessions before this one
            tree.stats["seconds"] = round(float(tree.stats.get("seconds", 0.0)) + earlier_s, 4)
        self.teacher_failures_in_a_row = 0  # a stored tree, with or without teacher errors on the way
        try:
            self.store.append_tree(tree)
        except DuplicateSample:  # another writer stored it (the lock makes this impossible; kept as a guard)
            self.session["duplicates_refused"] = self.session.get("duplicates_refused", 0) + 1
            self.ckpt.finished(item.id)
            self.prog.skip()
            return
        except StoreWriteError as exc:
            self._write_failed(exc)  # the tree is still in flight: checkpointed with the others
            return
        self.ckpt.finished(item.id)
        self.finished.add(item.id)
        self.prog.update(tree)

    def finish(self) -> None:
        prog, session = self.prog, self.session
        prog.close()
        if self.clean:
            try:
                self.ckpt.log.compact()
            except StoreWriteError:
                pass  # the appended file is intact; compacting is housekeeping
        session["seconds"] = round(time.perf_counter() - prog.t0, 3)
        session["finished"] = prog.finished
        session["images_prepared"] = self.frames.misses
        session["images_reused"] = self.frames.hits
        session["failed"] = prog.failed
        session["calls"] = prog.calls
        session["choices"] = prog.choices
        session["prompt_tokens"] = prog.prompt_tokens
        session["completion_tokens"] = prog.completion_tokens
        session["calls_per_s"] = round(prog.calls / max(1e-9, session["seconds"]), 3)
        session["tokens_per_s"] = round(prog.tokens / max(1e-9, session["seconds"]), 1)
        session["checkpoints"] = self.ckpt.written
        self.stats = summarize(self.store, session)
        self.stats["teacher"] = self.teacher.describe()
        try:
            self.store.write_stats(self.stats)
        except StoreWriteError:
            pass  # disk full: the run already stops on that error; the next session rewrites the stats


def _terminate_as_interrupt():
    """Make SIGTERM behave like Ctrl-C (the loop unwinds; finished trees are already on disk)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


__all__ = ["run_generate", "prepare_context", "default_data", "TeacherUnavailable", "Aborted", "Interrupted"]
