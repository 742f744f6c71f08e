"""Linearize search trees into training items. Pure: a tree (plus a verifier callback) in, plain
dataclasses out; no I/O, no images, no task registry.

What comes out of one tree:

- SFT chains (:meth:`Linearizer.sft_chains`), by strategy:
  ``best``        the highest-value verified-correct path;
  ``all_correct`` every distinct verified-correct path, ranked, up to ``max_chains_per_sample``; two
                  chains are the same chain when their texts match OR they visit the same points in
                  the same order and give the same answer (a rewording of one walk teaches nothing new);
  ``backtrack``   a verified-wrong path, the task's backtrack sentence, then the correct path from
                  the point where the two diverge (a shared prefix is said once), all in one ``<think>``;
                  up to ``max_backtrack_per_sample``, one per wrong *branch* (the first node where the
                  wrong path leaves the correct one) before a second from any branch.
  The default, ``all_correct,backtrack``, exports everything distinct the search found.
- DPO pairs (:meth:`Linearizer.dpo_pairs`): at a node with several children, a child whose subtree holds a
  verified-correct leaf against a sibling whose subtree holds a verified-wrong leaf, when their Q values
  differ by at least ``dpo_margin``. Both completions are full chains (shared prefix included).
- PRM rows (:meth:`Linearizer.prm_rows`): one row per maximal valid, visited path; every valid prefix of
  the tree is a prefix of some row, with each step's Monte-Carlo value ``Q`` and visit count.
- GRPO figures (:meth:`Linearizer.difficulty`): root value, solved, leaf counts.
- Multi-turn SFT chains (:meth:`Linearizer.mt_sft_chains`, a ``multiturn=True`` linearizer): the same
  paths and ranking, kept as turns (:class:`MultiTurnChain`): each step's response verbatim (its
  ``<tool_call>`` intact) with the environment's observation (the crop record), then the answer turn.
  ``backtrack`` keeps every turn of the wrong path (its zooms and their crops; the wrong answer dropped),
  then the correct path's turns from the divergence, the backtrack sentence opening the first one's
  ``<think>``; a correct path that answers right at the divergence has no turn to carry the sentence,
  so that pair gives no chain. Every tool call and crop in a chain is what the environment really
  returned for that point, so the conversation stays environment-consistent.

Invariants (what the tests pin down):

- A path is *valid* when every thought step has a point and every point its text mentions lies inside
  the teacher's frame (``Frame.contains``) and, unless ``allow_repeated_points``, no step's point
  repeats an earlier one on the same path. An answer
  node's own thought becomes a step only when it is grounded in-frame; otherwise it is left out.
- Only verified leaves count: ``correct`` is the re-verification (``verify`` callback) when given, else
  the ``correct`` flag the search recorded; ``None`` (never verified) is neither positive nor negative.
- Path value = mean ``Q`` over the path's visited nodes (root excluded). Ranking key: higher value, then
  fewer steps, then more leaf visits, then lower leaf id (the search's order) — fully deterministic.
- ``grounding.format_chain`` forms every target text; coordinates stay in the teacher's frame unless
  ``rescale_to_original`` (then every point, in thoughts and answers, goes through ``Frame.to_original``,
  clamped into the original image).
- Multi-turn (``multiturn=True``): a thought step is valid only if it also has an observation whose
  record names a crop image and whose text holds at most one ``<image>`` marker, and its response's
  tool call parses and names the node's point. Multi-turn texts are never rescaled (the crops were cut
  in the teacher's frame; the exporter refuses ``rescale_to_original`` for multi-turn).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..frame import Frame
from ..grounding import (
    _POINT_RE,
    IMAGE_MARKER,
    THINK_OPEN,
    Point,
    find_points,
    format_answer,
    format_chain,
    format_point,
    format_step,
    parse_step,
)
from ..search.tree import Node, Tree

STRATEGIES: tuple[str, ...] = ("best", "all_correct", "backtrack")
Verify = Callable[[str | None], bool]


@dataclass
class ExportConfig:
    """The recipe's ``export:`` section. Every knob has a documented default."""

    strategies: str = "all_correct,backtrack"  # SFT chains, comma-separated subset of best,all_correct,backtrack
    max_chains_per_sample: int = 8  # cap for all_correct (distinct correct chains per sample)
    max_correct_per_sample: int | None = None  # the former name of max_chains_per_sample (still accepted)
    max_backtrack_per_sample: int = 1  # backtrack chains per sample (one wrong path each, distinct wrong branches first)
    min_steps: int = 1  # grounded steps a positive chain needs (0 allows a bare answer)
    allow_repeated_points: bool = False  # a path that revisits an (x, y) is invalid (the search's rule)
    reverify: bool = True  # re-score every leaf with the task's verifier (the stored flag otherwise)
    rescale_to_original: bool = False  # store the original image and rescale points (else the teacher's frame)
    dpo_margin: float = 0.3  # minimum Q(chosen sibling) - Q(rejected sibling)
    max_dpo_pairs_per_sample: int = 4
    prm_min_visits: int = 1  # a prefix is labelled only if its last node has this many visits
    prm_label_threshold: float = 0.5  # PRM bool label: Q >= threshold (answer steps: verified correct)
    grpo_require_solved: bool = False  # GRPO prompts only from samples the search solved
    grpo_min_value: float = 0.0  # keep prompts whose root value lies in [min, max] ("hard but solvable")
    grpo_max_value: float = 1.0
    val_fraction: float = 0.05  # share of samples (split by image content hash) in the val files
    seed: int = 0  # the split's seed
    image_format: str = "auto"  # auto (a JPEG source stays JPEG, else PNG) | png | jpeg: how a resized image is stored
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        alias = self.max_correct_per_sample
        if alias is not None:
            if self.max_chains_per_sample not in (alias, ExportConfig.max_chains_per_sample):
                raise ValueError(f"export.max_correct_per_sample ({alias}) and export.max_chains_per_sample "
                                 f"({self.max_chains_per_sample}) disagree: set only max_chains_per_sample")
            self.max_chains_per_sample = alias

    def strategy_list(self) -> list[str]:
        out = [s.strip().replace("-", "_") for s in self.strategies.split(",") if s.strip()]
        bad = [s for s in out if s not in STRATEGIES]
        if bad:
            raise ValueError(f"export.strategies: unknown strategy {bad[0]!r} (known: {', '.join(STRATEGIES)})")
        if not out:
            raise ValueError("export.strategies: no strategy given")
        return list(dict.fromkeys(out))

    def validate(self) -> None:
        self.strategy_list()
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"export.val_fraction: {self.val_fraction} must be in [0, 1)")
        if self.image_format not in {"auto", "png", "jpeg"}:
            raise ValueError(f"export.image_format: {self.image_format!r} (auto, png or jpeg)")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"export.jpeg_quality: {self.jpeg_quality} must be in [1, 100]")
        for name in ("max_chains_per_sample", "max_backtrack_per_sample", "max_dpo_pairs_per_sample", "min_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"export.{name}: must be >= 0")


# --------------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Point rewriting (rescale_to_original)
# --------------------------------------------------------------------------------------------


def clamp_to_original(frame: Frame, point: Point) -> Point:
    x, y = frame.to_original(point)
    return (min(max(x, 0), frame.orig_width - 1), min(max(y, 0), frame.orig_height - 1))


def rescale_text(text: str, frame: Frame) -> str:
    """Every ``(x, y)`` of ``text`` mapped from the frame to the original image (integers, clamped)."""

    def sub(m) -> str:  # type: ignore[no-untyped-def]
        p = (round(float(m.group(1))), round(float(m.group(2))))
        return format_point(clamp_to_original(frame, p))

    return _POINT_RE.sub(sub, text)


# --------------------------------------------------------------------------------------------
# The linearizer
# --------------------------------------------------------------------------------------------


class Linearizer:
    """All training items of one tree. ``verify(answer) -> bool`` re-scores leaves (None: trust the
    stored ``correct`` flags). ``backtrack_sentence`` comes from the task."""

    def __init__(
        self,
        tree: Tree,
        cfg: ExportConfig | None = None,
        verify: Verify | None = None,
        backtrack_sentence: str = "Wait, this does not look right. Let me re-examine the image.",
        multiturn: bool = False,
    ) -> None:
        self.tree = tree
        self.cfg = cfg or ExportConfig()
        self.multiturn = multiturn
        self.backtrack_sentence = backtrack_sentence
        self.skips = Skips()
        self.correct: dict[int, bool | None] = {}
        self.verdict_changed = 0
        for n in tree.nodes:
            if n.kind != "answer":
                continue
            stored = n.correct if isinstance(n.correct, bool) else None
            if verify is not None and self.cfg.reverify and n.answer is not None:
                ok = bool(verify(n.answer))
                if stored is not None and ok != stored:
                    self.verdict_changed += 1
                self.correct[n.id] = ok
            else:
                self.correct[n.id] = stored
        self._steps: dict[int, Step | None | str] = {}
        self._paths: list[PathInfo] | None = None

    # --- steps and paths -----------------------------------------------------------------------
    def _out_point(self, p: Point) -> Point:
        return clamp_to_original(self.tree.frame, p) if self.cfg.rescale_to_original else p

    def _out_text(self, text: str) -> str:
        return rescale_text(text, self.tree.frame) if self.cfg.rescale_to_original else text

    def step(self, node: Node) -> Step | None | str:
        """The node's grounded step; ``None`` for an answer node without a grounded thought; a reason
        string when the node cannot be a step (a thought without an in-frame point)."""
        if node.id in self._steps:
            return self._steps[node.id]
        result: Step | None | str
        thought = (node.thought or "").strip()
        mentioned = find_points(thought)[0] if thought else ()
        point = node.point if node.point is not None else (mentioned[-1] if mentioned else None)
        in_frame = point is not None and all(self.tree.frame.contains(p) for p in (*mentioned, point))
        if node.kind == "answer":
            result = self._make_step(node, thought, point) if thought and in_frame else None  # type: ignore[arg-type]
        elif not thought:
            result = "empty thought"
        elif point is None:
            result = "step has no point"
        elif not in_frame:
            result = "point outside the frame"
        elif self.multiturn and (why := _observation_problem(node)):
            result = why
        else:
            result = self._make_step(node, thought, point)
        self._steps[node.id] = result
        return result

    def _make_step(self, node: Node, thought: str, point: Point) -> Step:
        if not find_points(thought)[0]:
            thought = f"{thought.rstrip().rstrip('.')} {format_point(point)}"
        return Step(node.id, self._out_text(thought), self._out_point(point), node.q, node.visits, point)

    def _prefix_ok(self, nodes: list[Node]) -> tuple[list[Step], str | None]:
        """Steps of a node sequence (root excluded) and the first reason it is invalid, if any."""
        steps: list[Step] = []
        seen: set[Point] = set()
        for n in nodes:
            if n.kind == "answer" and n is not nodes[-1]:
                return steps, "answer node inside a path"
            s = self.step(n)
            if isinstance(s, str):
                return steps, s
            if s is None:
                continue
            if s.frame_point in seen and not self.cfg.allow_repeated_points:
                return steps, "repeated point"
            seen.add(s.frame_point)
            steps.append(s)
        return steps, None

    def paths(self) -> list[PathInfo]:
        """Every valid root→answer path (invalid ones are counted in ``skips``)."""
        if self._paths is not None:
            return self._paths
        out: list[PathInfo] = []
        for leaf in self.tree.leaves():
            if leaf.answer is None or not leaf.answer.strip():
                self.skips.add("answer node without an answer")
                continue
            nodes = self.tree.path(leaf)
            steps, reason = self._prefix_ok(nodes)
            if reason:
                self.skips.add(f"path invalid: {reason}")
                continue
            visited = [n.q for n in nodes if n.visits > 0]
            value = sum(visited) / len(visited) if visited else 0.0
            out.append(
                PathInfo(
                    nodes=tuple(n.id for n in nodes),
                    steps=tuple(steps),
                    answer=self._out_text(leaf.answer.strip()),
                    correct=self.correct.get(leaf.id),
                    value=value,
                    leaf_visits=leaf.visits,
                )
            )
        self._paths = out
        return out

    def correct_paths(self) -> list[PathInfo]:
        """Valid verified-correct paths with at least ``min_steps`` steps, best first."""
        ok = [p for p in self.paths() if p.correct is True]
        short = [p for p in ok if len(p.steps) < self.cfg.min_steps]
        if short:
            self.skips.add(f"correct path with fewer than {self.cfg.min_steps} grounded steps", len(short))
        return sorted((p for p in ok if len(p.steps) >= self.cfg.min_steps), key=PathInfo.rank_key)

    def wrong_paths(self) -> list[PathInfo]:
        return [p for p in self.paths() if p.correct is False]

    # --- SFT -----------------------------------------------------------------------------------
    @staticmethod
    def _chain(strategy: str, path: PathInfo) -> Chain:
        return Chain(
            strategy=strategy,
            thoughts=tuple(s.text for s in path.steps),
            points=tuple(s.point for s in path.steps),
            answer=path.answer,
            value=path.value,
            leaf=path.leaf,
        )

    def best_chain(self) -> Chain | None:
        ranked = self.correct_paths()
        return self._chain("best", ranked[0]) if ranked else None

    def _distinct_correct(self, make: Callable[[PathInfo], Any]) -> list[Any]:
        """``make(path)`` for the ranked correct paths, each distinct chain once (by text, and by point
        sequence + answer), capped per sample."""
        out: list[Any] = []
        seen: set[Any] = set()
        for p in self.correct_paths():
            if len(out) >= self.cfg.max_chains_per_sample:
                break
            c = make(p)
            walk = (tuple(c.points), c.answer.strip().lower())
            if c.text in seen or walk in seen:
                self.skips.add("duplicate correct chain" if c.text in seen else "correct chain repeats another's points and answer")
                continue
            seen.update((c.text, walk))
            out.append(c)
        return out

    def all_correct_chains(self) -> list[Chain]:
        return self._distinct_correct(lambda p: self._chain("all_correct", p))

    def _backtracks(
        self,
        admit: Callable[[PathInfo, PathInfo, int], str | None],
        build: Callable[[PathInfo, PathInfo, int], Any | None],
    ) -> list[Any]:
        """Backtrack chains against the best correct path: every wrong path that ``admit`` accepts (else
        its reason is counted), lowest branch Q first, then the deepest divergence; ``build(good, wrong,
        shared)`` makes the chain (None: skipped); distinct texts, capped per sample."""
        ranked = self.correct_paths()
        if not ranked or self.cfg.max_backtrack_per_sample <= 0:
            return []
        good = ranked[0]
        cands: list[tuple[tuple[float, int, int], PathInfo, int]] = []
        for w in self.wrong_paths():
            shared = _common_prefix(good.nodes, w.nodes)
            reason = admit(good, w, shared)
            if reason:
                self.skips.add(reason)
                continue
            branch_q = self.tree.nodes[w.nodes[shared]].q
            cands.append(((branch_q, -shared, w.leaf), w, shared))
        out: list[Any] = []
        seen: set[str] = set()
        ranked_cands = sorted(cands, key=lambda t: t[0])
        branches: set[int] = set()  # one chain per wrong branch first, then the rest in rank order
        firsts, rest = [], []
        for cand in ranked_cands:
            branch = cand[1].nodes[cand[2]]
            (rest if branch in branches else firsts).append(cand)
            branches.add(branch)
        for _, w, shared in firsts + rest:
            c = build(good, w, shared)
            if c is None or c.text in seen:
                continue
            seen.add(c.text)
            out.append(c)
            if len(out) >= self.cfg.max_backtrack_per_sample:
                break
        return out

    def backtrack_chains(self) -> list[Chain]:
        def admit(good: PathInfo, w: PathInfo, shared: int) -> str | None:
            shared_ids = set(good.nodes[:shared])
            if not [s for s in w.steps if s.node not in shared_ids]:
                return "wrong path has no step of its own to backtrack from"
            return None

        def build(good: PathInfo, w: PathInfo, shared: int) -> Chain:
            shared_ids = set(good.nodes[:shared])
            right_after = [s for s in good.steps if s.node not in shared_ids]
            thoughts = [s.text for s in w.steps] + [self.backtrack_sentence] + [s.text for s in right_after]
            points = [s.point for s in w.steps] + [s.point for s in right_after]
            return Chain("backtrack", tuple(thoughts), tuple(points), good.answer, good.value, good.leaf, w.leaf)

        return self._backtracks(admit, build)

    def _by_strategy(self, strategies: list[str] | None, makers: dict[str, Callable[[], list[Any]]]) -> list[Any]:
        """Chains of the selected strategies, in the order given; a text already produced by an earlier
        strategy is not repeated (``best`` + ``all_correct`` never emits the best chain twice)."""
        out: list[Any] = []
        seen: set[str] = set()
        for strategy in strategies or self.cfg.strategy_list():
            if strategy not in makers:
                raise ValueError(f"unknown strategy {strategy!r}")
            for c in makers[strategy]():
                if c.text not in seen:
                    seen.add(c.text)
                    out.append(c)
        return out

    def sft_chains(self, strategies: list[str] | None = None) -> list[Chain]:
        return self._by_strategy(strategies, {
            "best": lambda: [c for c in [self.best_chain()] if c is not None],
            "all_correct": self.all_correct_chains,
            "backtrack": self.backtrack_chains,
        })

    # --- multi-turn SFT --------------------------------------------------------------------------
    def _answer_turn(self, leaf: Node, answer: str) -> ChainTurn:
        """The final turn: the answer, after the leaf's own thought when that thought is grounded."""
        s = self.step(leaf)
        text = format_answer(answer)
        if isinstance(s, Step):
            text = f"{format_step(s.text)}\n{text}"
        return ChainTurn(text=text)

    def _zoom_turns(self, nodes: tuple[int, ...]) -> list[ChainTurn]:
        out = []
        for nid in nodes:
            n = self.tree.nodes[nid]
            if n.kind == "think":
                out.append(ChainTurn(text=n.text.strip(), point=n.point, observation=n.observation))
        return out

    def _mt_chain(self, strategy: str, path: PathInfo) -> MultiTurnChain:
        turns = self._zoom_turns(path.nodes) + [self._answer_turn(self.tree.nodes[path.leaf], path.answer)]
        return MultiTurnChain(strategy, tuple(turns), path.answer, path.value, path.leaf)

    def mt_best_chain(self) -> MultiTurnChain | None:
        ranked = self.correct_paths()
        return self._mt_chain("best", ranked[0]) if ranked else None

    def mt_all_correct_chains(self) -> list[MultiTurnChain]:
        return self._distinct_correct(lambda p: self._mt_chain("all_correct", p))

    def mt_backtrack_chains(self) -> list[MultiTurnChain]:
        """Wrong path's zoom turns, then the correct path's turns after the divergence (see module doc)."""

        def thinks(nodes: list[int]) -> list[int]:
            return [nid for nid in nodes if self.tree.nodes[nid].kind == "think"]

        def admit(good: PathInfo, w: PathInfo, shared: int) -> str | None:
            if not thinks(w.nodes[shared:]):
                return "wrong path has no step of its own to backtrack from"
            if not thinks(good.nodes[shared:]):
                return "multi-turn backtrack: the correct path answers at the divergence (no turn to carry the sentence)"
            return None

        def build(good: PathInfo, w: PathInfo, shared: int) -> MultiTurnChain | None:
            wrong_turns = self._zoom_turns(w.nodes[:-1])
            right_turns = self._zoom_turns(good.nodes[shared:])
            first = right_turns[0]
            body = first.text.lstrip()
            if not body.startswith(THINK_OPEN):
                self.skips.add("multi-turn backtrack: the correct turn does not open with <think>")
                return None
            text = f"{THINK_OPEN} {self.backtrack_sentence.strip()} {body[len(THINK_OPEN):].lstrip()}"
            right_turns[0] = ChainTurn(text=text, point=first.point, observation=first.observation)
            turns = wrong_turns + right_turns + [self._answer_turn(self.tree.nodes[good.leaf], good.answer)]
            return MultiTurnChain("backtrack", tuple(turns), good.answer, good.value, good.leaf, w.leaf)

        return self._backtracks(admit, build)

    def mt_sft_chains(self, strategies: list[str] | None = None) -> list[MultiTurnChain]:
        """Multi-turn chains of the selected strategies (same order and dedupe rule as :meth:`sft_chains`)."""
        return self._by_strategy(strategies, {
            "best": lambda: [c for c in [self.mt_best_chain()] if c is not None],
            "all_correct": self.mt_all_correct_chains,
            "backtrack": self.mt_backtrack_chains,
        })

    # --- DPO -----------------------------------------------------------------------------------
    def dpo_pairs(self) -> list[Pair]:
        """Sibling pairs (see the module docstring), largest Q margin first, capped per sample."""
        best_correct: dict[int, PathInfo] = {}  # node id -> best correct path through it
        worst_wrong: dict[int, PathInfo] = {}  # node id -> lowest-value wrong path through it
        for p in self.correct_paths():  # best first: keep the first seen
            for nid in p.nodes:
                best_correct.setdefault(nid, p)
        for p in sorted(self.wrong_paths(), key=lambda p: (p.value, len(p.steps), p.leaf)):
            for nid in p.nodes:
                worst_wrong.setdefault(nid, p)
        pairs: list[Pair] = []
        for parent in self.tree.nodes:
            kids = [self.tree.nodes[c] for c in parent.children]
            if len(kids) < 2:
                continue
            for c in kids:
                if c.id not in best_correct or c.visits == 0:
                    continue
                for w in kids:
                    if w.id == c.id or w.id not in worst_wrong or w.visits == 0:
                        continue
                    if c.q - w.q < self.cfg.dpo_margin:
                        continue
                    good, bad = best_correct[c.id], worst_wrong[w.id]
                    shared = _common_prefix(good.nodes, bad.nodes)
                    prefix_ids = set(good.nodes[:shared])
                    pairs.append(
                        Pair(
                            node=parent.id,
                            prefix_steps=sum(1 for s in good.steps if s.node in prefix_ids),
                            chosen=self._chain("dpo_chosen", good),
                            rejected=self._chain("dpo_rejected", bad),
                            chosen_q=c.q,
                            rejected_q=w.q,
                        )
                    )
        pairs.sort(key=lambda p: (-(p.chosen_q - p.rejected_q), p.node, p.chosen.leaf, p.rejected.leaf))
        out: list[Pair] = []
        seen: set[tuple[str, str]] = set()
        for p in pairs:
            key = (p.chosen.text, p.rejected.text)
            if key in seen or p.chosen.text == p.rejected.text:
                continue
            seen.add(key)
            out.append(p)
            if len(out) >= self.cfg.max_dpo_pairs_per_sample:
                break
        return out

    # --- PRM -----------------------------------------------------------------------------------
    def prm_rows(self) -> list[PrmRow]:
        """One row per maximal valid path whose nodes all have ``prm_min_visits`` visits."""
        min_visits = max(1, self.cfg.prm_min_visits)
        good: dict[int, tuple[list[Node], list[Step | None]]] = {}
        for n in self.tree.nodes[1:]:
            par = n.parent
            if par is None or (par != 0 and par not in good) or n.visits < min_visits:
                continue
            prev_nodes, prev_steps = good.get(par, ([], []))
            if n.kind == "answer" and (n.answer is None or not n.answer.strip()):
                continue
            s = self.step(n)
            if isinstance(s, str):
                continue
            if s is not None and not self.cfg.allow_repeated_points:
                if any(m is not None and m.frame_point == s.frame_point for m in prev_steps):
                    continue
            good[n.id] = (prev_nodes + [n], prev_steps + [s])
        rows: list[PrmRow] = []
        for nid, (nodes, steps) in good.items():
            if any(c in good for c in self.tree.nodes[nid].children):
                continue
            texts, values, visits, labels = [], [], [], []
            answer = correct = None
            for n, s in zip(nodes, steps):
                if n.kind == "answer":
                    answer = self._out_text(n.answer.strip())  # type: ignore[union-attr]
                    correct = self.correct.get(n.id)
                    lead = f"{s.text} " if s is not None else ""
                    texts.append(lead + format_answer(answer))
                    labels.append(bool(correct) if correct is not None else n.q >= self.cfg.prm_label_threshold)
                else:
                    assert s is not None
                    texts.append(s.text)
                    labels.append(n.q >= self.cfg.prm_label_threshold)
                values.append(n.q)
                visits.append(n.visits)
            rows.append(
                PrmRow(tuple(n.id for n in nodes), tuple(texts), tuple(values), tuple(visits), tuple(labels), answer, correct)
            )
        return rows

    # --- GRPO ----------------------------------------------------------------------------------
    def difficulty(self) -> Difficulty:
        verdicts = [v for v in self.correct.values() if v is not None]
        n_correct = sum(1 for v in verdicts if v)
        return Difficulty(
            root_value=self.tree.root.q,
            solved=n_correct > 0,
            answers=len(self.correct),
            verified=len(verdicts),
            correct=n_correct,
        )

    def keep_for_grpo(self) -> tuple[bool, str | None]:
        d = self.difficulty()
        if self.cfg.grpo_require_solved and not d.solved:
            return False, "GRPO: not solved by the search (grpo_require_solved)"
        if not self.cfg.grpo_min_value <= d.root_value <= self.cfg.grpo_max_value:
            return False, "GRPO: root value outside [grpo_min_value, grpo_max_value]"
        return True, None


def _observation_problem(node: Node) -> str | None:
    """Why a multi-turn thought step cannot be exported (None if it can)."""
    obs = node.observation
    if not isinstance(obs, dict):
        return "step has no observation"
    img = obs.get("image")
    if not isinstance(img, dict) or not img.get("file"):
        return "observation has no crop image"
    if str(obs.get("text", "")).count(IMAGE_MARKER) > 1:
        return "observation text has more than one <image> marker"
    call = parse_step(node.text).tool_call
    if call is None or call.point is None:
        return "step has no valid tool call"
    if call.point != node.point:
        return "tool call does not name the step's point"
    return None


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def chain_points(chain_text: str) -> list[Point]:
    """The points a chain text mentions, in order (what a reader of the row would see)."""
    return list(find_points(chain_text)[0])
