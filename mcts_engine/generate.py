"""``generate``: samples → batched MCTS with a teacher → a resumable run directory of trees.

The orchestration only: loading (``samples``), per-sample preparation (each image loaded, resized to
the teacher's frame and encoded ONCE), searching (``search.mcts``), scheduling (``search.scheduler``)
and persistence (``store``). Every finished tree is appended and fsynced as soon as it is done; a
bad sample is recorded as a failure with a one-line reason and the run goes on.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import MultiTurnConfig, RunConfig
from .environment import MULTITURN_STOPS, observation_text, zoom
from .grounding import STEP_STOPS, Point
from .samples import EncodedImage, FrameCache, Sample, SampleError, encode_image, load_samples, unique_samples
from .search.mcts import TreeSearch
from .search.scheduler import Aborted, run_bounded
from .search.tree import Tree
from .store import RunStore
from .tasks import get_task
from .tasks.base import Task
from .teachers import make_teacher
from .teachers.base import Observation, PromptState, SampleContext, Teacher, TeacherError, TeacherUnavailable

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
# This many samples failing in a row on teacher errors means the teacher is down: stop, keep the rest.
MAX_CONSECUTIVE_TEACHER_FAILURES = 8


def default_data(task: str) -> Path:
    """The bundled sample set of a task: ``data/<task>_sample/samples.jsonl``."""
    d = DATA_DIR / f"{task}_sample"
    f = d / "samples.jsonl"
    return f if f.exists() else d


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


def prepare_context(
    sample: Sample, task: Task, run: RunConfig, image_dir: Path | None, frames: FrameCache | None = None
) -> tuple[SampleContext, list[dict[str, Any]]]:
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
        enc, img = frames.get(src, sample.image_root, t.max_pixels, t.min_pixels, t.image_format, t.jpeg_quality)
        encoded.append(enc)
        resized.append(img)
    frame = encoded[0].frame
    multiturn = run.multiturn.enabled
    ctx = SampleContext(
        sample=sample,
        system=task.teacher_system(multiturn),
        user_text=task.user_text(sample),
        images=tuple(encoded),
        truth=task.ground_truth(sample, frame),
        hint_boxes=task.hint_boxes(sample, frame),
        task=task,
        stop=MULTITURN_STOPS if multiturn else STEP_STOPS,
        multiturn=multiturn,
        frame_images=tuple(resized) if multiturn else (),
    )
    return ctx, [save_image(enc, image_dir) for enc in encoded]


def make_observer(ctx: SampleContext, cfg: MultiTurnConfig, image_dir: Path | None, fmt: str, quality: int = 90):
    """The multi-turn environment for one sample: point → (observation for the teacher, node record).
    Each crop is encoded once and reused by every descendant's prompt; with ``fmt="auto"`` in the
    frame's own encoding (a JPEG frame gives JPEG crops)."""
    source_format = "JPEG" if ctx.images and ctx.images[0].mime == "image/jpeg" else None

    def observe(point: Point) -> tuple[Observation, dict[str, Any]]:
        crop, box = zoom(ctx.frame_images[0], point, cfg)
        enc, _ = encode_image(crop, max_pixels=crop.width * crop.height, min_pixels=0, fmt=fmt, quality=quality,
                              source_format=source_format)
        text = observation_text(point)
        record = {"point": list(point), "box": list(box), "text": text, "image": save_image(enc, image_dir)}
        return Observation(text=text, images=(enc,)), record

    return observe


class Progress:
    """Counters for the live bar and the final statistics of this session."""

    def __init__(self, total: int | None, already: int, enabled: bool) -> None:
        self.t0 = time.perf_counter()
        self.done = already
        self.finished = 0
        self.solved = 0
        self.failed = 0
        self.calls = 0
        self.tokens = 0
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=already, unit="sample", dynamic_ncols=True, desc="generate")

    def update(self, tree: Tree | None) -> None:
        self.done += 1
        if tree is None:
            self.failed += 1
        else:
            self.finished += 1
            self.solved += int(tree.solved)
            self.calls += int(tree.stats.get("calls", 0))
            self.tokens += int(tree.stats.get("completion_tokens", 0)) + int(tree.stats.get("prompt_tokens", 0))
        if self.bar is not None:
            el = max(1e-9, time.perf_counter() - self.t0)
            self.bar.set_postfix(
                solved=f"{self.solved / max(1, self.finished):.0%}",
                calls_s=f"{self.calls / el:.1f}",
                tok_s=f"{self.tokens / el:.0f}",
                failed=self.failed,
                refresh=False,
            )
            self.bar.update(1)

    def skip(self) -> None:
        """A sample finished in an earlier session."""
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def count_samples(path: Path) -> int | None:
    """A cheap total for the progress bar (None when counting would mean reading images)."""
    try:
        if path.is_file() and path.suffix in {".jsonl", ".json"}:
            with path.open("rb") as fh:
                return sum(1 for line in fh if line.strip())
        if path.suffix == ".parquet" or path.is_dir():
            import pyarrow.parquet as pq

            files = [path] if path.is_file() else sorted(path.glob("*.parquet"))
            return sum(pq.ParquetFile(f).metadata.num_rows for f in files) or None
    except Exception:
        return None
    return None


def summarize(store: RunStore, session: dict[str, Any]) -> dict[str, Any]:
    """Run statistics over every tree in the directory (all sessions), plus this session's timing."""
    finished = solved = calls = choices = ptok = ctok = nodes = 0
    rejected: dict[str, int] = {}
    ids: set[str] = set()
    for _, rec, err in store.iter_records():
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
    last_failure: dict[str, str] = {}
    for f in store.failures():
        last_failure[str(f.get("id"))] = str(f.get("reason"))
    open_failures = {k: v for k, v in last_failure.items() if k not in ids}
    reasons: dict[str, int] = {}
    for v in open_failures.values():
        key = v.split(":", 1)[-1].strip()[:80] if ":" in v else v[:80]
        reasons[key] = reasons.get(key, 0) + 1
    return {
        "finished": finished,
        "solved": solved,
        "solve_rate": solved / finished if finished else 0.0,
        "failed": len(open_failures),
        "failure_reasons": reasons,
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
) -> dict[str, Any]:
    """Run (or resume) a generation into ``out``; returns the run statistics.

    Raises ``SampleLoadError`` for unreadable input and ``TeacherUnavailable`` if the teacher cannot
    serve, both before the run directory is touched; ``RunError`` for a run directory created with
    another config; ``Aborted`` if the teacher went down mid-run (everything finished is kept).
    """
    task = get_task(cfg.task, cfg.task_options)
    data = Path(cfg.data) if cfg.data else default_data(cfg.task)
    samples = unique_samples(load_samples(data, cfg.image_root, cfg.task), cfg.limit)
    total = count_samples(data)
    if cfg.limit is not None:
        total = min(total, cfg.limit) if total is not None else cfg.limit
    own_teacher = teacher is None
    cfg.teacher.logprobs = cfg.teacher.logprobs or cfg.search.selection == "puct"  # PUCT priors need them
    teacher = teacher or make_teacher(cfg.teacher, seed=cfg.seed)

    async def main() -> dict[str, Any]:
        try:
            await teacher.check()
            store = RunStore.open_for_generate(out, cfg.to_dict(), cfg.hash(), force=force, extra={"teacher": teacher.describe()})
            job = _Generation(cfg, task, store, teacher, Progress(total, 0, progress))
            try:
                await job.run(samples)
            finally:
                job.finish()
            return job.stats
        finally:
            if own_teacher:
                await teacher.aclose()

    restore = _terminate_as_interrupt()
    try:
        return asyncio.run(main())
    finally:
        restore()


class _Generation:
    """One session of a run: searches samples, persists each result the moment it is done."""

    def __init__(self, cfg: RunConfig, task: Task, store: RunStore, teacher: Teacher, prog: Progress) -> None:
        self.cfg, self.task, self.store, self.teacher, self.prog = cfg, task, store, teacher, prog
        self.image_dir = store.path / "images"
        self.image_dir.mkdir(exist_ok=True)
        self.frames = FrameCache()  # an image several samples ask about is prepared once
        self.finished = store.finished_ids()
        self.session: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "skipped_finished": 0}
        self.teacher_failures_in_a_row = 0
        self.stop = asyncio.Event()
        self.stats: dict[str, Any] = {}

    async def run(self, samples: Iterator[Sample | SampleError]) -> None:
        cfg = self.cfg
        limit = cfg.search.trees_in_flight or max(4, cfg.teacher.concurrency // max(1, cfg.search.parallel_simulations))
        await run_bounded(samples, self.work, limit, self.stop)
        if self.stop.is_set():
            raise Aborted(
                f"stopped: {MAX_CONSECUTIVE_TEACHER_FAILURES} samples in a row failed on teacher errors "
                f"(reasons in {self.store.path / 'failures.jsonl'}); finished samples are kept, rerun to resume"
            )

    def fail(self, sample_id: str, reason: str) -> None:
        self.store.append_failure(sample_id, reason)
        self.prog.update(None)

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
            self.fail(item.id, f"{item.id}: {exc}")
            return
        tree = Tree(
            sample_id=item.id,
            task=self.cfg.task,
            frame=ctx.frame,
            sample={**item.to_record(), "image_root": item.image_root},
            truth=ctx.truth,
            prompt={"system": ctx.system, "user": ctx.user_text},
            images=images,
        )
        observe = make_observer(ctx, self.cfg.multiturn, self.image_dir, self.cfg.teacher.image_format,
                                self.cfg.teacher.jpeg_quality) if ctx.multiturn else None
        search = TreeSearch(
            tree, PromptState(ctx), self.teacher, self.cfg.search, lambda ans: task.verify(ans, ctx.truth), observe=observe
        )
        try:
            await search.run()
        except TeacherError as exc:
            self.fail(item.id, f"{item.id}: teacher error: {exc}")
            self.teacher_failures_in_a_row += 1
            if self.teacher_failures_in_a_row >= MAX_CONSECUTIVE_TEACHER_FAILURES:
                self.stop.set()
            return
        except Exception as exc:  # a bug must not lose the run: record it with its traceback
            with (self.store.path / "errors.log").open("a") as fh:
                fh.write(f"--- {item.id}\n{traceback.format_exc()}\n")
            self.fail(item.id, f"{item.id}: internal error {type(exc).__name__}: {exc} (see errors.log)")
            return
        self.teacher_failures_in_a_row = 0
        self.store.append_tree(tree)
        self.finished.add(item.id)
        self.prog.update(tree)

    def finish(self) -> None:
        prog, session = self.prog, self.session
        prog.close()
        session["seconds"] = round(time.perf_counter() - prog.t0, 3)
        session["finished"] = prog.finished
        session["images_prepared"] = self.frames.misses
        session["images_reused"] = self.frames.hits
        session["failed"] = prog.failed
        session["calls"] = prog.calls
        session["calls_per_s"] = round(prog.calls / max(1e-9, session["seconds"]), 3)
        session["tokens_per_s"] = round(prog.tokens / max(1e-9, session["seconds"]), 1)
        self.stats = summarize(self.store, session)
        self.stats["teacher"] = self.teacher.describe()
        self.store.write_stats(self.stats)


def _terminate_as_interrupt():
    """Make SIGTERM behave like Ctrl-C (the loop unwinds; finished trees are already on disk)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


__all__ = ["run_generate", "prepare_context", "default_data", "TeacherUnavailable", "Aborted"]
