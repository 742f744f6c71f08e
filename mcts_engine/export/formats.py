"""The former single export module, kept so existing imports keep working: ``reward.py`` files written by
earlier exports (``from mcts_engine.export.formats import verl_compute_score as compute_score``), README
snippets and user scripts. It re-exports every public name it had; new code imports from the modules
that define them (see ``mcts_engine/export/__init__.py`` for the map):

- ``config``: ExportConfig, resolve_export_config, KINDS/FLAVORS/MT_FLAVORS/MODES/FORMATS/SPLITS,
  ExportError, resolve_mode, kinds_for, run_is_multiturn, multiturn_settings;
- ``images``, ``schema``, ``rows``, ``sinks``, ``split``, ``run`` (export_run, ExportResult);
- ``rewards``: score_response, verl_compute_score, easyr1_compute_score, trl_accuracy_reward.
"""

from .config import (
    ABILITY,
    DATA_SOURCE_PREFIX,
    FLAVORS,
    FORMATS,
    KINDS,
    MODES,
    MT_FLAVORS,
    SPLITS,
    ExportConfig,
    ExportError,
    kinds_for,
    multiturn_settings,
    resolve_export_config,
    resolve_mode,
    run_is_multiturn,
)
from .images import (
    ImageBlob,
    blob_of,
    cached_images,
    crop_images,
    encode,
    frame_image,
    image_keys,
    image_root_for,
    read_source,
    run_file,
    run_inputs,
    sample_images,
)
from .items import Chain, MultiTurnChain, Pair, PrmRow
from .linearize import Linearizer
from .protocol_rows import (
    changes_observations,
    env_settings,
    first_user_text,
    recut_chains,
    row_multiturn,
    row_multiturn_keys,
    system_message,
)
from .rewards import easyr1_compute_score, score_response, trl_accuracy_reward, verl_compute_score
from .rows import (
    SampleContext,
    dpo_row,
    grpo_row,
    mt_sft_row,
    observation_marker_text,
    observation_parts,
    prm_row,
    sft_row,
)
from .run import ExportResult, export_run, sample_from_record
from .schema import features_for
from .sinks import JsonlSink, ParquetSink
from .split import assign_splits

__all__ = [
    "ABILITY", "DATA_SOURCE_PREFIX", "FLAVORS", "FORMATS", "KINDS", "MODES", "MT_FLAVORS", "SPLITS",
    "Chain", "ExportConfig", "ExportError", "ExportResult", "ImageBlob", "JsonlSink", "Linearizer",
    "MultiTurnChain", "Pair", "ParquetSink", "PrmRow", "SampleContext",
    "assign_splits", "blob_of", "cached_images", "changes_observations", "crop_images", "dpo_row",
    "easyr1_compute_score", "encode", "env_settings", "export_run", "features_for", "first_user_text",
    "frame_image", "grpo_row", "image_keys", "image_root_for", "kinds_for", "mt_sft_row", "multiturn_settings",
    "observation_marker_text", "observation_parts", "prm_row", "read_source", "recut_chains", "resolve_export_config",
    "resolve_mode", "row_multiturn", "row_multiturn_keys", "run_file", "run_inputs", "run_is_multiturn",
    "sample_from_record", "sample_images", "score_response", "sft_row", "system_message", "trl_accuracy_reward",
    "verl_compute_score",
]
