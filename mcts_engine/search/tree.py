"""Search trees: nodes, statistics, (de)serialization. Pure data, no I/O.

Invariants:
- ``nodes[0]`` is the root (the question, no text); a node's ``parent`` index is smaller than its own.
- Every response the teacher wrote is a node (expansion children AND rollout steps), or, if a rule
  rejected it (point outside the frame, repeated point, no grammar), an entry of ``Tree.rejected``.
- ``visits``/``value_sum`` count completed evaluations below a node (a leaf's verifier score backed up
  along its path); ``Q = value_sum / visits``. Virtual loss lives only in memory (``pending``).
- A node is ``expanded`` (fully expanded) once it holds its ``children`` (or ``max_children``) distinct
  children or its requests stopped bringing new ones (``search.select``: merged siblings leave it
  expandable); rollout nodes start unexpanded, and their rollout child counts towards the node's
  children when it is expanded later.
- ``logprob`` is the teacher's log-probability of the step (sum over its tokens), when the server gave
  one (PUCT priors); records written before it existed simply have none.
- ``closed``/``exact`` (MCTS-Solver, ``search.select``) are derived from the tree and live only in
  memory, like ``pending``: ``Tree.from_dict`` recomputes them, so no record needs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..frame import Frame
from ..grounding import Point

TREE_FORMAT = 1


@dataclass
class Node:
    id: int
    parent: int | None
    depth: int  # steps from the root (root = 0)
    text: str = ""  # the teacher's full response for this step (closing tag included)
    kind: str = "root"  # root | think | answer
    thought: str = ""
    point: Point | None = None  # the step's grounding point, in the teacher's frame
    answer: str | None = None
    observation: dict[str, Any] | None = None  # multi-turn: what the environment showed after this step
    source: str = "root"  # root | expand | rollout
    children: list[int] = field(default_factory=list)
    expanded: bool = False
    visits: int = 0
    value_sum: float = 0.0
    reward: float | None = None  # verifier score (answer nodes)
    correct: bool | None = None
    verdict: str | None = None  # the verifier's reason
    finish_reason: str | None = None
    completion_tokens: int = 0
    forced: bool = False  # the answer was forced at max depth
    logprob: float | None = None  # the teacher's log-prob of this step (sum over its tokens), if given
    pending: int = 0  # simulations in flight through this node (virtual loss; not serialized)
    closed: bool = False  # MCTS-Solver: nothing left to learn below (not serialized; see search.select)
    exact: float | None = None  # a closed node's exact value (not serialized)
    fruitless: int = 0  # expansion requests that added no new distinct child (not serialized; search.select)

    @property
    def terminal(self) -> bool:
        return self.kind == "answer"

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "parent": self.parent,
            "depth": self.depth,
            "kind": self.kind,
            "source": self.source,
            "text": self.text,
            "children": list(self.children),
            "expanded": self.expanded,
            "visits": self.visits,
            "value_sum": self.value_sum,
        }
        if self.kind != "root":
            d.update(
                thought=self.thought,
                point=list(self.point) if self.point else None,
                finish_reason=self.finish_reason,
                completion_tokens=self.completion_tokens,
            )
        if self.kind == "answer":
            d.update(answer=self.answer, reward=self.reward, correct=self.correct, verdict=self.verdict, forced=self.forced)
        if self.observation is not None:
            d["observation"] = self.observation
        if self.logprob is not None:
            d["logprob"] = self.logprob
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        pt = d.get("point")
        return cls(
            id=int(d["id"]),
            parent=d.get("parent"),
            depth=int(d.get("depth", 0)),
            text=d.get("text", ""),
            kind=d.get("kind", "think"),
            thought=d.get("thought", ""),
            point=(int(pt[0]), int(pt[1])) if pt else None,
            answer=d.get("answer"),
            observation=d.get("observation"),
            source=d.get("source", "expand"),
            children=[int(c) for c in d.get("children", [])],
            expanded=bool(d.get("expanded", False)),
            visits=int(d.get("visits", 0)),
            value_sum=float(d.get("value_sum", 0.0)),
            reward=d.get("reward"),
            correct=d.get("correct"),
            verdict=d.get("verdict"),
            finish_reason=d.get("finish_reason"),
            completion_tokens=int(d.get("completion_tokens", 0)),
            forced=bool(d.get("forced", False)),
            logprob=float(d["logprob"]) if d.get("logprob") is not None else None,
        )


@dataclass
class Tree:
    """One sample's search. ``frame`` is the teacher's frame (points live in it)."""

    sample_id: str
    task: str
    frame: Frame
    nodes: list[Node] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {"parent", "text", "reason"}
    stats: dict[str, Any] = field(default_factory=dict)  # calls, tokens, seconds, rejections by reason
    sample: dict[str, Any] = field(default_factory=dict)  # Sample.to_record()
    truth: dict[str, Any] = field(default_factory=dict)  # the task's ground truth (frame coords)
    prompt: dict[str, Any] = field(default_factory=dict)  # {"system", "user"}: what the teacher saw
    # The images exactly as the teacher saw them (resized to ``frame``), stored once in the run
    # directory: [{"key", "file" (relative to the run dir), "width", "height", "mime"}].
    images: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes.append(Node(id=0, parent=None, depth=0))

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: Node, **fields: Any) -> Node:
        node = Node(id=len(self.nodes), parent=parent.id, depth=parent.depth + 1, **fields)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def path(self, node: Node) -> list[Node]:
        """Root→node, root excluded."""
        out = []
        cur: Node | None = node
        while cur is not None and cur.parent is not None:
            out.append(cur)
            cur = self.nodes[cur.parent]
        return out[::-1]

    def path_points(self, node: Node) -> list[Point]:
        return [n.point for n in self.path(node) if n.point is not None]

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if n.terminal]

    @property
    def solved(self) -> bool:
        return any(n.correct for n in self.nodes if n.terminal)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": TREE_FORMAT,
            "sample_id": self.sample_id,
            "task": self.task,
            "frame": self.frame.to_dict(),
            "solved": self.solved,
            "root_value": self.root.q,
            "stats": self.stats,
            "sample": self.sample,
            "truth": self.truth,
            "prompt": self.prompt,
            "images": self.images,
            "nodes": [n.to_dict() for n in self.nodes],
            "rejected": self.rejected,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tree:
        """Rebuild a tree; raises ``ValueError`` naming what is wrong for a corrupt record."""
        try:
            nodes = [Node.from_dict(n) for n in d["nodes"]]
            tree = cls(
                sample_id=str(d["sample_id"]),
                task=str(d.get("task", "")),
                frame=Frame.from_dict(d["frame"]),
                nodes=nodes,
                rejected=list(d.get("rejected", [])),
                stats=dict(d.get("stats", {})),
                sample=dict(d.get("sample", {})),
                truth=dict(d.get("truth", {})),
                prompt=dict(d.get("prompt", {})),
                images=list(d.get("images", [])),
            )
        except (KeyError, TypeError, IndexError, AttributeError) as exc:  # AttributeError: a node that is not an object
            raise ValueError(f"corrupt tree record: missing or bad field {exc}") from None
        for i, n in enumerate(tree.nodes):
            if n.id != i or (i > 0 and (n.parent is None or not 0 <= n.parent < i)):
                raise ValueError(f"corrupt tree record {tree.sample_id}: node {i} has bad id/parent")
            if any(not 0 < c < len(tree.nodes) for c in n.children):
                raise ValueError(f"corrupt tree record {tree.sample_id}: node {i} has a bad child index")
        from .select import close_all  # the solver's flags are derived, never stored

        close_all(tree)
        return tree
