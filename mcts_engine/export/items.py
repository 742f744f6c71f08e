"""The training items linearization produces, as frozen dataclasses over plain data: grounded steps and
root→leaf paths, single- and multi-turn SFT chains, DPO pairs, PRM rows, difficulty figures, skip
counts; and the point rewriting ``rescale_to_original`` applies. Pure; see :mod:`.linearize` for how
they are made from a tree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..frame import Frame, Point
from ..grounding import _POINT_RE, format_chain, format_point


@dataclass(frozen=True)
class Step:
    """One grounded step: its sentence (point text included) and the point, in the output space."""

    node: int
    text: str
    point: Point  # in the output space (the frame, or the original image when rescaling)
    q: float
    visits: int
    frame_point: Point  # in the teacher's frame (validity and repeat checks)


@dataclass(frozen=True)
class PathInfo:
    """A root→leaf path (root excluded). ``steps`` are the grounded steps (the answer node's thought
    too, when grounded); ``answer`` the leaf's answer in the output space."""

    nodes: tuple[int, ...]
    steps: tuple[Step, ...]
    answer: str
    correct: bool | None
    value: float
    leaf_visits: int

    @property
    def leaf(self) -> int:
        return self.nodes[-1]

    def rank_key(self) -> tuple[float, int, int, int]:
        """Sort ascending = best first."""
        return (-self.value, len(self.steps), -self.leaf_visits, self.leaf)


@dataclass(frozen=True)
class Chain:
    strategy: str  # best | all_correct | backtrack
    thoughts: tuple[str, ...]  # sentences in order (the backtrack sentence included)
    points: tuple[Point, ...]  # every step's point, in order
    answer: str
    value: float
    leaf: int
    wrong_leaf: int | None = None

    @property
    def text(self) -> str:
        return format_chain(list(self.thoughts), self.answer)


@dataclass(frozen=True)
class ChainTurn:
    """One assistant turn of a multi-turn chain and what the environment answered to it."""

    text: str  # the response verbatim (``<think> … </think>\n<tool_call>…</tool_call>``) or the answer turn
    point: Point | None = None  # the zoom point (None for the answer turn)
    observation: dict[str, Any] | None = None  # the node's record: point, box, text (with <image>), image


@dataclass(frozen=True)
class MultiTurnChain:
    """A multi-turn SFT conversation: zoom turns, each followed by its observation, then the answer turn."""

    strategy: str  # best | all_correct | backtrack
    turns: tuple[ChainTurn, ...]
    answer: str
    value: float
    leaf: int
    wrong_leaf: int | None = None

    @property
    def points(self) -> tuple[Point, ...]:
        return tuple(t.point for t in self.turns if t.point is not None)

    @property
    def observations(self) -> list[dict[str, Any]]:
        """The observation records in order (one crop each)."""
        return [t.observation for t in self.turns if t.observation is not None]

    @property
    def text(self) -> str:
        """The assistant turns joined (the dedupe key; what a format reward reads)."""
        return "\n".join(t.text for t in self.turns)


@dataclass(frozen=True)
class Pair:
    """DPO: two full chains that share ``prefix_steps`` steps and then branch at ``node``."""

    node: int
    prefix_steps: int
    chosen: Chain
    rejected: Chain
    chosen_q: float
    rejected_q: float


@dataclass(frozen=True)
class PrmRow:
    """Stepwise labels along one maximal valid path; every prefix is ``steps[:k]``."""

    nodes: tuple[int, ...]
    steps: tuple[str, ...]
    values: tuple[float, ...]
    visits: tuple[int, ...]
    labels: tuple[bool, ...]
    answer: str | None
    correct: bool | None


@dataclass(frozen=True)
class Difficulty:
    root_value: float
    solved: bool
    answers: int  # answer leaves in the tree
    verified: int  # leaves with a verdict (correct or wrong)
    correct: int

    @property
    def pass_rate(self) -> float:
        return self.correct / self.verified if self.verified else 0.0


@dataclass
class Skips:
    """Why candidate paths were not used (counted per reason)."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + n


def clamp_to_original(frame: Frame, point: Point) -> Point:
    x, y = frame.to_original(point)
    return (min(max(x, 0), frame.orig_width - 1), min(max(y, 0), frame.orig_height - 1))


def rescale_text(text: str, frame: Frame) -> str:
    """Every ``(x, y)`` of ``text`` mapped from the frame to the original image (integers, clamped)."""

    def sub(m) -> str:  # type: ignore[no-untyped-def]
        p = (round(float(m.group(1))), round(float(m.group(2))))
        return format_point(clamp_to_original(frame, p))

    return _POINT_RE.sub(sub, text)
