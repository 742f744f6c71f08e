"""Multi-turn zoom: the one crop environment, the per-sample observer, and the eval/demo turn loop.

- ``environment``: a tool call ``search_coordinate([x, y])`` → the crop the model sees next (geometry, the
  observation text, the strict tool-call check). Pure; search, export, training rollouts, eval and the demo
  all call it, so crop settings never drift between stages.
- ``observer``: the environment bound to one sample (point → encoded crop + its node record, saved once).
- ``episode``: the turn loop of ``eval --multiturn`` and ``demo`` (:class:`ZoomEpisode`, one per sample).

Not here: the search's tree-shaped loop (``search.mcts``), the trainer's token-level rollouts
(``train.multiturn``), the linearization of multi-turn trees (``export``), and the prompt protocol
(``protocol``: system prompts, observation templates, presets), which every stage reads.
"""

from .environment import MULTITURN_STOPS, TOOL_NAME, ZoomResult, check_tool_step, crop_box, format_tool_call, observe, zoom
from .episode import END_REASONS, EpisodeTurn, ZoomEpisode, as_multiturn, run_episode, score_episode, take_turn
from .observer import make_observer

__all__ = ["MULTITURN_STOPS", "TOOL_NAME", "ZoomResult", "check_tool_step", "crop_box", "format_tool_call", "observe",
           "zoom", "END_REASONS", "EpisodeTurn", "ZoomEpisode", "as_multiturn", "run_episode", "score_episode",
           "take_turn", "make_observer"]
