"""The demo: one image, one question, one model — the turns and crops as ONE offline HTML page.

Multi-turn by default (the turn loop of ``zoom.episode``, the same zoom environment as search, export,
training and eval, with the config's ``multiturn.*`` crop settings); single-turn asks for one whole grounded chain
instead. The model gets the task's STUDENT prompt (what a trained ViGoRL-style student was trained on) and the
image resized to ``teacher.max_pixels``; every point lives in that frame.

The page (no script, no network; images as data URIs): the question, the final answer (and the verdict when
``answer`` gives the ground truth), the full image with each zoom point numbered and its crop region outlined,
then each turn's text beside the crop the model was shown. :func:`run_demo` also reports turns as they arrive
(its ``say`` callback).

The sim teacher (not a model) still zooms on a user's image with no annotations (random points from its
free-region templates) and answers (an option, or a point for point tasks); the page says it is the sim.
Heavy imports stay inside functions (``mcts-engine --help`` must stay fast).
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..teachers.urls import public_urls

DEMO_DIR = Path("runs") / "demo"  # where pages go when --out is not given


# --------------------------------------------------------------------------------------------
# The page (pure: a DemoView in, HTML text out)
# --------------------------------------------------------------------------------------------


@dataclass
class DemoTurn:
    text: str
    point: tuple[int, int] | None = None
    box: list[int] | None = None  # the crop region in frame pixels (xyxy)
    crop_url: str | None = None  # the crop as shown to the model (data URI)
    crop_size: tuple[int, int] | None = None
    error: str | None = None
    forced: bool = False
    repeated: bool = False


@dataclass
class DemoView:
    title: str
    query: str
    user_text: str
    system: str
    model: str
    mode: str  # one line: multi-turn settings or single-turn
    image_url: str  # the frame the model saw (data URI)
    frame: tuple[int, int]
    answer: str | None
    end: str
    verdict: str | None = None
    turns: list[DemoTurn] = field(default_factory=list)
    points: list[tuple[int, int]] = field(default_factory=list)  # numbered on the image (single-turn: the chain's)
    answer_point: tuple[int, int] | None = None  # a point task's answer (green)
    truth_box: list[float] | None = None  # a point task's target box from --answer (frame pixels, green outline)
    seconds: float = 0.0


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}.meta{color:#666;font-size:13px;margin-bottom:16px}
.q{font-size:17px;margin:8px 0}.ans{font-size:17px;padding:8px 12px;background:#f3f7ff;border-left:4px solid #3569d4;margin:12px 0}
.bad{background:#fff3f0;border-left-color:#d43535}.full svg{width:100%;height:auto;max-height:80vh;border:1px solid #ddd}
.turn{display:flex;gap:16px;align-items:flex-start;border-top:1px solid #eee;padding:12px 0}
.turn .txt{flex:1;min-width:0}.turn pre{white-space:pre-wrap;word-break:break-word;background:#fafafa;padding:8px;margin:4px 0;font-size:13px}
.turn .crop{flex:0 0 auto;text-align:center;font-size:12px;color:#555}.turn .crop img{max-width:360px;max-height:360px;border:1px solid #ccc;display:block}
.num{display:inline-block;min-width:22px;height:22px;border-radius:11px;background:#e61e1e;color:#fff;text-align:center;font-weight:bold;line-height:22px;font-size:13px;margin-right:6px}
.err{color:#b00;font-weight:bold}.tag{color:#666;font-size:12px;margin-left:6px}details{margin:12px 0}details pre{white-space:pre-wrap;font-size:12px}
"""


def _svg(view: DemoView) -> str:
    w, h = view.frame
    r = max(6, min(w, h) // 60)
    font = max(10, int(r * 1.5))
    parts = [f'<svg viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="image with zoom points">',
             f'<image href="{view.image_url}" x="0" y="0" width="{w}" height="{h}"/>']
    for t in view.turns:
        if t.box:
            x1, y1, x2, y2 = t.box
            parts.append(f'<rect x="{x1}" y="{y1}" width="{x2 - x1}" height="{y2 - y1}" fill="none" stroke="#ffd200" '
                         f'stroke-width="{max(2, r // 3)}" stroke-dasharray="{2 * r},{r}"/>')
    if view.truth_box:
        x1, y1, x2, y2 = view.truth_box
        parts.append(f'<rect x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" height="{y2 - y1:.1f}" fill="none" '
                     f'stroke="#10a040" stroke-width="{max(2, r // 3)}"/>')
    if view.answer_point:
        x, y = view.answer_point
        parts.append(f'<path d="M{x} {y - r * 1.4}L{x + r * 1.4} {y}L{x} {y + r * 1.4}L{x - r * 1.4} {y}Z" fill="#10a040" '
                     f'stroke="#fff" stroke-width="{max(1, r // 4)}"><title>answer ({x}, {y})</title></path>')
    for i, (x, y) in enumerate(view.points, start=1):
        parts.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="#e61e1e" stroke="#fff" stroke-width="{max(1, r // 4)}"/>'
                     f'<text x="{x + r + 2}" y="{y - r}" font-size="{font}" font-weight="bold" fill="#e61e1e" '
                     f'stroke="#fff" stroke-width="{max(1, font // 6)}" paint-order="stroke">{i}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(view: DemoView) -> str:
    """The demo page: self-contained HTML (inline CSS, images as data URIs, no script)."""
    e = html.escape
    out = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(view.title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{e(view.title)}</h1>",
           f"<div class='meta'>{e(view.model)} · {e(view.mode)} · frame {view.frame[0]}×{view.frame[1]} px · "
           f"{view.seconds:.1f} s · {e(time.strftime('%Y-%m-%d %H:%M'))}</div>",
           f"<div class='q'><b>Question:</b> {e(view.query)}</div>"]
    ok = view.end == "answer"
    ans = e(view.answer) if view.answer is not None else f"<span class='err'>no answer ({e(view.end)})</span>"
    verdict = f" <span class='tag'>{e(view.verdict)}</span>" if view.verdict else ""
    out.append(f"<div class='ans{'' if ok else ' bad'}'><b>Answer:</b> {ans}{verdict}</div>")
    legend = "red: the points in order" + (" · yellow: the crop regions" if any(t.box for t in view.turns) else "")
    if view.answer_point or view.truth_box:
        legend += " · green: the answer point" + (" and the target box" if view.truth_box else "")
    out.append(f"<div class='full'>{_svg(view)}<div class='meta'>{legend}</div></div>")
    out.append(f"<h2>Turns ({len(view.turns)})</h2>")
    zoom = 0
    for i, t in enumerate(view.turns, start=1):
        tags = []
        if t.forced:
            tags.append("last turn: answer required")
        if t.repeated:
            tags.append("repeats an earlier point")
        head = f"<b>Turn {i}</b>" + "".join(f"<span class='tag'>{e(x)}</span>" for x in tags)
        txt = [f"<div class='txt'>{head}<pre>{e(t.text)}</pre>"]
        if t.error:
            txt.append(f"<div class='err'>✗ {e(t.error)} — the episode ends here</div>")
        txt.append("</div>")
        crop = ""
        if t.crop_url and t.point is not None:
            zoom += 1
            size = f" · {t.crop_size[0]}×{t.crop_size[1]} px" if t.crop_size else ""
            crop = (f"<div class='crop'><img src='{t.crop_url}' alt='crop {zoom}'>"
                    f"<span class='num'>{zoom}</span>zoom on ({t.point[0]}, {t.point[1]}){size}</div>")
        out.append(f"<div class='turn'>{''.join(txt)}{crop}</div>")
    out.append(f"<details><summary>Prompt</summary><pre>system: {e(view.system)}\n\nuser: {e(view.user_text)}</pre></details>")
    out.append("</body></html>\n")
    return "\n".join(out)


def _jpeg_url(img: Any, max_side: int = 1600) -> str:
    """A display copy of the frame (JPEG); the SVG stretches it over the frame's own pixel grid."""
    im = img.convert("RGB")
    if max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=88)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _placeholder_answer(task: Any, choices: list[str], width: int, height: int) -> str:
    """With no ``--answer`` the sample still needs one for the task's ground truth (the sim teacher answers from
    it; nothing is scored): the whole image for a point task, else the first option, else "unknown"."""
    if hasattr(task, "target_box"):
        return f"(0, 0, {width}, {height})"
    return choices[0] if choices else "unknown"

class DemoError(ValueError):
    """Bad demo input (the image, ``--answer``, the system prompt source): the one-line reason."""


def run_demo(cfg: Any, task_obj: Any, task: str, kind: str, image: Path, query: str, *, choices: str | None,
             answer: str | None, single_turn: bool, max_turns: int | None, seed: int, out: Path | None,
             say: Callable[[str], None]) -> Path:
    """Ask the model about ``image`` (zoom turns, or one chain with ``single_turn``) and write the page; returns
    its path. ``cfg`` is the resolved ``RunConfig`` (teacher, crop settings, prompt sources), ``kind`` the teacher
    backend. Turns are reported through ``say`` as they arrive.

    Raises :class:`DemoError` for bad input, ``TeacherUnavailable``/``TeacherError`` from the teacher.
    """
    import asyncio

    from ..config import ConfigError
    from ..grounding import check_chain, find_points
    from ..protocol import student_system, user_text
    from ..samples import Sample, load_frame
    from ..teachers import make_teacher
    from ..teachers.base import PromptContext, PromptState
    from ..verifiers import parse_point_answer
    from ..zoom.episode import as_multiturn, run_episode, score_episode

    multiturn = not single_turn
    cfg.multiturn.enabled = multiturn
    turns_allowed = max_turns or cfg.search.max_depth
    t = cfg.teacher
    try:
        enc, resized = load_frame(str(image), None, t.max_pixels, t.min_pixels, t.image_format, t.jpeg_quality,
                                  cfg.inputs, cfg.eval.max_long_side)
    except ValueError as exc:
        raise DemoError(f"--image {image}: {exc}") from None
    frame = enc.frame
    opts = [c.strip() for c in (choices or "").split("|") if c.strip()]
    truth_text = answer if answer is not None else _placeholder_answer(task_obj, opts, frame.orig_width, frame.orig_height)
    sample = Sample(id="demo", images=[str(image)], question=query, task=task, choices=opts, answer=truth_text)
    try:
        task_obj.check_sample(sample)
        truth = task_obj.ground_truth(sample, frame)
    except (ValueError, KeyError) as exc:
        if answer is not None:
            raise DemoError(f"--answer {answer!r}: {exc}") from None
        truth = {"answer": sample.answer}
    try:
        system = student_system(cfg.system_prompt, task_obj, multiturn)  # system_prompt: task | model | none | @FILE
    except ConfigError as exc:
        raise DemoError(str(exc)) from None
    ctx = PromptContext(sample=sample, system=system, user_text=user_text(task_obj, sample, cfg.user_text), images=(enc,), truth=truth,
                        hint_boxes=[], task=task_obj)
    if multiturn:
        ctx = as_multiturn(ctx, [resized])
    mc = cfg.multiturn
    mode = (f"multi-turn: ≤ {turns_allowed} turns, crop {2 * mc.crop_offset} px around each point shown at {mc.crop_size} px"
            f"{', point drawn' if mc.draw_dot else ''}" if multiturn else "single-turn: one grounded chain")
    model_label = ("sim — a scripted simulated teacher, not a model" if kind == "sim"
                   else f"{t.model} at {public_urls(t.base_url)}" if kind == "openai" else f"{t.model} (in-process vLLM)")
    say(f"model: {model_label}")
    say(f"task: {task} · {mode} · frame {frame.width}x{frame.height}")
    backend = make_teacher(t, seed=seed)

    def show(_episode: int, index: int, turn: Any) -> None:
        say(f"--- turn {index + 1}{' (last: answer required)' if turn.forced else ''}\n{turn.text}")
        if turn.point is not None and turn.record is not None:
            img_rec = turn.record.get("image") or {}
            say(f"    → zoom on ({turn.point[0]}, {turn.point[1]}): region {turn.record.get('box')} shown at "
                f"{img_rec.get('width')}x{img_rec.get('height')}")
        elif turn.error:
            say(f"    ✗ {turn.error}")

    async def main() -> tuple[Any, str | None]:
        try:
            await backend.check()
            if multiturn:
                eps = await run_episode(backend, ctx, mc, turns_allowed, n=1, image_format=t.image_format,
                                          image_quality=t.jpeg_quality, on_turn=show)
                return eps[0], None
            reply = await backend.complete(PromptState(ctx, one_shot=True), 1)
            return None, reply.choices[0].text if reply.choices else ""
        finally:
            await backend.aclose()

    t0 = time.perf_counter()
    episode, chain_text = asyncio.run(main())
    seconds = time.perf_counter() - t0
    view = DemoView(title=f"mcts-engine demo · {task}", query=query, user_text=ctx.user_text,
                    system=system if system is not None else "(none sent: the served model's chat template applies its default)",
                    model=model_label, mode=mode, image_url=_jpeg_url(resized), frame=(frame.width, frame.height),
                    answer=None, end="", seconds=seconds)
    if episode is not None:
        scored = score_episode(task_obj, episode, truth, frame)
        view.answer, view.end = episode.answer, episode.end
        for tr in episode.turns:
            rec_img = (tr.record or {}).get("image") or {}
            view.turns.append(DemoTurn(
                text=tr.text, point=tr.point, box=list((tr.record or {}).get("box") or []) or None,
                crop_url=tr.observation.images[0].data_url if tr.observation and tr.observation.images else None,
                crop_size=(rec_img["width"], rec_img["height"]) if rec_img else None,
                error=tr.error, forced=tr.forced, repeated=tr.repeated))
        view.points = list(episode.points)
    else:
        text = chain_text or ""
        say(f"--- reply\n{text}")
        chain = check_chain(text)
        view.points = [p for p in (chain.points if chain.well_formed else find_points(text.split("<answer>")[0])[0])
                       if frame.contains(p)]
        verdict = task_obj.verify(chain.answer, truth)
        view.answer = chain.answer
        view.end = "answer" if chain.answer is not None else ("grammar broken" if not chain.well_formed else "no answer")
        view.turns.append(DemoTurn(text=text, error=None if chain.well_formed else "the reply breaks the <think> … </think><answer> … </answer> grammar"))
        scored = {"correct": verdict.correct, "reason": verdict.reason}
    if "bbox" in truth and view.answer is not None:  # a point task: show the answer point (and the target box)
        ap = parse_point_answer(view.answer)
        if ap is not None and frame.contains((round(ap[0]), round(ap[1]))):
            view.answer_point = (round(ap[0]), round(ap[1]))
        if answer is not None:
            view.truth_box = [float(v) for v in truth["bbox"]]
    if answer is not None:
        view.verdict = f"{'correct' if scored['correct'] else 'wrong'} (right answer: {answer}; {scored['reason']})"
    out = page_path(out, image)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(view), encoding="utf-8")
    tmp.replace(out)
    say(f"answer: {view.answer if view.answer is not None else '(none: ' + view.end + ')'}"
        + (f" · {view.verdict}" if view.verdict else ""))
    return out


def page_path(out: Path | None, image: Path) -> Path:
    """Where the page goes: ``out`` when it names a ``.html`` file, else ``<dir>/demo-<image stem>.html`` in ``out``
    (default :data:`DEMO_DIR`)."""
    if out is not None and out.suffix.lower() in (".html", ".htm"):
        return out
    return (out if out is not None else DEMO_DIR) / f"demo-{image.stem}.html"


__all__ = ["DEMO_DIR", "DemoError", "DemoTurn", "DemoView", "page_path", "render_html", "run_demo"]
