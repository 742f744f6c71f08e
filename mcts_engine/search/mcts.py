"""Monte Carlo Tree Search over grounded steps: selection, expansion, rollouts, backup.

One simulation:
1. **Select** from the root by UCT, ``Q + c·sqrt(ln(N_parent + 1) / (N_child + 1))`` (the reference's
   form), descending through expanded nodes. Simulations in flight add *virtual loss*: each pending
   simulation counts as ``virtual_loss`` extra visits with zero value, so parallel simulations of one
   tree spread over different branches.
2. **Expand** the leaf: ONE request asks for ``children − len(existing children)`` continuations
   (rollout steps already under the node count towards its children). At depth ``max_depth − 1`` the
   request forces a final answer.
3. **Evaluate** each new child: an answer is scored by the task's verifier; a thought is continued by
   ``rollouts`` rollouts (the first steps of all rollouts in one request, then one request per step),
   each to a final answer. Every rollout step is kept in the tree as a node (``source = "rollout"``).
4. **Backup** each evaluation's score along its path (visits += 1, value_sum += score).

Rules: a thought step must name an in-frame point that its path has not visited yet (else it is
rejected: recorded in ``Tree.rejected`` with its reason and counted, never silently dropped); a
response with neither grammar is rejected likewise; identical sibling responses merge into one node.
A rollout step that is rejected is re-asked up to ``step_retries`` times; a rollout that still cannot
continue scores 0.

Pure helpers (``uct``, ``select_path``, ``backup``, ``check_step``) take plain trees; ``TreeSearch``
adds the asynchronous teacher calls.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import SearchConfig
from ..environment import check_tool_step
from ..grounding import ParsedStep, Point, parse_step
from ..teachers.base import Continuation, Observation, PromptState, Teacher, TeacherError, Turn, observes_inline
from ..verifiers import Verdict
from .tree import Node, Tree

# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


def uct(child: Node, parent: Node, c: float, virtual_loss: float) -> float:
    """UCT with virtual loss: pending simulations count as visits of value 0."""
    n_child = child.visits + virtual_loss * child.pending
    n_parent = parent.visits + virtual_loss * parent.pending
    q = child.value_sum / n_child if n_child > 0 else 0.0
    return q + c * math.sqrt(math.log(n_parent + 1) / (n_child + 1))


def best_child(tree: Tree, node: Node, c: float, virtual_loss: float) -> Node:
    """Argmax UCT; ties go to the older child (deterministic)."""
    best, best_score = None, -math.inf
    for cid in node.children:
        child = tree.nodes[cid]
        s = uct(child, node, c, virtual_loss)
        if s > best_score:
            best, best_score = child, s
    assert best is not None
    return best


def select_path(tree: Tree, cfg: SearchConfig) -> list[Node]:
    """Root → leaf to work on. A node whose children already fill its budget counts as expanded."""
    node = tree.root
    path = [node]
    while not node.terminal:
        if not node.expanded and len(node.children) >= cfg.children:
            node.expanded = True
        if not node.expanded or not node.children:
            break
        node = best_child(tree, node, cfg.exploration, cfg.virtual_loss)
        path.append(node)
    return path


def backup(tree: Tree, node: Node, value: float) -> None:
    cur: Node | None = node
    while cur is not None:
        cur.visits += 1
        cur.value_sum += value
        cur = tree.nodes[cur.parent] if cur.parent is not None else None


def check_step(
    tree: Tree, parent: Node, step: ParsedStep, finish_reason: str, require_point: bool, point: Point | None = None
) -> str | None:
    """Why this response cannot become a child of ``parent`` (None if it can). ``point`` overrides the
    thought's own point (multi-turn: the tool call's coordinate is the step's point)."""
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
    if point in tree.path_points(parent) or point == parent.point:
        return "repeated_point"
    return None


# --------------------------------------------------------------------------------------------
# Asynchronous search of one tree
# --------------------------------------------------------------------------------------------


class BudgetExhausted(Exception):
    pass


async def _gather_all(*coros) -> None:
    """Await every coroutine (none is left running), then raise the first error, if any."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r


@dataclass
class SearchCounters:
    calls: int = 0
    choices: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    simulations: int = 0
    rollouts: int = 0
    rollouts_failed: int = 0
    merged: int = 0
    errors: int = 0
    rejected: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "rejected"}
        d["rejected"] = dict(self.rejected)
        return d


class TreeSearch:
    """Runs ``cfg.simulations`` simulations on one tree, ``cfg.parallel_simulations`` at a time."""

    def __init__(
        self,
        tree: Tree,
        root_state: PromptState,
        teacher: Teacher,
        cfg: SearchConfig,
        verify: Callable[[str | None], Verdict],
        observe: Callable[[Point], tuple[Observation, dict]] | None = None,
        max_errors: int = 3,
        states: dict[int, PromptState] | None = None,
        counters: SearchCounters | None = None,
    ) -> None:
        """``verify`` scores a final answer; ``observe`` (multi-turn only) runs the zoom environment
        for a step's point and returns the observation and its JSON record for the node. It runs on a
        worker thread, except for a teacher that sets ``replays_in_order`` (the seeded sim teacher,
        whose replies depend on the order of requests): then inline, so a seeded run is reproducible.
        ``states`` and ``counters`` continue a checkpointed search (``search.resume``): the prompt state of
        every non-terminal node of ``tree`` and the counters so far (the budget left is what they leave)."""
        self.tree = tree
        self.observe = observe
        self._observe_inline = observes_inline(teacher)
        self.teacher = teacher
        self.cfg = cfg
        self.verify = verify  # (answer: str | None) -> Verdict
        self.max_errors = max_errors
        self.counters = counters if counters is not None else SearchCounters()
        self.states: dict[int, PromptState] = {**(states or {}), 0: root_state}
        self._expanding: dict[int, asyncio.Event] = {}  # node id -> set when its expansion request is done
        self.last_error: str | None = None

    # --- teacher calls -------------------------------------------------------------------
    async def _ask(self, node: Node, n: int, forced: bool) -> list[Continuation]:
        if self.counters.calls >= self.cfg.max_calls:
            raise BudgetExhausted
        self.counters.calls += 1
        state = self.states[node.id]
        reply = await self.teacher.complete(state.forced() if forced else state, n)
        self.counters.choices += len(reply.choices)
        self.counters.prompt_tokens += reply.prompt_tokens
        self.counters.completion_tokens += sum(c.completion_tokens for c in reply.choices)
        return reply.choices

    def _twin(self, parent: Node, text: str) -> Node | None:
        """An existing child with exactly this text (identical siblings merge into one node)."""
        for cid in parent.children:
            if self.tree.nodes[cid].text == text:
                self.counters.merged += 1
                return self.tree.nodes[cid]
        return None

    async def _attach(self, parent: Node, cont: Continuation, source: str, forced: bool) -> Node | None:
        """Turn a continuation into a child of ``parent`` (or merge with / reject it)."""
        step = parse_step(cont.text)
        point, reason = step.point, None
        if forced and step.kind != "answer":
            reason = "no_answer_at_max_depth"
        elif self.observe is not None and step.kind == "think" and cont.finish_reason != "length":
            point, reason = check_tool_step(step, self.tree.frame)
        if not reason:
            reason = check_step(self.tree, parent, step, cont.finish_reason, self.cfg.require_point, point)
        if reason:
            self.counters.rejected[reason.split(":", 1)[0]] += 1  # counted by kind, recorded in full
            self.tree.rejected.append({"parent": parent.id, "text": cont.text, "reason": reason, "source": source})
            return None
        twin = self._twin(parent, cont.text)
        if twin is not None:
            return twin
        observation, record = None, None
        if self.observe is not None and step.kind == "think" and point is not None:
            if self._observe_inline:
                observation, record = self.observe(point)
            else:  # crop + encode off the event loop (PIL releases the GIL while it encodes)
                observation, record = await asyncio.to_thread(self.observe, point)
            twin = self._twin(parent, cont.text)  # a sibling with the same text may have landed meanwhile
            if twin is not None:
                return twin
        node = self.tree.add(
            parent,
            text=cont.text,
            kind=step.kind,
            thought=step.thought,
            point=point,
            observation=record,
            answer=step.answer,
            source=source,
            finish_reason=cont.finish_reason,
            completion_tokens=cont.completion_tokens,
            forced=forced,
        )
        if node.terminal:
            verdict: Verdict = self.verify(step.answer)
            node.reward, node.correct, node.verdict = verdict.score, verdict.correct, verdict.reason
        else:
            self.states[node.id] = self.states[parent.id].child(Turn(cont.text, observation))
        return node

    def _forced(self, node: Node) -> bool:
        return node.depth + 1 >= self.cfg.max_depth

    # --- one simulation ------------------------------------------------------------------
    async def simulate(self) -> None:
        while True:
            path = select_path(self.tree, self.cfg)
            busy = self._expanding.get(path[-1].id)
            if busy is None:
                break
            await busy.wait()  # another simulation is expanding this leaf: select again once it is done
        for n in path:
            n.pending += 1
        try:
            await self._simulate(path[-1])
        finally:
            for n in path:
                n.pending -= 1
        self.counters.simulations += 1

    async def _simulate(self, leaf: Node) -> None:
        if leaf.terminal:
            backup(self.tree, leaf, leaf.reward or 0.0)
            return
        if leaf.expanded and not leaf.children:
            backup(self.tree, leaf, 0.0)  # a dead end: every continuation was rejected
            return
        forced = self._forced(leaf)
        want = self.cfg.children - len(leaf.children)
        before = set(leaf.children)
        if want > 0:
            done = self._expanding[leaf.id] = asyncio.Event()
            try:
                conts = await self._ask(leaf, want, forced)
                for c in conts:
                    await self._attach(leaf, c, "expand", forced)
                leaf.expanded = True
            finally:
                del self._expanding[leaf.id]
                done.set()
        leaf.expanded = True
        new = [self.tree.nodes[c] for c in leaf.children if c not in before]
        if not leaf.children:
            backup(self.tree, leaf, 0.0)
            return
        jobs = []
        for child in new:
            if child.terminal:
                backup(self.tree, child, child.reward or 0.0)
            else:
                jobs.append(self._rollouts(child))
        if jobs:
            await _gather_all(*jobs)

    async def _rollouts(self, child: Node) -> None:
        k = self.cfg.rollouts
        if k <= 0:
            return
        forced = self._forced(child)
        child.pending += 1  # its rollouts are evaluations in flight: virtual loss keeps others away
        try:
            conts = await self._ask(child, k, forced)
            firsts = [await self._attach(child, c, "rollout", forced) for c in conts]
            await _gather_all(*(self._rollout(child, first, forced) for first in firsts))
        finally:
            child.pending -= 1

    async def _rollout(self, start: Node, node: Node | None, forced: bool) -> None:
        """Continue one rollout from ``node`` (its first step; None if that was rejected) to an answer."""
        self.counters.rollouts += 1
        parent = start
        while True:
            tries = 0
            while node is None and tries < self.cfg.step_retries:
                tries += 1
                conts = await self._ask(parent, 1, forced)
                node = await self._attach(parent, conts[0], "rollout", forced) if conts else None
            if node is None:
                self.counters.rollouts_failed += 1
                backup(self.tree, parent, 0.0)
                return
            if node.terminal:
                backup(self.tree, node, node.reward or 0.0)
                return
            parent, node = node, None
            forced = self._forced(parent)

    # --- the whole search ------------------------------------------------------------------
    def _more(self) -> bool:
        if self.counters.simulations + self._running >= self.cfg.simulations:
            return False
        if self.counters.calls >= self.cfg.max_calls:
            return False
        if self.cfg.early_stop == "solved" and self.tree.solved:
            return False
        return self.counters.errors < self.max_errors

    async def _worker(self) -> None:
        while self._more():
            self._running += 1
            try:
                await self.simulate()
            except BudgetExhausted:
                self._running -= 1
                return
            except TeacherError as exc:
                self.counters.errors += 1
                self.last_error = str(exc)
            self._running -= 1

    async def run(self) -> Tree:
        """Search; raises TeacherError if the teacher kept failing (``max_errors``) before any result."""
        self._running = 0
        t0 = time.perf_counter()
        workers = max(1, min(self.cfg.parallel_simulations, self.cfg.simulations))
        await asyncio.gather(*(self._worker() for _ in range(workers)))
        self.tree.stats.update(self.counters.to_dict())
        self.tree.stats["seconds"] = round(time.perf_counter() - t0, 4)
        if self.counters.errors >= self.max_errors:
            raise TeacherError(f"teacher failed {self.counters.errors} times: {self.last_error}")
        return self.tree
