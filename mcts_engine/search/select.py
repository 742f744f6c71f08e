"""Selection rules over plain trees: UCT, PUCT with teacher priors, MCTS-Solver closing, backup.

**UCT** (Kocsis & Szepesvári 2006, in the reference's form)::

    score(child) = Q(child) + c · sqrt(ln(N_parent + 1) / (N_child + 1))

**PUCT** (Rosin 2011; the AlphaGo Zero form, Silver et al. 2017)::

    score(child) = Q(child) + c · P(child) · sqrt(N_parent) / (1 + N_child)

``P`` is the child's prior among its siblings, from the teacher's log-probabilities: a softmax over the
siblings' *length-normalized* log-probs ``ℓ̄ = logprob / completion_tokens`` (the mean token log-prob,
i.e. the log of the geometric-mean token probability). Choice: the raw sum would rank every short
answer (≈ 5 tokens) far above every grounded step (≈ 30 tokens) only because it is shorter; the
per-token mean compares steps of different lengths on one scale. When any sibling has no log-prob
(the server returned none), the siblings get uniform priors ``1/k`` and :func:`priors` reports it so
the search can say so once.

Both rules count *virtual loss*: each pending simulation through a node adds ``virtual_loss`` visits of
value 0 to it, so parallel simulations of one tree spread over different branches.

**MCTS-Solver** (Winands, Björnsson & Saito 2008), for our single-agent setting with rewards in [0, 1]:

- a judged answer leaf is *closed*; its exact value is its verifier score;
- a thought node is *closed* when it is fully expanded (``expanded``: see progressive widening
  below), has at least one child, and every child is closed; its exact value is the best child's
  (``max``: one agent picks its path). An expanded node whose every continuation was rejected is a
  dead end: closed with exact value 0;
- selection never descends into a closed child; a closed root means the tree has nothing left to learn.

**Progressive widening** (Coulom 2007; Chaslot et al. 2008): a thought node may hold

    k(N) = max(children, ceil(widen_c · N^widen_alpha))   children, N = its visits,

capped at ``max_children`` (0: ``children``, i.e. no widening). Selection stops at a node to widen it
while it holds fewer than k(N) distinct children; else it descends. Choice: the base of ``children``
keeps the first expansion as before; ``N^α`` lets nodes that many simulations pass through (high Q,
under PUCT/UCT) gain new distinct continuations, each a new path below a proven-good prefix. With
``widen_alpha`` 0 the count stays at ``children``.

A node is *fully expanded* (``expanded``) only when it holds its ``max_children`` distinct children,
or when ``expand_asks`` of its expansion requests brought no new distinct child (its continuations
all merge into existing ones or are rejected: nothing new to ask for). A request whose continuations
merge into fewer distinct children than asked no longer closes the node early: it stays expandable.

Closing is recomputed bottom-up (:func:`refresh_closed`) whenever a node gains a child, finishes its
expansion or a child closes, and from scratch for a tree loaded from a record (:func:`close_all`), so
the flag is never serialized and old records need nothing new.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from .tree import Node, Tree


def uct(child: Node, parent: Node, c: float, virtual_loss: float) -> float:
    """UCT with virtual loss: pending simulations count as visits of value 0."""
    n_child = child.visits + virtual_loss * child.pending
    n_parent = parent.visits + virtual_loss * parent.pending
    q = child.value_sum / n_child if n_child > 0 else 0.0
    return q + c * math.sqrt(math.log(n_parent + 1) / (n_child + 1))


def puct(child: Node, parent: Node, prior: float, c: float, virtual_loss: float) -> float:
    """PUCT with virtual loss: ``Q + c·P·sqrt(N_parent)/(1 + N_child)``."""
    n_child = child.visits + virtual_loss * child.pending
    n_parent = parent.visits + virtual_loss * parent.pending
    q = child.value_sum / n_child if n_child > 0 else 0.0
    return q + c * prior * math.sqrt(n_parent) / (1 + n_child)


def normalized_logprob(node: Node) -> float | None:
    """The node's mean token log-prob (``logprob / completion_tokens``), None if it has no log-prob."""
    if node.logprob is None:
        return None
    return node.logprob / max(1, node.completion_tokens)


def priors(siblings: Sequence[Node], temperature: float = 1.0) -> tuple[list[float], bool]:
    """Softmax of the siblings' length-normalized log-probs divided by ``temperature``; ``(uniform,
    False)`` when any is missing."""
    k = len(siblings)
    if k == 0:
        return [], True
    values = [normalized_logprob(n) for n in siblings]
    if any(v is None for v in values):
        return [1.0 / k] * k, False
    top = max(values)  # type: ignore[type-var]
    exps = [math.exp((v - top) / temperature) for v in values]  # type: ignore[operator]
    total = sum(exps)
    return [e / total for e in exps], True


def open_children(tree: Tree, node: Node) -> list[Node]:
    return [tree.nodes[c] for c in node.children if not tree.nodes[c].closed]


def best_child(tree: Tree, node: Node, c: float, virtual_loss: float, rule: str = "uct",
               prior_temperature: float = 1.0) -> Node | None:
    """Argmax of the rule's score over the node's OPEN children (None if all are closed); ties go to
    the older child (deterministic). PUCT priors are computed over all siblings (closed ones too)."""
    kids = [tree.nodes[cid] for cid in node.children]
    ps = priors(kids, prior_temperature)[0] if rule == "puct" else [0.0] * len(kids)
    best, best_score = None, -math.inf
    for child, p in zip(kids, ps):
        if child.closed:
            continue
        s = puct(child, node, p, c, virtual_loss) if rule == "puct" else uct(child, node, c, virtual_loss)
        if s > best_score:
            best, best_score = child, s
    return best


def child_limit(node: Node, children: int, max_children: int = 0, widen_c: float = 1.0, widen_alpha: float = 0.0) -> int:
    """k(N): distinct children the node may hold now (progressive widening, see the module doc)."""
    cap = max(children, max_children)
    if widen_alpha <= 0:
        return children
    if not node.children:
        return children  # a fresh node's first request asks for `children`
    return min(cap, max(1, math.ceil(widen_c * node.visits ** widen_alpha)))


def select_path(
    tree: Tree,
    children: int,
    c: float,
    virtual_loss: float,
    rule: str = "uct",
    max_children: int = 0,
    widen_c: float = 1.0,
    widen_alpha: float = 0.0,
    prior_temperature: float = 1.0,
) -> list[Node]:
    """Root → the node to work on, descending only through open children. Stops at a node that is
    not fully expanded and holds fewer than k(N) distinct children (:func:`child_limit`; rollout steps
    count), or whose children are all closed while it is not fully expanded (it is asked again). A node
    whose children fill ``max(children, max_children)`` counts as fully expanded. Returns a path ending
    at a node to expand, or at an open node none of whose children is open (all closed while it waits to
    close itself, which :func:`refresh_closed` does)."""
    cap = max(children, max_children)
    node = tree.root
    path = [node]
    while not node.terminal:
        if not node.expanded and len(node.children) >= cap:
            node.expanded = True
            refresh_closed(tree, node)
        if not node.expanded and len(node.children) < child_limit(node, children, max_children, widen_c, widen_alpha):
            break
        if not node.children:
            break
        nxt = best_child(tree, node, c, virtual_loss, rule, prior_temperature)
        if nxt is None:
            break
        node = nxt
        path.append(node)
    return path


def backup(tree: Tree, node: Node, value: float) -> None:
    """Add one evaluation ``value`` to ``node`` and every ancestor (visits += 1, value_sum += value)."""
    cur: Node | None = node
    while cur is not None:
        cur.visits += 1
        cur.value_sum += value
        cur = tree.nodes[cur.parent] if cur.parent is not None else None


def _close_one(tree: Tree, node: Node) -> bool:
    """Set ``node.closed``/``node.exact`` from its children; True if it changed."""
    if node.closed:
        return False
    if node.terminal:
        if node.reward is None:
            return False
        node.closed, node.exact = True, float(node.reward)
        return True
    if not node.expanded:
        return False
    kids = [tree.nodes[c] for c in node.children]
    if any(not k.closed for k in kids):
        return False
    node.closed = True
    node.exact = max((k.exact or 0.0 for k in kids), default=0.0)
    return True


def refresh_closed(tree: Tree, node: Node) -> None:
    """Close ``node`` if it can be, then its ancestors, stopping at the first that stays open."""
    cur: Node | None = node
    while cur is not None and _close_one(tree, cur):
        cur = tree.nodes[cur.parent] if cur.parent is not None else None


def close_all(tree: Tree) -> None:
    """Recompute every node's closed flag (children have larger ids than their parent)."""
    for n in tree.nodes:
        n.closed, n.exact = False, None
    for n in reversed(tree.nodes):
        _close_one(tree, n)
