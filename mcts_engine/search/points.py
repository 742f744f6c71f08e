"""The point rules of a step: in the frame, not a (near-)repeat of a point on its path.

``min_point_distance`` is a fraction of the frame's diagonal; :func:`check_step` says why a response
cannot become a child (None if it can). Used by the search (:mod:`.mcts`) for every new step.
"""

from __future__ import annotations

import math

from ..grounding import ParsedStep, Point
from .tree import Node, Tree


def min_distance(tree: Tree, fraction: float) -> float:
    """``min_point_distance`` in pixels of the tree's frame (a fraction of its diagonal)."""
    return fraction * math.hypot(tree.frame.width, tree.frame.height)


def near(a: Point, b: Point, dist: float) -> bool:
    """Same point, or within ``dist`` pixels (Euclidean)."""
    return a == b or math.hypot(a[0] - b[0], a[1] - b[1]) <= dist


def check_step(
    tree: Tree,
    parent: Node,
    step: ParsedStep,
    finish_reason: str,
    require_point: bool,
    point: Point | None = None,
    min_dist: float = 0.0,
) -> str | None:
    """Why this response cannot become a child of ``parent`` (None if it can). ``point`` overrides the
    thought's own point (multi-turn: the tool call's coordinate is the step's point); ``min_dist`` is
    the repeat radius in pixels (0: only an exact repeat)."""
    if step.kind == "invalid":
        return "truncated" if finish_reason == "length" else "invalid"
    if step.kind == "answer":
        return None
    if finish_reason == "length":
        return "truncated"
    point = point if point is not None else step.point
    if point is None:
        return "no_point" if require_point else None
    if not tree.frame.contains(point):
        return "out_of_frame"
    seen = tree.path_points(parent) + ([parent.point] if parent.point is not None else [])
    for p in seen:
        if near(point, p, min_dist):
            return "repeated_point" if p == point else f"repeated_point: ({point[0]}, {point[1]}) is near ({p[0]}, {p[1]})"
    return None
