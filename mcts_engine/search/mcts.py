"""Monte Carlo Tree Search over grounded steps: selection, expansion, rollouts, backup.

One simulation:
1. **Select** from the root by PUCT (default; ``puct_exploration``) or UCT (``exploration``), per
   ``search.selection`` (formulas, priors, virtual loss and the MCTS-Solver rules in :mod:`.select`),
   descending only through *open* nodes: a judged answer leaf is closed, and so is a fully expanded
   node whose children are all closed. A closed root ends the search.
2. **Expand** the leaf: ONE request asks for ``k(N) − len(existing children)`` continuations (at
   least one; ``k(N)`` is ``children`` unless progressive widening is on, see :mod:`.select`; rollout
   steps already under the node count towards its children). The node is fully expanded (closable)
   only at its child cap or after ``expand_asks`` requests that brought nothing new. At depth
   ``max_depth − 1`` the request forces a final answer.
3. **Evaluate** each new child: an answer is scored by the task's verifier (no rollout from it); a
   thought first gets one forced-answer request with ``answer_probe``, and is continued by ``rollouts`` rollouts (``rollouts_after_solved`` once the tree holds a
   verified-correct path), the first steps of all rollouts in one request, then one request per
   step, each to a final answer or to a closed node (whose exact value it takes). Every rollout step
   is kept in the tree as a node (``source = "rollout"``).
4. **Backup** each evaluation's score along its path (visits += 1, value_sum += score).

Rules: a thought step must name an in-frame point farther than ``min_point_distance`` (a fraction of
the frame's diagonal) from every point its path has visited (else it is rejected as
``repeated_point``: recorded in ``Tree.rejected`` with its reason and counted, never silently dropped);
a response with neither grammar is rejected likewise; identical sibling responses merge into one node,
and so does a sibling step whose point lies within that distance of a sibling's point
(``merged_near``). A rollout step that is rejected is re-asked up to ``step_retries`` times; a rollout
that still cannot continue scores 0.

Failures: a request that fails (``TeacherError`` after the client's own retries) costs only that
expansion (the node stays expandable) or that rollout; the search goes on within its budget, counts
``errors`` and keeps the first error texts in ``tree.stats["error_texts"]``. ``max_consecutive_errors``
failures in a row end the tree early with what it found; :meth:`TreeSearch.run` raises
``TeacherError`` only when the teacher gave the tree nothing (no node besides the root).

Stopping (:mod:`.stopping`): the budget, a closed root, or ``early_stop`` (``solved`` | ``enough``).

A tree handed to :class:`TreeSearch` with nodes already in it (a resumed checkpoint) keeps them: the
solver flags are recomputed, the counters continue from ``tree.stats`` (so budgets continue), and the
caller provides ``search.states[node.id]`` for every node the search may extend.

Pure helpers (``uct``, ``puct``, ``select_path``, ``backup``, ``check_step``) take plain trees;
``TreeSearch`` adds the asynchronous teacher calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..config import SearchConfig
from ..grounding import ParsedStep, Point, parse_step
from ..teachers.base import Continuation, PromptState, StepObservation, Teacher, TeacherError, Turn, observes_inline
from ..verifiers import Verdict
from ..zoom.environment import check_tool_step
from . import select
from .points import check_step, min_distance, near
from .select import backup, close_all, open_children, puct, refresh_closed, uct
from .stopping import early_stop_reached
from .tree import Node, Tree

log = logging.getLogger("mcts_engine.search")
MAX_ERROR_TEXTS = 5  # failed requests' messages kept on the tree record
_notices: set[str] = set()  # one-time notices already given in this process


def notice_once(key: str, message: str) -> None:
    """Log ``message`` as a warning the first time ``key`` is seen in this process."""
    if key not in _notices:
        _notices.add(key)
        log.warning(message)


# --------------------------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------------------------


def best_child(tree: Tree, node: Node, c: float, virtual_loss: float, rule: str = "uct") -> Node | None:
    """Argmax UCT (or PUCT) over the open children; ties go to the older child (deterministic)."""
    return select.best_child(tree, node, c, virtual_loss, rule)


def select_path(tree: Tree, cfg: SearchConfig) -> list[Node]:
    """Root → leaf to work on (see :func:`.select.select_path`)."""
    c = cfg.puct_exploration if cfg.selection == "puct" else cfg.exploration
    return select.select_path(tree, cfg.children, c, cfg.virtual_loss, cfg.selection,
                              cfg.max_children, cfg.widen_c, cfg.widen_alpha, cfg.prior_temperature)


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
    """What a search spent and saw; written to ``tree.stats`` (and read back from it on resume)."""

    calls: int = 0
    choices: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    simulations: int = 0
    rollouts: int = 0
    rollouts_failed: int = 0
    rollouts_closed: int = 0  # rollouts that stopped on reaching a closed node (its exact value backed up)
    merged: int = 0  # identical sibling responses merged into one node
    merged_near: int = 0  # sibling steps within min_point_distance merged into one node
    errors: int = 0  # requests that failed after the client's retries
    priors_missing: int = 0  # puct: choices that came without a log-prob
    rejected: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "rejected"}
        d["rejected"] = dict(self.rejected)
        return d

    @classmethod
    def from_stats(cls, stats: dict[str, Any]) -> SearchCounters:
        """Counters that continue a tree's recorded ``stats`` (a resumed tree keeps its budgets)."""
        out = cls()
        for name in out.__dict__:
            if name != "rejected" and isinstance(stats.get(name), (int, float)) and not isinstance(stats.get(name), bool):
                setattr(out, name, int(stats[name]))
        rejected = stats.get("rejected")
        if isinstance(rejected, dict):
            out.rejected.update({str(k): int(v) for k, v in rejected.items() if isinstance(v, int)})
        return out


class TreeSearch:
    """Runs ``cfg.simulations`` simulations on one tree, ``cfg.parallel_simulations`` at a time."""

    def __init__(
        self,
        tree: Tree,
        root_state: PromptState,
        teacher: Teacher,
        cfg: SearchConfig,
        verify: Callable[[str | None], Verdict],
        observe: Callable[[Point], tuple[StepObservation, dict]] | None = None,
        max_errors: int | None = None,
        states: dict[int, PromptState] | None = None,
        counters: SearchCounters | None = None,
    ) -> None:
        """``verify`` scores a final answer; ``observe`` (multi-turn only) runs the zoom environment
        for a step's point and returns the observation and its JSON record for the node. It runs on a
        worker thread, except for a teacher that sets ``replays_in_order`` (the seeded sim teacher,
        whose replies depend on the order of requests): then inline, so a seeded run is reproducible.
        ``max_errors`` overrides ``cfg.max_consecutive_errors``. ``states`` and ``counters`` continue a
        checkpointed search (``search.resume``): the prompt state of every non-terminal node of ``tree`` and
        the counters so far (default: read from ``tree.stats``); the budget left is what they leave."""
        self.tree = tree
        self.observe = observe
        self._observe_inline = observes_inline(teacher)
        self.teacher = teacher
        self.cfg = cfg
        self.verify = verify  # (answer: str | None) -> Verdict
        self.max_errors = max_errors or cfg.max_consecutive_errors
        self.counters = counters if counters is not None else SearchCounters.from_stats(tree.stats)
        self.consecutive_errors = 0
        self.error_texts: list[str] = list(tree.stats.get("error_texts") or [])[:MAX_ERROR_TEXTS]
        self.states: dict[int, PromptState] = {**(states or {}), 0: root_state}
        self._expanding: dict[int, asyncio.Event] = {}  # node id -> set when its expansion request is done
        self._min_dist = min_distance(tree, cfg.min_point_distance)
        self._seconds0 = float(tree.stats.get("seconds", 0.0) or 0.0)
        self._running = 0
        self.stop_reason: str | None = None
        self.last_error: str | None = None
        close_all(tree)  # a tree handed over with nodes (resume): solver flags from its structure

    # --- teacher calls -------------------------------------------------------------------
    async def _ask(self, node: Node, n: int, forced: bool) -> list[Continuation]:
        if self.counters.calls >= self.cfg.max_calls:
            raise BudgetExhausted
        self.counters.calls += 1
        state = self.states[node.id]
        try:
            reply = await self.teacher.complete(state.forced() if forced else state, n)
        except TeacherError as exc:
            self.counters.errors += 1
            self.consecutive_errors += 1
            self.last_error = str(exc)
            if len(self.error_texts) < MAX_ERROR_TEXTS:
                self.error_texts.append(self.last_error[:300])
            raise
        self.consecutive_errors = 0
        self.counters.choices += len(reply.choices)
        self.counters.prompt_tokens += reply.prompt_tokens
        self.counters.completion_tokens += sum(c.completion_tokens for c in reply.choices)
        return reply.choices

    def _twin(self, parent: Node, text: str, step: ParsedStep | None = None, point: Point | None = None) -> Node | None:
        """An existing child with exactly this text, or (a thought with ``point``) a thought sibling
        whose point lies within ``min_point_distance``: the new response merges into it."""
        for cid in parent.children:
            if self.tree.nodes[cid].text == text:
                self.counters.merged += 1
                return self.tree.nodes[cid]
        if step is not None and step.kind == "think" and point is not None and self._min_dist > 0:
            for cid in parent.children:
                sib = self.tree.nodes[cid]
                if sib.kind == "think" and sib.point is not None and near(point, sib.point, self._min_dist):
                    self.counters.merged_near += 1
                    return sib
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
            reason = check_step(self.tree, parent, step, cont.finish_reason, self.cfg.require_point, point, self._min_dist)
        if reason:
            self.counters.rejected[reason.split(":", 1)[0]] += 1  # counted by kind, recorded in full
            self.tree.rejected.append({"parent": parent.id, "text": cont.text, "reason": reason, "source": source})
            return None
        if self.cfg.selection == "puct" and cont.logprob is None:
            self.counters.priors_missing += 1
            notice_once("priors", "search.selection=puct: the teacher returned no log-probs; PUCT uses uniform "
                                  "priors (does the server support logprobs? teacher.logprobs must be on)")
        twin = self._twin(parent, cont.text, step, point)
        if twin is not None:
            return twin
        observation, record = None, None
        if self.observe is not None and step.kind == "think" and point is not None:
            if self._observe_inline:
                observation, record = self.observe(point)
            else:  # crop + encode off the event loop (PIL releases the GIL while it encodes)
                observation, record = await asyncio.to_thread(self.observe, point)
            twin = self._twin(parent, cont.text, step, point)  # a sibling may have landed meanwhile
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
            logprob=cont.logprob,
        )
        if node.terminal:
            verdict: Verdict = self.verify(step.answer)
            node.reward, node.correct, node.verdict = verdict.score, verdict.correct, verdict.reason
            refresh_closed(self.tree, node)
        else:
            self.states[node.id] = self.states[parent.id].child(Turn(cont.text, observation))
        return node

    def _forced(self, node: Node) -> bool:
        return node.depth + 1 >= self.cfg.max_depth

    # --- one simulation ------------------------------------------------------------------
    async def simulate(self) -> None:
        """One simulation (a request that fails ends it early; the error is counted)."""
        closings = 0  # each closes a node: at most one per node (a guard, should closing ever not stick)
        while True:
            path = select_path(self.tree, self.cfg)
            leaf = path[-1]
            busy = self._expanding.get(leaf.id)
            if busy is not None:
                await busy.wait()  # another simulation is expanding this leaf: select again once it is done
                continue
            if closings <= len(self.tree.nodes) and leaf.expanded and leaf.children and not open_children(self.tree, leaf):
                refresh_closed(self.tree, leaf)  # every child closed: the leaf closes; select again
                closings += 1
                continue
            break
        if self.tree.root.closed:
            return
        for n in path:
            n.pending += 1
        try:
            await self._simulate(path[-1])
        except TeacherError:
            pass  # counted by _ask; the node stays expandable, the search goes on
        finally:
            for n in path:
                n.pending -= 1
            self.counters.simulations += 1
            self._sync_stats()

    async def _simulate(self, leaf: Node) -> None:
        if leaf.terminal:
            backup(self.tree, leaf, leaf.reward or 0.0)
            return
        if leaf.expanded and not leaf.children:
            refresh_closed(self.tree, leaf)  # a dead end: every continuation was rejected
            backup(self.tree, leaf, 0.0)
            return
        forced = self._forced(leaf)
        cfg = self.cfg
        cap = max(cfg.children, cfg.max_children)
        before = set(leaf.children)
        if not leaf.expanded:
            # k(N) − children it holds; at least one when every child it holds is closed (ask again)
            limit = select.child_limit(leaf, cfg.children, cfg.max_children, cfg.widen_c, cfg.widen_alpha)
            want = min(cap - len(leaf.children), max(1, limit - len(leaf.children)))
            done = self._expanding[leaf.id] = asyncio.Event()
            try:
                conts = await self._ask(leaf, want, forced)  # a TeacherError leaves the leaf unexpanded
                for c in conts:
                    await self._attach(leaf, c, "expand", forced)
                if not set(leaf.children) - before:
                    leaf.fruitless += 1  # nothing new: every continuation merged or was rejected
                if len(leaf.children) >= cap or leaf.fruitless >= cfg.expand_asks:
                    leaf.expanded = True  # fully expanded: the solver may close it
            finally:
                del self._expanding[leaf.id]
                done.set()
        refresh_closed(self.tree, leaf)
        new = [self.tree.nodes[c] for c in leaf.children if c not in before]
        if not leaf.children:
            backup(self.tree, leaf, 0.0)
            return
        jobs = []
        for child in new:
            if child.terminal:
                backup(self.tree, child, child.reward or 0.0)  # exact value; no rollout from an answer
            else:
                jobs.append(self._rollouts(child))
        if jobs:
            await _gather_all(*jobs)

    def _rollout_count(self, child: Node) -> int:
        k = self.cfg.rollouts
        if self.cfg.rollouts_after_solved >= 0 and self.tree.solved:
            k = self.cfg.rollouts_after_solved
        if self.cfg.adaptive_rollouts and child.parent is not None:
            parent = self.tree.nodes[child.parent]
            if parent.visits and self.tree.root.visits and parent.q < self.tree.root.q:
                k = min(k, 1)
        return k

    def _forced_rollout(self, start: Node, node: Node) -> bool:
        """The rollout from ``start`` must answer after ``node``: the tree's depth limit, or ``rollout_depth``."""
        depth = self.cfg.rollout_depth
        return self._forced(node) or (depth > 0 and node.depth - start.depth + 1 >= depth)

    async def _probe(self, child: Node) -> None:
        """``answer_probe``: one forced-answer request at a new thought child (its path's answer now)."""
        try:
            conts = await self._ask(child, 1, True)
        except TeacherError:
            return
        node = await self._attach(child, conts[0], "rollout", True) if conts else None
        if node is not None and node.terminal:
            backup(self.tree, node, node.reward or 0.0)

    async def _rollouts(self, child: Node) -> None:
        if self.cfg.answer_probe and not self._forced(child):
            child.pending += 1
            try:
                await self._probe(child)
            finally:
                child.pending -= 1
        k = self._rollout_count(child)
        if k <= 0:
            return
        forced = self._forced_rollout(child, child)
        child.pending += 1  # its rollouts are evaluations in flight: virtual loss keeps others away
        try:
            try:
                conts = await self._ask(child, k, forced)
            except TeacherError:
                return  # this child's rollouts are lost; the child stays in the tree, unvisited
            firsts = [await self._attach(child, c, "rollout", forced) for c in conts]
            await _gather_all(*(self._rollout(child, first, forced) for first in firsts))
        finally:
            child.pending -= 1

    async def _rollout(self, start: Node, node: Node | None, forced: bool) -> None:
        """Continue one rollout from ``node`` (its first step; None if that was rejected) to an answer
        or a closed node. A failed request ends only this rollout (nothing is backed up)."""
        self.counters.rollouts += 1
        parent = start
        while True:
            tries = 0
            while node is None and tries < self.cfg.step_retries:
                tries += 1
                try:
                    conts = await self._ask(parent, 1, forced)
                except TeacherError:
                    return
                node = await self._attach(parent, conts[0], "rollout", forced) if conts else None
            if node is None:
                self.counters.rollouts_failed += 1
                backup(self.tree, parent, 0.0)
                return
            if node.terminal:
                backup(self.tree, node, node.reward or 0.0)
                return
            if node.closed:  # merged into a subtree with nothing left to learn: take its exact value
                self.counters.rollouts_closed += 1
                backup(self.tree, node, node.exact or 0.0)
                return
            parent, node = node, None
            forced = self._forced_rollout(start, parent)

    # --- the whole search ------------------------------------------------------------------
    def _why_stop(self) -> str | None:
        """Why no new simulation should start (None: go on)."""
        cfg = self.cfg
        if self.counters.calls >= cfg.max_calls:
            return "max_calls"
        if self.tree.root.closed:
            return "closed"
        if early_stop_reached(self.tree, cfg.early_stop, cfg.target_correct):
            return cfg.early_stop
        if self.consecutive_errors >= self.max_errors:
            return "errors"
        if self.counters.simulations + self._running >= cfg.simulations:
            return "simulations"
        return None

    async def _worker(self) -> None:
        while True:
            why = self._why_stop()
            if why is not None:
                if self.stop_reason is None or why != "simulations":
                    self.stop_reason = why
                return
            self._running += 1
            try:
                await self.simulate()
            except BudgetExhausted:
                self.stop_reason = "max_calls"
                return
            finally:
                self._running -= 1

    def _sync_stats(self) -> None:
        """Mirror the counters into ``tree.stats`` (a checkpoint taken mid-search reads them there)."""
        self.tree.stats.update(self.counters.to_dict())
        self.tree.stats["error_texts"] = list(self.error_texts)

    async def run(self) -> Tree:
        """Search; raises ``TeacherError`` only if the teacher gave the tree nothing usable."""
        t0 = time.perf_counter()
        self._running = 0
        workers = max(1, min(self.cfg.parallel_simulations, self.cfg.simulations))
        await asyncio.gather(*(self._worker() for _ in range(workers)))
        self._sync_stats()
        if not self.error_texts:
            self.tree.stats.pop("error_texts", None)
        self.tree.stats["stop"] = self.stop_reason or "simulations"
        self.tree.stats["seconds"] = round(self._seconds0 + time.perf_counter() - t0, 4)
        if len(self.tree.nodes) == 1 and self.counters.errors:
            raise TeacherError(f"teacher failed {self.counters.errors} times and gave nothing usable: {self.last_error}")
        return self.tree


__all__ = ["TreeSearch", "SearchCounters", "BudgetExhausted", "backup", "best_child", "check_step", "min_distance",
           "near", "notice_once", "puct", "select_path", "uct"]
