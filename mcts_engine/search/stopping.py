"""When a tree has found what it needs: export-aware stopping (pure, over plain trees).

``early_stop`` (``search.early_stop``):

- ``none``: run the whole budget (``simulations``, ``max_calls``), or until the root is closed;
- ``solved``: stop once any verified-correct leaf exists;
- ``enough``: stop once the tree holds ``target_correct`` *distinct* verified-correct paths AND at
  least one verified-wrong path, which is what export needs: several distinct SFT chains, a wrong
  branch for backtrack chains and DPO pairs.

Two correct paths are the same path when they visit the same points in the same order and give the
same answer (case and surrounding space ignored): a different wording of one walk through the image
teaches nothing new. The exporter deduplicates chains by the same key (and by text).
"""

from __future__ import annotations

from .tree import Node, Tree

EARLY_STOPS = ("none", "solved", "enough")


def path_key(tree: Tree, leaf: Node) -> tuple:
    """What makes a root→leaf path distinct: its point sequence and its normalized answer."""
    points = tuple(n.point for n in tree.path(leaf) if n.point is not None)
    return points, (leaf.answer or "").strip().lower()


def distinct_correct(tree: Tree) -> int:
    return len({path_key(tree, n) for n in tree.nodes if n.terminal and n.correct})


def has_wrong(tree: Tree) -> bool:
    return any(n.terminal and n.correct is False for n in tree.nodes)


def enough(tree: Tree, target_correct: int) -> bool:
    """``early_stop: enough``'s condition (see the module docstring)."""
    return has_wrong(tree) and distinct_correct(tree) >= target_correct


def early_stop_reached(tree: Tree, mode: str, target_correct: int) -> bool:
    if mode == "solved":
        return tree.solved
    if mode == "enough":
        return enough(tree, target_correct)
    return False
