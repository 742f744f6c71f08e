"""The eval run: a model answers a benchmark single-pass (or through the zoom turn loop); each answer is scored.

Single pass: ONE request per item (per option rotation, with circular evaluation) asks for ``K`` whole
chains ``<think> … </think><answer> … </answer>`` (``PromptState(one_shot=True)``: the backend stops only
at ``</answer>``), with the task's STUDENT prompt and the image resized to ``teacher.max_pixels`` (the frame
the points are checked in). Same teacher protocol and backends as ``generate`` (``openai`` for a
``vllm serve``d student, ``sim`` for demos/tests). Same resumable run directory: one record per item in
``trees.jsonl`` (scored outputs, see ``evaluation.scoring``), failures retried on resume, a different config
refused unless ``force``. The summary (``summary.json``, ``summary.md``) covers every record in the
directory; scoring rules live in ``evaluation.scoring``.

Multi-turn (``multiturn`` enabled): each of the K samples is an episode of the turn loop
(``zoom.episode.run_episode``): the model writes one turn, the zoom environment answers its tool call with a
crop (the ``multiturn.*`` settings, saved once under ``images/``), up to ``max_turns`` turns, the last one forced
to answer. The system prompt is the task's multi-turn student prompt. A malformed tool call, a point outside the
frame or a turn without a tool call ends the episode unanswered (scored wrong, counted in the turn statistics).

One session is an :class:`EvalRun` (the run directory, the teacher, the counters); :func:`run_eval` builds it,
runs it and writes the summary. Heavy imports stay inside functions (``mcts-engine --help`` must stay fast).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ..search.scheduler import MAX_CONSECUTIVE_TEACHER_FAILURES
from ..teachers.urls import public_urls

# Keys of the teacher config that do not change what an eval computes (left out of the hash).
_UNHASHED_TEACHER = ("base_url", "concurrency", "timeout_s", "max_retries", "api_key_env")
_TASK = object()  # eval_config's default system: the task's student prompt
# Teacher keys added after eval directories existed: left out of the record while they hold these defaults.
_TEACHER_NEW = {"system_prompt": "task", "warn_downscale": 0.0}


def eval_config(task: Any, task_name: str, teacher_cfg: Any, k: int, circular: bool, seed: int,
                task_options: dict[str, Any], multiturn: Any = None, max_turns: int | None = None,
                system: Any = _TASK, prompt: dict[str, Any] | None = None) -> tuple[dict[str, Any], str]:
    """The resolved eval config (stored in the run directory) and its hash (what resume compares).
    ``multiturn`` (a ``MultiTurnConfig``) and ``max_turns`` enter it only when multi-turn is on, so a single-pass
    run directory made before multi-turn existed still resumes. ``system``: the system message sent (None = none;
    default: the task's student prompt); ``prompt``: ``protocol.prompt_record`` (only when not all default)."""
    from ..protocol import multiturn_record

    teacher = {k: v for k, v in asdict(teacher_cfg).items() if not (k in _TEACHER_NEW and v == _TEACHER_NEW[k])}
    if "base_url" in teacher:
        teacher["base_url"] = public_urls(teacher["base_url"])  # stored in config.json: no credentials
    mt = multiturn is not None and bool(getattr(multiturn, "enabled", False))
    cfg = {
        "kind": "eval",
        "task": task_name,
        "task_options": task_options,
        "student_prompt": (task.student_system(True) if mt else task.student_prompt) if system is _TASK else system,
        "samples_per_item": k,
        "circular": circular,
        "seed": seed,
        "teacher": teacher,
    }
    if mt:
        cfg["multiturn"] = {**multiturn_record(multiturn), "max_turns": int(max_turns or 1)}
    if prompt:
        cfg["prompt"] = dict(prompt)
    hashed = json.loads(json.dumps(cfg, sort_keys=True, default=str))
    for key in _UNHASHED_TEACHER:
        hashed["teacher"].pop(key, None)
    digest = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()[:16]
    return cfg, digest


def rotations(choices: list[str], circular: bool) -> list[int]:
    """Option-order rotations to ask: all of them for circular evaluation of a multiple-choice item."""
    return list(range(len(choices))) if circular and len(choices) >= 2 else [0]


def score_output(task: Any, text: str, truth: dict[str, Any], frame: Any) -> dict[str, Any]:
    """One generated chain → its scored record (answer, verdict, grammar, grounding points vs the frame)."""
    from ..grounding import check_chain, extract_answer, find_points
    from ..verifiers import parse_point_answer

    chain = check_chain(text)
    answer = chain.answer if chain.well_formed else extract_answer(text)
    verdict = task.verify(answer, truth)
    if chain.well_formed:
        points = chain.points
    else:  # points written in whatever thought there is (before any <answer>)
        points = find_points(text.split("<answer>")[0])[0]
    out_of_frame = sum(1 for p in points if not frame.contains(p))
    answer_out = None
    if "bbox" in truth and answer is not None:
        ap = parse_point_answer(answer)
        if ap is not None:
            answer_out = not frame.contains((round(ap[0]), round(ap[1])))
    return {
        "text": text,
        "answer": answer,
        "score": verdict.score,
        "correct": verdict.correct,
        "reason": verdict.reason,
        "well_formed": chain.well_formed,
        "points": len(points),
        "points_out_of_frame": out_of_frame,
        "answer_out_of_frame": answer_out,
    }


def group_keys(spec: Any) -> set[str]:
    return {k for key in spec.groups for k in key.split("+")} | (
        {spec.headline.split(":", 1)[1]} if spec.headline.startswith("macro:") else set()
    )



class EvalRun:
    """One eval session: the task, the prompt settings, the teacher (wrapped to count calls), the run directory
    and this session's counters. :meth:`run` scores every unfinished item; :meth:`write_summary` writes
    ``summary.json``/``summary.md`` over every record in the directory."""

    def __init__(self, task: Any, task_name: str, spec: Any, teacher: Any, teacher_cfg: Any, store: Any, prog: Any, *,
                 system: str | None, user_text_source: str, circular: bool, k: int, multiturn: Any, max_turns: int,
                 inputs: Any, max_long_side: int) -> None:
        from ..samples import FrameCache

        self.task, self.task_name, self.spec = task, task_name, spec
        self.teacher, self.t, self.store, self.prog = teacher, teacher_cfg, store, prog
        self.system, self.user_text_source, self.circular, self.k = system, user_text_source, circular, k
        self.mt = multiturn is not None and bool(getattr(multiturn, "enabled", False))
        self.multiturn, self.max_turns, self.inputs = multiturn, max_turns, inputs
        self.finished = store.finished_ids()
        self.image_dir = store.path / "images"
        if self.mt:
            self.image_dir.mkdir(exist_ok=True)
        self.keys = group_keys(spec)
        self.counters = {"done": 0, "failed": 0, "skipped": 0, "consecutive": 0, "prompt_tokens": 0, "completion_tokens": 0}
        self.last_error = ""
        self.frames = FrameCache(max_long_side=max_long_side)  # an image several items ask about is prepared once
        self.stop: Any = None  # an asyncio.Event while running: set when the teacher looks down

    def prepare(self, sample: Any) -> tuple[Any, list[tuple[int, Any]], list[dict[str, Any]]]:
        """Load and encode the item's images once; one prompt context per option rotation."""
        from ..protocol import user_text
        from ..store import save_image
        from ..teachers.base import PromptContext
        from ..zoom.episode import as_multiturn

        task, t = self.task, self.t
        task.check_sample(sample)
        pairs = [self.frames.get(src, sample.image_root, t.max_pixels, t.min_pixels, t.image_format, t.jpeg_quality,
                                 self.inputs)
                 for src in sample.images]
        encoded = tuple(enc for enc, _ in pairs)
        frame = encoded[0].frame
        contexts = []
        for r in rotations(list(sample.choices), self.circular):
            vs = replace(sample, choices=list(sample.choices[r:]) + list(sample.choices[:r])) if r else sample
            ctx = PromptContext(sample=vs, system=self.system, user_text=user_text(task, vs, self.user_text_source),
                                images=encoded, truth=task.ground_truth(vs, frame), hint_boxes=task.hint_boxes(vs, frame),
                                task=task)
            if self.mt:
                ctx = as_multiturn(ctx, [img for _, img in pairs])
            contexts.append((r, ctx))
        # multi-turn: the frame the model saw, saved beside its crops (reports show crops on it)
        images = [save_image(encoded[0], self.image_dir)] if self.mt else []
        return frame, contexts, images

    async def sample_outputs(self, ctx: Any, frame: Any, stats: dict[str, Any]) -> list[dict[str, Any]]:
        """The K scored outputs of one variant: one one-shot request with n=K, or K turn-loop episodes."""
        from ..teachers.base import PromptState
        from ..zoom.episode import run_episode, score_episode
        from ..zoom.observer import make_observer

        task, t, k = self.task, self.t, self.k
        if self.mt:
            observe = make_observer(ctx, self.multiturn, self.image_dir, t.image_format, t.jpeg_quality)
            episodes = await run_episode(self.teacher, ctx, self.multiturn, self.max_turns, n=k, observe=observe)
            stats["prompt_tokens"] += sum(ep.prompt_tokens for ep in episodes)
            stats["completion_tokens"] += sum(ep.completion_tokens for ep in episodes)
            stats["latency_s"] += sum(ep.latency_s for ep in episodes)
            stats["requests"] += sum(ep.requests for ep in episodes)
            return [score_episode(task, ep, ctx.truth, frame) for ep in episodes]
        reply = await self.teacher.complete(PromptState(ctx, one_shot=True), k)
        outs = []
        for c in reply.choices:
            o = score_output(task, c.text, ctx.truth, frame)
            o.update(finish_reason=c.finish_reason, completion_tokens=c.completion_tokens)
            outs.append(o)
        stats["prompt_tokens"] += reply.prompt_tokens
        stats["completion_tokens"] += sum(c.completion_tokens for c in reply.choices)
        stats["latency_s"] += reply.latency_s
        stats["requests"] += 1
        return outs

    def record_failure(self, sid: str, reason: str) -> None:
        self.store.append_failure(sid, reason)
        self.counters["failed"] += 1
        self.prog.fail(sid)

    async def work(self, item: Any) -> None:
        """Score one item (or record why it failed) and append its record."""
        import asyncio

        from ..samples import SampleError
        from ..teachers.base import TeacherError

        counters = self.counters
        if isinstance(item, SampleError):
            self.record_failure(item.id, item.reason)
            return
        if item.id in self.finished:
            counters["skipped"] += 1
            self.prog.skip()
            return
        try:
            frame, contexts, images = await asyncio.to_thread(self.prepare, item)
        except ValueError as exc:
            self.record_failure(item.id, str(exc))
            return
        variants = []
        stats = {"prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0, "requests": 0}
        self.prog.begin(item.id)
        try:
            for r, ctx in contexts:
                outs = await self.sample_outputs(ctx, frame, stats)
                variants.append({"rotation": r, "choices": list(ctx.sample.choices), "truth": ctx.truth, "outputs": outs})
        except TeacherError as exc:
            self.last_error = str(exc)
            self.record_failure(item.id, f"teacher error: {exc}")
            counters["consecutive"] += 1
            if counters["consecutive"] >= MAX_CONSECUTIVE_TEACHER_FAILURES and self.stop is not None:
                self.stop.set()
            return
        counters["consecutive"] = 0
        meta = item.metadata or {}
        record = {
            "sample_id": item.id,
            "kind": "eval",
            "task": self.task_name,
            "groups": {key: meta[key] for key in sorted(self.keys) if key in meta and meta[key] not in (None, "")},
            "frame": frame.to_dict(),
            "sample": {**item.to_record(), "image_root": item.image_root},
            "prompt": {"system": self.system, "user": contexts[0][1].user_text},
            "variants": variants,
            "stats": stats,
        }
        if self.mt:
            m = self.multiturn
            record["multiturn"] = {"max_turns": self.max_turns, "crop_offset": m.crop_offset,
                                   "crop_size": m.crop_size, "draw_dot": m.draw_dot}
            record["images"] = images
        self.store.append_tree(record)
        self.finished.add(item.id)
        counters["done"] += 1
        counters["prompt_tokens"] += stats["prompt_tokens"]
        counters["completion_tokens"] += stats["completion_tokens"]
        outs = [o for v in variants for o in v["outputs"]]
        self.prog.done_one(item.id, bool(outs) and all(o.get("correct") for o in outs))

    async def run(self, data: str | Path, image_root: str | None, limit: int | None, close: Any = None) -> None:
        """Score every unfinished item of ``data``; ``close`` (a coroutine function) runs at the end, whatever
        happens. Raises ``Aborted`` after :data:`MAX_CONSECUTIVE_TEACHER_FAILURES` items in a row failed on
        teacher errors."""
        import asyncio

        from ..samples import load_samples, unique_samples
        from ..search.scheduler import Aborted, run_bounded

        self.stop = asyncio.Event()
        try:
            await self.teacher.check()
            items = load_samples(Path(data), image_root, self.task_name, self.inputs)
            await run_bounded(unique_samples(items, limit), self.work, max(4, 2 * self.t.concurrency), self.stop)
        finally:
            if close is not None:
                await close()
        if self.stop.is_set():
            raise Aborted(
                f"stopped: {MAX_CONSECUTIVE_TEACHER_FAILURES} items in a row failed on teacher errors, the last: "
                f"{self.last_error}; finished items are kept, rerun to resume"
            )

    def write_summary(self, seconds: float, format_check: bool) -> Any:
        """Summarize every eval record in the directory into ``summary.json`` and ``summary.md``; returns the Summary."""
        from ..failures import group_failures, open_failures
        from .scoring import render_markdown, summarize

        store, prog = self.store, self.prog
        records = [rec for _, rec, err in store.iter_records() if rec is not None and rec.get("kind") == "eval"]
        summary = summarize(records, self.spec, task=self.task_name, circular=self.circular, format_check=format_check)
        open_fail = open_failures(store.failures(), self.finished)
        groups = group_failures(open_fail)
        session = {**self.counters, "calls": prog.calls, "choices": prog.choices, "seconds": round(seconds, 3)}
        payload = {**summary.to_dict(), "failed": len(open_fail), "failure_groups": [g.to_dict() for g in groups],
                   "session": session, "teacher": self.teacher.describe()}
        (store.path / "summary.json").write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        mode = f" · multi-turn (≤ {self.max_turns} turns)" if self.mt else ""
        md = render_markdown(summary, title=f"eval · {self.task_name}{mode} · {teacher_label(self.teacher.describe())}")
        if open_fail:
            md += f"\n{len(open_fail)} items failed (not scored), by kind (failures.jsonl):\n\n"
            md += "\n".join(f"- {g.count} × {g.kind} (e.g. {g.example})" for g in groups) + "\n"
        (store.path / "summary.md").write_text(md)
        store.write_stats(payload)
        return summary


def run_eval(
    task_name: str,
    data: str | Path,
    teacher_cfg: Any,
    out: str | Path,
    *,
    image_root: str | None = None,
    samples_per_item: int = 1,
    circular: bool | None = None,
    format_check: bool = False,
    limit: int | None = None,
    seed: int = 0,
    task_options: dict[str, Any] | None = None,
    force: bool = False,
    teacher: Any = None,
    progress: bool = True,
    multiturn: Any = None,
    max_turns: int = 6,
    inputs: Any = None,
    status_every: float = 0.0,
    system_prompt: str = "task",
    user_text_source: str = "task",
    max_long_side: int = 0,
    protocol: str = "",
) -> tuple[Any, Path]:
    """Run (or resume) an eval into ``out``; returns ``(Summary, out)``.

    ``inputs``: an ``InputConfig`` (the image-root rule and the input bounds; default: its defaults).
    ``multiturn``: a ``MultiTurnConfig``; when enabled, each sample is a turn-loop episode of at most ``max_turns``
    turns (see the module docstring), its crops saved under ``out/images``.
    ``system_prompt`` (task | model | none | @FILE), ``user_text_source`` (task | question) and ``max_long_side``
    (the longer-side cap before the frame, 0 = none) are the protocol's (``mcts_engine.protocol``, docs/protocols.md).

    Raises ``TeacherUnavailable`` before any work, ``RunError`` for a directory made with another config,
    ``SampleLoadError`` for unreadable input, ``Aborted`` if the teacher goes down mid-run.
    """
    import asyncio

    from ..config import ConfigError
    from ..progress import CountingTeacher, Progress, count_samples
    from ..protocol import prompt_record, student_system
    from ..store import RunStore
    from ..tasks import get_task
    from ..teachers import make_teacher
    from .scoring import spec_for

    task = get_task(task_name, task_options or {})
    spec = spec_for(task)
    circ = spec.circular if circular is None else circular
    if user_text_source != "task":  # the question as written fixes its option order: nothing to rotate
        if circular:
            raise ConfigError(f"--circular: needs user_text: task (user_text {user_text_source!r} shows the "
                              "question as written, whose option order cannot be rotated)")
        circ = False
    k = max(1, int(samples_per_item))
    mt = multiturn is not None and bool(getattr(multiturn, "enabled", False))
    max_turns = max(1, int(max_turns))
    system = student_system(system_prompt, task, mt)
    cfg, digest = eval_config(task, task_name, teacher_cfg, k, circ, seed, task_options or {},
                              multiturn if mt else None, max_turns, system,
                              prompt_record(system_prompt, user_text_source, max_long_side, protocol))
    own = teacher is None
    teacher = teacher or make_teacher(teacher_cfg, seed=seed)
    inner = teacher
    prog = Progress(count_samples(data, limit), 0, progress, desc=f"eval {task_name}", unit="item",
                    solve_label="correct", interval_s=status_every)
    teacher = CountingTeacher(teacher, prog)
    store = RunStore.open_for_generate(out, cfg, digest, force=force, extra={"teacher": teacher.describe(), "data": str(data)})
    session = EvalRun(task, task_name, spec, teacher, teacher_cfg, store, prog, system=system,
                      user_text_source=user_text_source, circular=circ, k=k, multiturn=multiturn if mt else None,
                      max_turns=max_turns, inputs=inputs, max_long_side=max_long_side)
    t0 = time.perf_counter()
    try:
        asyncio.run(session.run(data, image_root, limit, inner.aclose if own else None))
    finally:
        prog.close()
        summary = session.write_summary(time.perf_counter() - t0, format_check)
        store.close()  # release the run directory's lock
    return summary, store.path


def teacher_label(desc: dict[str, Any]) -> str:
    """The model's name in a summary title (the sim says it is not a model)."""
    if desc.get("kind") == "sim":
        return "sim teacher (scripted, not a model)"
    return str(desc.get("model") or desc.get("kind"))


__all__ = ["EvalRun", "run_eval", "eval_config", "rotations", "score_output", "group_keys", "teacher_label",
           "MAX_CONSECUTIVE_TEACHER_FAILURES"]
