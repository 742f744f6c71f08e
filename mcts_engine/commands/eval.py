"""``mcts-engine eval``: a model answers a benchmark single-pass; each answer is scored by the task's verifier.

Single pass: ONE request per item (per option rotation, with circular evaluation) asks for ``K`` whole
chains ``<think> … </think><answer> … </answer>`` (``PromptState(one_shot=True)``: the backend stops only
at ``</answer>``), with the task's STUDENT prompt and the image resized to ``teacher.max_pixels`` (the frame
the points are checked in). Same teacher protocol and backends as ``generate`` (``openai`` for a
``vllm serve``d student, ``sim`` for demos/tests). Same resumable run directory: one record per item in
``trees.jsonl`` (scored outputs, see ``mcts_engine.eval``), failures retried on resume, a different config
refused unless ``--force``. The summary (``summary.json``, ``summary.md``) covers every record in the
directory; scoring rules live in ``mcts_engine.eval``.

Multi-turn (``--multiturn``, or a recipe with ``multiturn.enabled``, e.g. ``--recipe vstar_multiturn``): each of the
K samples is an episode of the turn loop (``mcts_engine.multiturn.run_episode``): the model writes one turn, the
zoom environment answers its tool call with a crop (the recipe's ``multiturn.*`` settings, saved once under
``images/``), up to ``--max-turns`` turns (default: the recipe's ``search.max_depth``), the last one forced to
answer. The system prompt is the task's multi-turn student prompt. A malformed tool call, a point outside the
frame or a turn without a tool call ends the episode unanswered (scored wrong, counted in the turn statistics).

Heavy imports stay inside functions (``mcts-engine --help`` must stay fast).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import typer

from . import backend_missing, choose_teacher, fail, recipe_teacher_kind
from ..teachers.urls import public_urls

# Keys of the teacher config that do not change what an eval computes (left out of the hash).
_UNHASHED_TEACHER = ("base_url", "concurrency", "timeout_s", "max_retries", "api_key_env")
MAX_CONSECUTIVE_TEACHER_FAILURES = 8
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

    from ..eval import render_markdown, spec_for, summarize
    from ..failures import group_failures, open_failures
    from ..samples import FrameCache, SampleError, load_samples, unique_samples
    from ..search.scheduler import Aborted, run_bounded
    from ..generate import save_image, make_observer
    from ..multiturn import as_multiturn, run_episode, score_episode
    from ..progress import CountingTeacher, Progress, count_samples
    from ..config import ConfigError
    from ..protocol import prompt_record, student_system, user_text
    from ..store import RunStore
    from ..tasks import get_task
    from ..teachers import make_teacher
    from ..teachers.base import PromptState, SampleContext, TeacherError

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
    finished = store.finished_ids()
    image_dir = store.path / "images"
    if mt:
        image_dir.mkdir(exist_ok=True)
    keys = group_keys(spec)
    t = teacher_cfg
    counters = {"done": 0, "failed": 0, "skipped": 0, "consecutive": 0, "prompt_tokens": 0, "completion_tokens": 0}
    last_error = [""]

    frames = FrameCache(max_long_side=max_long_side)  # an image several items ask about is prepared once

    def prepare(sample: Any) -> tuple[Any, list[tuple[int, Any]], list[dict[str, Any]]]:
        task.check_sample(sample)
        pairs = [frames.get(src, sample.image_root, t.max_pixels, t.min_pixels, t.image_format, t.jpeg_quality, inputs)
                 for src in sample.images]
        encoded = tuple(enc for enc, _ in pairs)
        frame = encoded[0].frame
        contexts = []
        for r in rotations(list(sample.choices), circ):
            vs = replace(sample, choices=list(sample.choices[r:]) + list(sample.choices[:r])) if r else sample
            ctx = SampleContext(sample=vs, system=system, user_text=user_text(task, vs, user_text_source), images=encoded,
                                truth=task.ground_truth(vs, frame), hint_boxes=task.hint_boxes(vs, frame), task=task)
            if mt:
                ctx = as_multiturn(ctx, [img for _, img in pairs])
            contexts.append((r, ctx))
        # multi-turn: the frame the model saw, saved beside its crops (reports show crops on it)
        images = [save_image(encoded[0], image_dir)] if mt else []
        return frame, contexts, images

    async def sample_outputs(ctx: Any, frame: Any, stats: dict[str, Any]) -> list[dict[str, Any]]:
        """The K scored outputs of one variant: one one-shot request with n=K, or K turn-loop episodes."""
        if mt:
            observe = make_observer(ctx, multiturn, image_dir, t.image_format, t.jpeg_quality)
            episodes = await run_episode(teacher, ctx, multiturn, max_turns, n=k, observe=observe)
            stats["prompt_tokens"] += sum(ep.prompt_tokens for ep in episodes)
            stats["completion_tokens"] += sum(ep.completion_tokens for ep in episodes)
            stats["latency_s"] += sum(ep.latency_s for ep in episodes)
            stats["requests"] += sum(ep.requests for ep in episodes)
            return [score_episode(task, ep, ctx.truth, frame) for ep in episodes]
        reply = await teacher.complete(PromptState(ctx, one_shot=True), k)
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

    def record_failure(sid: str, reason: str) -> None:
        store.append_failure(sid, reason)
        counters["failed"] += 1
        prog.fail(sid)

    stop: asyncio.Event | None = None

    async def work(item: Any) -> None:
        if isinstance(item, SampleError):
            record_failure(item.id, item.reason)
            return
        if item.id in finished:
            counters["skipped"] += 1
            prog.skip()
            return
        try:
            frame, contexts, images = await asyncio.to_thread(prepare, item)
        except ValueError as exc:
            record_failure(item.id, str(exc))
            return
        variants = []
        stats = {"prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0, "requests": 0}
        prog.begin(item.id)
        try:
            for r, ctx in contexts:
                outs = await sample_outputs(ctx, frame, stats)
                variants.append({"rotation": r, "choices": list(ctx.sample.choices), "truth": ctx.truth, "outputs": outs})
        except TeacherError as exc:
            last_error[0] = str(exc)
            record_failure(item.id, f"teacher error: {exc}")
            counters["consecutive"] += 1
            if counters["consecutive"] >= MAX_CONSECUTIVE_TEACHER_FAILURES and stop is not None:
                stop.set()
            return
        counters["consecutive"] = 0
        meta = item.metadata or {}
        record = {
            "sample_id": item.id,
            "kind": "eval",
            "task": task_name,
            "groups": {key: meta[key] for key in sorted(keys) if key in meta and meta[key] not in (None, "")},
            "frame": frame.to_dict(),
            "sample": {**item.to_record(), "image_root": item.image_root},
            "prompt": {"system": system, "user": contexts[0][1].user_text},
            "variants": variants,
            "stats": stats,
        }
        if mt:
            record["multiturn"] = {"max_turns": max_turns, "crop_offset": multiturn.crop_offset,
                                   "crop_size": multiturn.crop_size, "draw_dot": multiturn.draw_dot}
            record["images"] = images
        store.append_tree(record)
        finished.add(item.id)
        counters["done"] += 1
        counters["prompt_tokens"] += stats["prompt_tokens"]
        counters["completion_tokens"] += stats["completion_tokens"]
        outs = [o for v in variants for o in v["outputs"]]
        prog.done_one(item.id, bool(outs) and all(o.get("correct") for o in outs))

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        try:
            await teacher.check()
            items = load_samples(Path(data), image_root, task_name, inputs)
            await run_bounded(unique_samples(items, limit), work, max(4, 2 * t.concurrency), stop)
        finally:
            if own:
                await inner.aclose()
        if stop.is_set():
            raise Aborted(
                f"stopped: {MAX_CONSECUTIVE_TEACHER_FAILURES} items in a row failed on teacher errors, the last: "
                f"{last_error[0]}; finished items are kept, rerun to resume"
            )

    t0 = time.perf_counter()
    try:
        asyncio.run(main())
    finally:
        prog.close()
        records = [rec for _, rec, err in store.iter_records() if rec is not None and rec.get("kind") == "eval"]
        summary = summarize(records, spec, task=task_name, circular=circ, format_check=format_check)
        open_fail = open_failures(store.failures(), finished)
        groups = group_failures(open_fail)
        session = {**counters, "calls": prog.calls, "choices": prog.choices, "seconds": round(time.perf_counter() - t0, 3)}
        payload = {**summary.to_dict(), "failed": len(open_fail), "failure_groups": [g.to_dict() for g in groups],
                   "session": session, "teacher": teacher.describe()}
        (store.path / "summary.json").write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        mode = f" · multi-turn (≤ {max_turns} turns)" if mt else ""
        md = render_markdown(summary, title=f"eval · {task_name}{mode} · {_teacher_label(teacher.describe())}")
        if open_fail:
            md += f"\n{len(open_fail)} items failed (not scored), by kind (failures.jsonl):\n\n"
            md += "\n".join(f"- {g.count} × {g.kind} (e.g. {g.example})" for g in groups) + "\n"
        (store.path / "summary.md").write_text(md)
        store.write_stats(payload)
        store.close()  # release the run directory's lock
    return summary, store.path


def _teacher_label(desc: dict[str, Any]) -> str:
    if desc.get("kind") == "sim":
        return "sim teacher (scripted, not a model)"
    return str(desc.get("model") or desc.get("kind"))


def eval(  # noqa: A001 - the command's name
    task: str | None = typer.Option(None, help="Task: sat2, blink, vstar, screenspot, osatlas, web_action (default: the recipe's task, else sat2)."),
    data: Path | None = typer.Option(None, help="Benchmark data (its own layout, or JSONL/parquet). Default: the bundled sample_data/<task>_sample."),
    image_root: Path | None = typer.Option(None, help="Directory that relative image paths are resolved against (default: the data file's directory); images must stay inside it."),
    allow_outside_root: bool = typer.Option(False, "--allow-outside-root", help="Accept image paths that resolve outside the image root; see docs/input-data.md."),
    teacher: str | None = typer.Option(None, help="openai | sim | vllm. Default: the recipe's teacher.kind; else openai when --base-url/--model is given or --data is; sim only on the bundled data with none of these."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible server URL(s) of the model under test (e.g. a `vllm serve`d student)."),
    model: str | None = typer.Option(None, help="Served model name."),
    samples_per_item: int = typer.Option(1, "--samples-per-item", "-k", min=1, help="Chains sampled per item (one request with n=K)."),
    out: Path | None = typer.Option(None, help="Run directory (default runs/eval-<task>-<model or sim>); rerun to resume."),
    format_check: bool = typer.Option(False, "--format-check", help="Also count outputs that broke the step grammar or put points outside the frame."),
    circular: bool | None = typer.Option(None, "--circular/--no-circular", help="Circular evaluation over rotated option orders (default: the task's, on for sat2)."),
    temperature: float | None = typer.Option(None, help="Sampling temperature (default 0 for K=1, else the recipe's)."),
    max_tokens: int | None = typer.Option(None, help="Token budget of one reply (a whole chain; one turn with --multiturn). Default 1024, or the --protocol preset's teacher.max_tokens."),
    multiturn: bool | None = typer.Option(None, "--multiturn/--single-pass", help="Drive the model through the zoom turn loop (default: the recipe's multiturn.enabled; on for --recipe vstar_multiturn)."),
    max_turns: int | None = typer.Option(None, min=1, help="Multi-turn: assistant turns per episode, the last forced to answer (default: the recipe's search.max_depth)."),
    max_pixels: int | None = typer.Option(None, help="Image frame size in pixels (default: the recipe's teacher.max_pixels)."),
    concurrency: int | None = typer.Option(None, help="Requests in flight."),
    limit: int | None = typer.Option(None, help="Only the first N items."),
    seed: int = typer.Option(0, help="Seed (the sim teacher is reproducible with it)."),
    recipe: str | None = typer.Option(None, help="Recipe YAML (default recipes/<task>.yaml): its teacher section and task_options apply."),
    protocol: str | None = typer.Option(None, help="Ask as a released checkpoint was trained: the preset recipes/<task>_<PROTOCOL>.yaml under --recipe/--set (vigorl; docs/protocols.md)."),
    system_prompt: str | None = typer.Option(None, "--system-prompt", help="task | model (the served chat template's default) | none (empty) | @FILE (exact text). Default: the recipe's system_prompt."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe key, e.g. --set teacher.top_p=0.9 (repeatable)."),
    force: bool = typer.Option(False, "--force/--no-force", help="Reuse --out even though its config differs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live bar on a terminal; --no-progress (or no terminal): a status line every --status-every seconds."),
    status_every: float = typer.Option(10.0, "--status-every", min=0, help="Seconds between plain status lines without a terminal (0: none)."),
) -> None:
    """Score a model on a benchmark (single pass, or --multiturn through the zoom turn loop): accuracy overall and
    by the benchmark's groups, with 95% CIs."""
    from ..config import ConfigError, build_run_config, load_recipe
    from ..protocol import load_with_protocol, protocol_task
    from ..samples import SampleLoadError
    from ..search.scheduler import Aborted
    from ..store import RunError
    from ..tasks import task_names
    from ..teachers.base import TeacherUnavailable

    if task is None:  # the recipe names its task (recipes/vstar_multiturn.yaml: task: vstar)
        try:
            task = str((load_recipe(recipe, "sat2") if recipe else {}).get("task") or protocol_task(protocol, None, recipe) or "sat2")
        except ConfigError as exc:
            fail(str(exc))
    if task not in task_names():
        fail(f"unknown task {task!r} (known: {', '.join(task_names())})")
    try:
        from ..generate import default_data
    except ImportError:  # pragma: no cover - partial checkout
        def default_data(name: str) -> Path:
            return Path(__file__).resolve().parents[1] / "sample_data" / f"{name}_sample"
    bundled = data is None
    try:
        rec = load_with_protocol(recipe, task, protocol)
        choice = choose_teacher(teacher, base_url, model, recipe_teacher_kind(rec, set_), bundled)
        kind = choice.kind
        cfg = build_run_config(
            rec, set_, task=task, seed=seed, limit=limit, system_prompt=system_prompt,
            inputs__allow_outside_root=True if allow_outside_root else None,
            teacher__kind=kind, teacher__base_url=base_url, teacher__model=model, teacher__concurrency=concurrency,
            teacher__max_tokens=max_tokens if max_tokens is not None else (None if protocol else 1024), teacher__max_pixels=max_pixels,
            teacher__temperature=temperature if temperature is not None else (0.0 if samples_per_item == 1 else None),
        )
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if multiturn is not None:
        cfg.multiturn.enabled = multiturn
    mt = cfg.multiturn.enabled
    turns = max_turns or cfg.search.max_depth
    data_path = Path(data) if data is not None else Path(default_data(task))
    if not data_path.exists():
        fail(f"{data_path}: no such file or directory")
    if backend_missing(kind):
        fail(str(backend_missing(kind)))
    label = "sim" if kind == "sim" else (cfg.teacher.model.rstrip("/").split("/")[-1] or kind)
    out_dir = out or Path("runs") / f"eval-{task}-{label}{'-multiturn' if mt else ''}"
    if kind == "sim":
        typer.echo(f"model: sim {choice.why} — a scripted simulated teacher driven by annotations, not a model (demo/test)", err=True)
    elif kind == "openai":
        typer.echo(f"model: {cfg.teacher.model} at {public_urls(cfg.teacher.base_url)} {choice.why}", err=True)
    else:
        typer.echo(f"model: {cfg.teacher.model} (in-process vLLM)", err=True)
    typer.echo(f"data: {data_path}   run: {out_dir}", err=True)
    if mt:
        m = cfg.multiturn
        typer.echo(f"multi-turn: ≤ {turns} turns, crop {2 * m.crop_offset} px around each point shown at {m.crop_size} px"
                   f"{' square' if m.crop_shape == 'square' else ''}{', point drawn' if m.draw_dot else ''}", err=True)
    if cfg.protocol or cfg.system_prompt != "task" or cfg.eval.max_long_side:
        typer.echo(f"protocol: {cfg.protocol or 'custom'} · system prompt: {cfg.system_prompt} · first turn: {cfg.user_text}"
                   f"{f' · longer side capped at {cfg.eval.max_long_side} px' if cfg.eval.max_long_side else ''}", err=True)
    try:
        summary, path = run_eval(
            task, data_path, cfg.teacher, out_dir, image_root=str(image_root) if image_root else None,
            samples_per_item=samples_per_item, circular=circular, format_check=format_check, limit=limit, seed=seed,
            task_options=cfg.task_options, force=force, progress=progress,
            multiturn=cfg.multiturn if mt else None, max_turns=turns, inputs=cfg.inputs, status_every=status_every,
            system_prompt=cfg.system_prompt, user_text_source=cfg.user_text, max_long_side=cfg.eval.max_long_side,
            protocol=cfg.protocol,
        )
    except Aborted as exc:  # the model's server went down mid-run: what failed so far, then why it stopped
        try:
            groups = json.loads((out_dir / "summary.json").read_text()).get("failure_groups", [])
        except (OSError, json.JSONDecodeError):
            groups = []
        for g in groups[:10]:
            typer.echo(f"  {g['count']:>5} × {g['kind']}   (e.g. {g['example']})", err=True)
        fail(str(exc))
    except (TeacherUnavailable, RunError, SampleLoadError, ConfigError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        typer.echo(f"interrupted: scored items are saved in {out_dir}; rerun the same command to resume", err=True)
        raise typer.Exit(130) from None
    typer.echo((path / "summary.md").read_text())
    typer.echo(f"per-item results: {path / 'trees.jsonl'}   summary: {path / 'summary.json'}", err=True)
    if summary.items == 0:
        typer.echo("error: no item was scored", err=True)
        raise typer.Exit(1)
