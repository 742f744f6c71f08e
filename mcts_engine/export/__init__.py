"""Export: a finished run directory in, training files and an offline HTML report out.

What this package knows: the tree records a run wrote (``search.tree.Tree``), how to walk them into
training items, how those items become rows for TRL, verl, EasyR1 and LLaMA-Factory, how rows and their
images are stored (parquet or JSON lines), and the reward functions outside trainers call. What it does
not know: how the trees were searched (``search/``), how a teacher is asked (``teachers/``), or how
anything is trained on the files (``train/``); a task enters only through the task registry
(``get_task``: its verifier, reference answer and backtrack sentence).

Modules, leaf to root:

- ``config``: :class:`ExportConfig` (the recipe's ``export:`` knobs) and its resolution; kinds,
  flavors, modes, formats; the run settings an export reads (multi-turn, the zoom environment).
- ``items``: the training items as plain dataclasses (steps, paths, chains, pairs, PRM rows).
- ``linearize``: pure tree → items (:class:`Linearizer`: SFT chains by strategy, multi-turn chains,
  DPO pairs, PRM rows, GRPO difficulty).
- ``images``: reading, fitting and encoding a sample's images and crops (confined, size-bounded).
- ``schema``: the ``datasets.Features`` of each output file.
- ``protocol_rows``: a released model's protocol applied to rows (system message, observations, crops).
- ``rows``: one row per item, per kind and flavor (pure given a ``SampleContext``).
- ``sinks``: parquet and JSONL writers.   ``split``: the leak-free train/val split.
- ``run``: :func:`export_run`, the orchestration (two passes, image work on threads, extras).
- ``rewards``: ``verl_compute_score``, ``easyr1_compute_score``, ``trl_accuracy_reward``.
- ``formats``: the former single module, kept as a re-export of the names it had (older generated
  ``reward.py`` files import from it).
- ``report``, ``report_assets``: one self-contained HTML page per run.

Kept import-light: nothing heavy (no ``datasets``, ``pyarrow``, PIL) is imported here.
"""

from .config import KINDS, STRATEGIES, ExportConfig, ExportError, resolve_export_config
from .items import Chain, ChainTurn, MultiTurnChain, Pair, PrmRow
from .linearize import Linearizer

__all__ = [
    "KINDS",
    "STRATEGIES",
    "Chain",
    "ChainTurn",
    "ExportConfig",
    "ExportError",
    "Linearizer",
    "MultiTurnChain",
    "Pair",
    "PrmRow",
    "resolve_export_config",
]
