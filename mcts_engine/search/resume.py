"""Checkpoint and continue a search: what a tree in flight must keep to survive its process.

A checkpoint (``store.InflightLog``) is ``Tree.to_dict()`` whose ``stats`` are the search's counters at that
moment (:func:`snapshot`). Requests still awaiting a reply are left out of ``calls``: their replies die with
the process, and the continued search asks again within the same budget. Everything the tree holds — nodes,
visits, values, verdicts, rejected steps — was computed from replies already received, so nothing in a
checkpoint is ever asked again.

To continue (:func:`resume`), ``TreeSearch`` needs what a tree does not store: the prompt state of every
non-terminal node. It is rebuilt the way the search built it, append-only from the root::

    states[0] = PromptState(ctx)
    states[node] = states[node.parent].child(Turn(node.text, observation(node)))

``observation`` is None in the single-turn variant. In the multi-turn variant it carries the crop the
environment showed after the step: read back from the image file its observation record names under the run
directory (checked against the record's content key), or, when that file is missing or altered, cropped again
by the sample's observer (which writes the file and a fresh record).

Counters continue from ``tree.stats``, so the budgets (``simulations``, ``max_calls``) cover all sessions
together. Simulations in flight at the checkpoint are not counted and are run again; their nodes stay (an
unfinished rollout step is an ordinary unexpanded node, expanded when selection reaches it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..frame import Frame
from ..grounding import Point
from ..samples import EncodedImage
from ..teachers.base import PromptState, StepObservation, Teacher, TeacherReply, Turn
from .mcts import SearchCounters
from .tree import Node, Tree

Observer = Callable[[Point], tuple[StepObservation, dict[str, Any]]]


class TrackedTeacher:
    """A teacher seen by one tree's search: counts the requests still awaiting a reply (``waiting``), which
    a checkpoint leaves out of the calls made. Every other attribute is the wrapped teacher's."""

    def __init__(self, teacher: Teacher) -> None:
        self.inner = teacher
        self.name = getattr(teacher, "name", type(teacher).__name__)
        self.waiting = 0

    async def complete(self, state: PromptState, n: int, **kwargs: Any) -> TeacherReply:
        self.waiting += 1
        try:
            return await self.inner.complete(state, n, **kwargs)
        finally:
            self.waiting -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def snapshot(tree: Tree, counters: SearchCounters, waiting: int = 0) -> dict[str, Any]:
    """The checkpoint record of a tree in flight (``waiting``: requests sent, no reply yet)."""
    d = tree.to_dict()
    stats = {**tree.stats, **counters.to_dict()}
    stats["calls"] = max(0, int(stats.get("calls", 0)) - waiting)
    d["stats"] = stats
    return d


def read_observation(run_dir: Path, record: dict[str, Any]) -> StepObservation | None:
    """The observation a multi-turn node's record describes, its crop read back from ``run_dir``; None when
    the file is missing, outside the run directory, or does not match the record's content key."""
    try:
        img = record["image"]
        root = run_dir.resolve()
        path = (root / str(img["file"])).resolve()
        if not path.is_relative_to(root):
            return None
        data = path.read_bytes()
        if hashlib.sha1(data).hexdigest()[:16] != img["key"]:  # the content key encode_image gives
            return None
        w, h = int(img["width"]), int(img["height"])
        frame = Frame(w, h, int(img.get("orig_width", w)), int(img.get("orig_height", h)))
        enc = EncodedImage(key=str(img["key"]), frame=frame, mime=str(img["mime"]), data=data)
        return StepObservation(text=str(record["text"]), images=(enc,))
    except (KeyError, TypeError, ValueError, OSError):
        return None


def crop_loader(run_dir: Path | None, observe: Observer | None) -> Callable[[Node], StepObservation]:
    """Multi-turn: a node → its observation (stored crop, else cropped again; then the node's record is
    replaced by the observer's). ``ValueError`` when neither is possible."""

    def load(node: Node) -> StepObservation:
        obs = read_observation(run_dir, node.observation) if run_dir is not None and node.observation else None
        if obs is not None:
            return obs
        if observe is None or node.point is None:
            raise ValueError(f"node {node.id}: its observation cannot be rebuilt (no crop file and no point)")
        obs, record = observe(node.point)
        node.observation = record
        return obs

    return load


def rebuild_states(tree: Tree, root_state: PromptState,
                   observation: Callable[[Node], StepObservation | None] | None = None) -> dict[int, PromptState]:
    """The prompt state of every non-terminal node (see the module docstring)."""
    states = {0: root_state}
    for node in tree.nodes[1:]:
        if node.terminal or node.parent not in states:
            continue
        obs = observation(node) if observation is not None else None
        states[node.id] = states[node.parent].child(Turn(node.text, obs))
    return states


@dataclass
class Resumed:
    """What ``TreeSearch`` continues from: ``TreeSearch(tree, root_state, ..., states=, counters=)``."""

    tree: Tree
    states: dict[int, PromptState]
    counters: SearchCounters


def resume(record: dict[str, Any], root_state: PromptState, run_dir: Path | None = None,
           observe: Observer | None = None) -> Resumed:
    """Rebuild a checkpointed search for the sample of ``root_state``. ``ValueError`` (one line) when the
    record is corrupt or belongs to another frame or images than the sample has now."""
    tree = Tree.from_dict(record)
    ctx = root_state.context
    if tree.sample_id != ctx.sample.id:
        raise ValueError(f"checkpoint of {tree.sample_id!r}, not of {ctx.sample.id!r}")
    keys = [i.get("key") if isinstance(i, dict) else None for i in tree.images]
    if tree.frame != ctx.frame or keys != [e.key for e in ctx.images]:
        raise ValueError(f"{tree.sample_id}: the sample's images changed since the checkpoint")
    loader = crop_loader(run_dir, observe) if ctx.multiturn else None
    states = rebuild_states(tree, root_state, loader)
    return Resumed(tree=tree, states=states, counters=SearchCounters.from_stats(tree.stats))


__all__ = ["TrackedTeacher", "snapshot", "read_observation", "crop_loader", "rebuild_states",
           "Resumed", "resume"]
