"""The multi-turn turn loop: a model answers in turns, the zoom environment answers each tool call with a crop.

Used by ``mcts-engine eval --multiturn`` and ``mcts-engine demo`` (the search has its own tree-shaped loop, the
trainer its own token-level one; all three run the same environment: ``environment.check_tool_step`` decides
whether a turn's tool call is valid, ``zoom.observer.make_observer`` crops, encodes and records the crop).

One episode, turn by turn (``run_episode``):

1. ask the teacher for ONE turn (``ctx.stop`` = ``MULTITURN_STOPS``: the reply ends at ``</tool_call>`` or
   ``</answer>``); the last allowed turn is forced (``PromptState.forced()``: ``continue`` style pre-fills
   ``<answer>``, after a thought when ``multiturn.final_think`` is set; ``plain`` style asks for the answer,
   with ``multiturn.final_user_text`` when set);
2. classify it (``grounding.parse_step``):
   - an answer ends the episode with that answer;
   - a thought with a valid tool call runs the environment; the observation turn (the crop) is appended and the
     loop goes on;
   - anything else ends the episode WITHOUT an answer, the reason kept on the turn: ``bad_tool_call: …``
     (malformed JSON, wrong name, non-integer or missing coordinate), ``no_tool_call``, ``out_of_frame``,
     ``invalid_turn`` (neither a thought nor an answer), ``truncated`` (the turn hit ``max_tokens``),
     ``no_answer_at_max_turns`` (the forced turn did not answer). Same rule as the search (which rejects such
     steps) and the GRPO rollouts (whose environment ends the episode): a malformed call is a failed step,
     counted, never a crash and never silently repaired.
3. A zoom on a point the episode already zoomed on is allowed but flagged (``repeated``).

``n`` episodes share their first request (one request with ``n`` choices: same prompt); after that each live
episode asks for its own next turn, all of them concurrently. Request counts and prompt tokens of the shared
first request are booked on episode 0, so sums over episodes are exact.

Pure apart from the teacher and the ``observe`` callback (which may write crop files): episodes keep each
crop's encoded image in memory (``EpisodeTurn.observation``) for callers that embed it (the demo's HTML page).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..config import MultiTurnConfig
from ..frame import Frame
from ..grounding import Point, parse_step
from ..protocol import final_turn
from ..teachers.base import Continuation, PromptContext, PromptState, StepObservation, Teacher, Turn, observes_inline
from .environment import MULTITURN_STOPS, check_tool_step
from .observer import make_observer

Observer = Callable[[Point], tuple[StepObservation, dict[str, Any]]]
TurnCallback = Callable[[int, int, "EpisodeTurn"], None]

# How an episode ended (``ZoomEpisode.end``); every value but "answer" means there is no answer.
END_REASONS = ("answer", "bad_tool_call", "no_tool_call", "out_of_frame", "invalid_turn", "truncated",
               "no_answer_at_max_turns", "no_reply")


@dataclass
class EpisodeTurn:
    """One assistant turn and what the environment made of it."""

    text: str  # as the backend returned it (closing tag re-attached)
    kind: str  # think | answer | invalid (grounding.parse_step)
    finish_reason: str = "stop"
    completion_tokens: int = 0
    forced: bool = False  # the last allowed turn (the answer was required)
    point: Point | None = None  # the zoom point of a valid tool call
    repeated: bool = False  # the episode had zoomed on this exact point before
    error: str | None = None  # why this turn ended the episode without an answer
    observation: StepObservation | None = None  # the crop as shown to the model (in memory only)
    record: dict[str, Any] | None = None  # the observer's record: point, box, text, image file

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"text": self.text, "kind": self.kind, "finish_reason": self.finish_reason,
                             "completion_tokens": self.completion_tokens}
        if self.forced:
            d["forced"] = True
        if self.point is not None:
            d["point"] = list(self.point)
        if self.repeated:
            d["repeated"] = True
        if self.error:
            d["error"] = self.error
        if self.record is not None:
            rec = self.record
            img = rec.get("image") or {}
            d["box"] = list(rec.get("box") or [])
            d["observation"] = rec.get("text")
            d["crop"] = img.get("file")
            d["crop_size"] = [img.get("width"), img.get("height")]
        return d


@dataclass
class ZoomEpisode:
    turns: list[EpisodeTurn] = field(default_factory=list)
    answer: str | None = None
    end: str = ""  # one of END_REASONS
    requests: int = 0
    prompt_tokens: int = 0
    latency_s: float = 0.0

    @property
    def text(self) -> str:
        """The assistant turns joined (what a format check or a reward reads)."""
        return "\n".join(t.text for t in self.turns)

    @property
    def points(self) -> list[Point]:
        return [t.point for t in self.turns if t.point is not None]

    @property
    def completion_tokens(self) -> int:
        return sum(t.completion_tokens for t in self.turns)

    @property
    def finish_reason(self) -> str:
        return self.turns[-1].finish_reason if self.turns else "none"

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "end": self.end, "turns": [t.to_dict() for t in self.turns],
                "requests": self.requests, "prompt_tokens": self.prompt_tokens}


def as_multiturn(ctx: PromptContext, frame_images: tuple[Any, ...] | list[Any], system: str | None = None) -> PromptContext:
    """A multi-turn copy of ``ctx``: steps stop at ``</tool_call>``/``</answer>``, the resized ``frame_images``
    (the images the model sees; the environment crops the first) attached, and optionally another system prompt
    (``None`` keeps ``ctx.system``, which may itself be ``None``: no system message)."""
    if not frame_images:
        raise ValueError("a multi-turn context needs the resized frame image to crop")
    return replace(ctx, system=ctx.system if system is None else system, stop=MULTITURN_STOPS, multiturn=True,
                   frame_images=tuple(frame_images), cache={})


def take_turn(episode: ZoomEpisode, cont: Continuation, forced: bool, frame: Frame) -> tuple[EpisodeTurn, Point | None]:
    """Classify one reply and append it to ``episode`` (no I/O). Returns the turn and the point to zoom on, or
    ``None`` when the episode is over (``episode.end`` set)."""
    step = parse_step(cont.text)
    turn = EpisodeTurn(text=cont.text, kind=step.kind, finish_reason=cont.finish_reason,
                       completion_tokens=cont.completion_tokens, forced=forced)
    episode.turns.append(turn)

    def stop(reason: str) -> tuple[EpisodeTurn, None]:
        turn.error = reason
        episode.end = reason.split(":", 1)[0]
        return turn, None

    if cont.finish_reason == "length":
        return stop("truncated")
    if step.kind == "answer":
        episode.answer, episode.end = step.answer, "answer"
        return turn, None
    if forced:
        return stop("no_answer_at_max_turns")
    if step.kind == "invalid" and step.tool_call is None and step.tool_error is None:
        return stop("invalid_turn")
    point, err = check_tool_step(step, frame)
    if err:
        return stop(err)
    assert point is not None
    turn.repeated = point in episode.points  # before this turn's point joins them
    turn.point = point
    return turn, point


async def run_episode(
    teacher: Teacher,
    ctx: PromptContext,
    mcfg: MultiTurnConfig,
    max_turns: int,
    *,
    n: int = 1,
    observe: Observer | None = None,
    image_format: str = "auto",
    image_quality: int = 90,
    on_turn: TurnCallback | None = None,
) -> list[ZoomEpisode]:
    """Run ``n`` episodes of at most ``max_turns`` assistant turns (the last one forced to answer).

    ``ctx`` must be multi-turn (``prepare_context`` with ``multiturn.enabled``, or :func:`as_multiturn`).
    ``observe`` turns a point into (observation, record); default: ``make_observer(ctx, mcfg, None, image_format, image_quality)``
    (crops in memory, no files). ``on_turn(episode_index, turn_index, turn)`` is called after each turn (the
    demo prints them). Teacher errors propagate (the caller records the item as failed).
    """
    if not ctx.multiturn or not ctx.frame_images:
        raise ValueError("run_episode needs a multi-turn PromptContext (see as_multiturn)")
    prefill, final_user = final_turn(mcfg)  # the last turn's format is the environment's (multiturn.final_*)
    if (ctx.final_prefill, ctx.final_user_text) != (prefill, final_user):
        ctx = replace(ctx, final_prefill=prefill, final_user_text=final_user)
    observe = observe or make_observer(ctx, mcfg, None, image_format, image_quality)
    max_turns = max(1, int(max_turns))
    n = max(1, int(n))
    frame = ctx.frame
    episodes = [ZoomEpisode() for _ in range(n)]
    states = [PromptState(ctx) for _ in range(n)]
    inline = observes_inline(teacher)

    async def advance(i: int, index: int, cont: Continuation, forced: bool) -> None:
        ep = episodes[i]
        turn, point = take_turn(ep, cont, forced, frame)
        if point is not None:
            if inline:  # the sim teacher: request order must not depend on a thread's finishing moment
                obs, rec = observe(point)
            else:  # crop + encode off the event loop
                obs, rec = await asyncio.to_thread(observe, point)
            turn.observation, turn.record = obs, rec
            states[i] = states[i].child(Turn(cont.text, obs))
        if on_turn is not None:
            on_turn(i, index, turn)

    async def ask(i: int, forced: bool, k: int) -> list[Continuation]:
        state = states[i].forced() if forced else states[i]
        reply = await teacher.complete(state, k)
        ep = episodes[i]
        ep.requests += 1
        ep.prompt_tokens += reply.prompt_tokens
        ep.latency_s += reply.latency_s
        return list(reply.choices)

    for index in range(max_turns):
        forced = index == max_turns - 1
        if index == 0:
            conts = await ask(0, forced, n)
            for i in range(len(conts), n):
                episodes[i].end = "no_reply"
            await asyncio.gather(*(advance(i, index, conts[i], forced) for i in range(min(n, len(conts)))))
        else:
            live = [i for i, ep in enumerate(episodes) if not ep.end]
            if not live:
                break

            async def one(i: int, index: int = index, forced: bool = forced) -> None:
                conts = await ask(i, forced, 1)
                if conts:
                    await advance(i, index, conts[0], forced)
                else:
                    episodes[i].end = "no_reply"

            results = await asyncio.gather(*(one(i) for i in live), return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
    for ep in episodes:  # cannot happen (the last turn is forced), kept as a guard for the record
        if not ep.end:
            ep.end = "no_answer_at_max_turns"
    return episodes


def score_episode(task: Any, episode: ZoomEpisode, truth: dict[str, Any], frame: Frame) -> dict[str, Any]:
    """One episode → its scored eval output: the single-pass output's keys (``evaluation.scoring`` reads them:
    ``well_formed`` = ended with an answer, ``points`` = valid zooms, ``points_out_of_frame`` = out-of-frame tool
    calls) plus ``turns`` and ``end``."""
    from ..verifiers import parse_point_answer

    verdict = task.verify(episode.answer, truth)
    answer_out = None
    if "bbox" in truth and episode.answer is not None:
        ap = parse_point_answer(episode.answer)
        if ap is not None:
            answer_out = not frame.contains((round(ap[0]), round(ap[1])))
    return {
        "text": episode.text,
        "answer": episode.answer,
        "score": verdict.score,
        "correct": verdict.correct,
        "reason": verdict.reason,
        "well_formed": episode.end == "answer",
        "points": len(episode.points),
        "points_out_of_frame": sum(1 for t in episode.turns if t.error == "out_of_frame"),
        "answer_out_of_frame": answer_out,
        "finish_reason": episode.finish_reason,
        "completion_tokens": episode.completion_tokens,
        "end": episode.end,
        "turns": [t.to_dict() for t in episode.turns],
    }


__all__ = ["ZoomEpisode", "EpisodeTurn", "END_REASONS", "as_multiturn", "take_turn", "run_episode", "score_episode"]
