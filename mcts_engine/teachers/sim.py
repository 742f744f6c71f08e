"""A scripted SIMULATED teacher — not a model.

It exists so that every command runs on a laptop with no GPU and no download (demos, tests,
benchmarks). It reads the sample's *annotations* (``PromptContext.hint_boxes``, in the teacher's
frame) to write plausible grounded steps, and answers correctly with a tunable probability that rises
with the number of distinct annotated regions the path has looked at (so search has a signal to find).
Once a path has looked at every annotated region, its further steps look at other places of the frame, as
the step instructions ask (a region is not pointed at twice).
Run configs record ``teacher.kind = sim``; it is never used in place of a real teacher silently.

With ``teacher.logprobs`` it also gives each choice a log-prob (see ``_logprob``), for PUCT priors.

Determinism: every request draws from an RNG keyed on (seed, sample id, the path's text, how many
times that exact state was asked before), so a seeded run with zero latency is reproducible. Its
replies depend on the order of requests within a tree, so it sets ``replays_in_order``: the search
then runs the multi-turn environment (crop + encode) on the event loop instead of a worker thread,
whose finishing moment would reorder the tree's requests from run to run.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

from ..config import TeacherConfig
from ..grounding import format_answer, format_chain, format_step, parse_step
from ..zoom.environment import format_tool_call
from .base import Continuation, PromptState, TeacherReply, Turn

_TEMPLATES = (
    "The {label} is around {pt}; I note where it sits in the scene",
    "Looking at the {label} near {pt} to compare its position",
    "I check the {label} at {pt}, which is in the {side} part of the image",
    "Focusing on the {label} around {pt} to judge depth and size",
)
_FREE_TEMPLATES = (
    "I examine the region around {pt} for relevant objects",
    "Scanning the area near {pt} to locate what the question refers to",
)


class SimTeacher:
    name = "sim"
    replays_in_order = True  # see the module docstring: the search keeps its order deterministic

    def __init__(self, cfg: TeacherConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self._asked: dict[str, int] = {}

    def describe(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "kind": "sim",
            "note": "scripted simulated teacher (annotation-driven), NOT a model; for demos, tests and benchmarks",
            "accuracy": c.sim_accuracy,
            "latency_s": c.sim_latency_s,
            "mean_steps": c.sim_mean_steps,
            "bad_step_rate": c.sim_bad_step_rate,
            "seed": self.seed,
        }

    async def check(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    def _rng(self, state: PromptState) -> random.Random:
        h = hashlib.sha256()
        h.update(f"{self.seed}\x00{state.context.sample.id}\x00{int(state.force_answer)}".encode())
        for t in state.turns:
            h.update(b"\x00" + t.text.encode())
        key = h.hexdigest()
        k = self._asked.get(key, 0)
        self._asked[key] = k + 1
        return random.Random(f"{key}:{k}")

    async def complete(self, state: PromptState, n: int) -> TeacherReply:
        if self.cfg.sim_latency_s > 0:
            await asyncio.sleep(self.cfg.sim_latency_s)
        rng = self._rng(state)
        choices = [self._one(state, rng) for _ in range(n)]
        prompt_tokens = 300 + sum(len(t.text) for t in state.turns) // 4
        return TeacherReply(choices=choices, prompt_tokens=prompt_tokens, latency_s=self.cfg.sim_latency_s)

    # ----------------------------------------------------------------------------------------
    def _one(self, state: PromptState, rng: random.Random) -> Continuation:
        if state.one_shot:
            return self._chain(state, rng)
        steps = len(state.turns)
        p_answer = 0.0 if steps == 0 else 1.0 / max(1.0, self.cfg.sim_mean_steps)
        point: tuple[int, int] | None = None
        if state.force_answer or rng.random() < p_answer:
            answer = self._answer(state, rng)
            text = format_answer(answer)
        else:
            answer = None
            thought, point = self._step(state, rng)
            text = format_step(thought)
            if state.context.multiturn:
                text = f"{text}\n{format_tool_call(point)}"
        tokens = max(1, len(text) // 4)
        logprob = self._logprob(state, answer, point) * tokens if self.cfg.logprobs else None
        return Continuation(text=text, finish_reason="stop", completion_tokens=tokens, logprob=logprob)

    def _logprob(self, state: PromptState, answer: str | None, point: tuple[int, int] | None) -> float:
        """A mean token log-prob (``teacher.logprobs``), drawn from no RNG so a seeded run's replies stay
        the same: a scripted teacher that is a little more confident in a step that looks at an annotated
        region not yet visited, and in a right answer, than in anything else."""
        ctx = state.context
        if answer is not None:
            right = ctx.task is not None and ctx.task.verify(answer, ctx.truth).score >= 1.0
            return -0.45 if right else -0.6
        visited = self._visited(state)
        for b in ctx.hint_boxes:
            x1, y1, x2, y2 = b["bbox"]
            inside = point is not None and x1 <= point[0] <= x2 and y1 <= point[1] <= y2
            seen = any(x1 <= vx <= x2 and y1 <= vy <= y2 for vx, vy in visited)
            if inside and not seen:
                return -0.35
        return -0.9

    def _chain(self, state: PromptState, rng: random.Random) -> Continuation:
        """A one-shot reply (eval, single pass): a whole chain of grounded steps and the answer, in the
        student's format ``<think> … </think><answer> … </answer>``."""
        cur = state
        thoughts = []
        for _ in range(max(1, min(6, round(rng.gauss(self.cfg.sim_mean_steps, 1.0))))):
            thought, _ = self._step(cur, rng)
            thoughts.append(thought)
            cur = cur.child(Turn(format_step(thought)))
        text = format_chain(thoughts, self._answer(cur, rng))
        return Continuation(text=text, finish_reason="stop", completion_tokens=max(1, len(text) // 4))

    def _visited(self, state: PromptState) -> list[tuple[int, int]]:
        pts = []
        for t in state.turns:
            step = parse_step(t.text)
            p = step.tool_call.point if step.tool_call is not None else step.point
            if p is not None:
                pts.append(p)
        return pts

    def _answer(self, state: PromptState, rng: random.Random) -> str:
        ctx = state.context
        boxes = ctx.hint_boxes
        visited = self._visited(state)
        covered = sum(
            1 for b in boxes if any(b["bbox"][0] <= x <= b["bbox"][2] and b["bbox"][1] <= y <= b["bbox"][3] for x, y in visited)
        )
        p = min(0.9, self.cfg.sim_accuracy + 0.1 * covered)
        correct = rng.random() < p
        if ctx.task is None:
            return str(ctx.truth.get("answer", "")) if correct else "unknown"
        return ctx.task.sim_answer(ctx.truth, correct, rng)

    def _step(self, state: PromptState, rng: random.Random) -> tuple[str, tuple[int, int]]:
        ctx = state.context
        frame = ctx.frame
        visited = self._visited(state)
        if visited and rng.random() < self.cfg.sim_bad_step_rate:
            # A mistake the search must reject: repeat the last point, or point outside the frame.
            if rng.random() < 0.5:
                x, y = visited[-1]
            else:
                x, y = frame.width + rng.randint(1, 50), rng.randint(0, frame.height - 1)
            return f"I look again at the area around ({x}, {y}).", (x, y)
        boxes = ctx.hint_boxes
        unvisited = [
            b for b in boxes if not any(b["bbox"][0] <= vx <= b["bbox"][2] and b["bbox"][1] <= vy <= b["bbox"][3] for vx, vy in visited)
        ]
        if unvisited:  # every annotated region looked at: it looks elsewhere, as the prompt asks (no re-pointing)
            box = rng.choice(unvisited)
            x1, y1, x2, y2 = box["bbox"]
            noise = self.cfg.sim_point_noise
            cx = (x1 + x2) / 2 + rng.gauss(0, noise * max(1.0, x2 - x1))
            cy = (y1 + y2) / 2 + rng.gauss(0, noise * max(1.0, y2 - y1))
            x = min(frame.width - 1, max(0, round(cx)))
            y = min(frame.height - 1, max(0, round(cy)))
            side = "left" if x < frame.width / 3 else "right" if x > 2 * frame.width / 3 else "middle"
            tpl = rng.choice(_TEMPLATES)
            return tpl.format(label=box.get("label") or "object", pt=f"({x}, {y})", side=side) + ".", (x, y)
        x, y = rng.randint(0, frame.width - 1), rng.randint(0, frame.height - 1)
        return rng.choice(_FREE_TEMPLATES).format(pt=f"({x}, {y})") + ".", (x, y)
