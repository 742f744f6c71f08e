"""Evaluation: score a model on a benchmark, and show one image's turns as a page.

- ``scoring``: pure statistics from per-item records to a benchmark's summary (items as the unit, circular
  evaluation, Wilson / normal 95 % intervals, groups, turn statistics); every task declares its ``EvalSpec`` here.
- ``run``: the eval session (``run_eval``, :class:`~mcts_engine.evaluation.run.EvalRun`): items → one-shot
  requests or zoom episodes → scored records in a resumable run directory → ``summary.json``/``summary.md``.
- ``demo``: one image, one question, one model → the turns and crops as one offline HTML page.

Not here: the verifiers (``verifiers``, wired by each task), the turn loop itself (``zoom.episode``), the CLI
flags (``commands/eval.py``, ``commands/demo.py``). Only the scoring names are re-exported (``run`` and ``demo``
import the teacher stack lazily; import them from their modules).
"""

from .scoring import (
                      Estimate,
                      EvalSpec,
                      Summary,
                      estimate,
                      item_accuracy,
                      macro_estimate,
                      render_markdown,
                      spec_for,
                      summarize,
                      turn_stats,
                      wilson,
)

__all__ = ["EvalSpec", "Estimate", "Summary", "estimate", "item_accuracy", "macro_estimate", "render_markdown",
           "spec_for", "summarize", "turn_stats", "wilson"]
