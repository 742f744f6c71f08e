"""What an export is asked to do: the recipe's ``export:`` knobs (:class:`ExportConfig`) and how they
resolve (recipe ← run config ← ``--recipe`` ← ``--set`` ← flags), the kinds/flavors/modes/formats a
call may name, and the run settings an export reads from ``config.json`` (multi-turn or not, the zoom
environment rows carry). Refusals are one-line :class:`ExportError`/``ConfigError`` messages.

Knows nothing of images, parquet or trees: plain data in, plain data out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .protocol_rows import row_multiturn

STRATEGIES: tuple[str, ...] = ("best", "all_correct", "backtrack")


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


KINDS: tuple[str, ...] = ("sft", "grpo", "dpo", "prm")
FLAVORS: dict[str, tuple[str, ...]] = {
    "trl": KINDS,
    "verl": ("grpo",),
    "easyr1": ("grpo",),
    "llamafactory": ("sft", "dpo"),
}
# What a multi-turn export writes per flavor (verl and EasyR1: none, see export/run.py's docstring).
MT_FLAVORS: dict[str, tuple[str, ...]] = {"trl": ("sft", "grpo"), "llamafactory": ("sft",)}
MODES: tuple[str, ...] = ("auto", "multiturn", "single")
FORMATS: tuple[str, ...] = ("parquet", "jsonl")
SPLITS: tuple[str, ...] = ("train", "val")
DATA_SOURCE_PREFIX = "mcts-engine/"  # verl data_source = prefix + task (rewards read the task back)
ABILITY = "grounded_visual_reasoning"


class ExportError(RuntimeError):
    """Export cannot proceed at all (bad arguments, unreadable run). One line."""


def multiturn_settings(run_config: dict[str, Any]) -> dict[str, Any]:
    """The run's zoom environment as rows carry it: ``config.multiturn`` (defaults from
    ``MultiTurnConfig``) plus ``max_turns`` = ``search.max_depth`` (assistant turns, the last forced to answer)."""
    from dataclasses import asdict

    from ..config import MultiTurnConfig, SearchConfig

    cfg = run_config.get("config", {}) if isinstance(run_config, dict) else {}
    mt = {**asdict(MultiTurnConfig()), **(cfg.get("multiturn") or {})}
    depth = (cfg.get("search") or {}).get("max_depth", SearchConfig().max_depth)
    return {
        "max_turns": int(depth),
        "crop_offset": int(mt["crop_offset"]),
        "crop_size": int(mt["crop_size"]),
        "draw_dot": bool(mt["draw_dot"]),
        "dot_radius": int(mt["dot_radius"]),
        **row_multiturn(mt),  # observation text, crop geometry, final turn (export/protocol_rows.py)
    }


def run_is_multiturn(run_config: dict[str, Any]) -> bool:
    cfg = run_config.get("config", {}) if isinstance(run_config, dict) else {}
    return bool((cfg.get("multiturn") or {}).get("enabled", False))


def resolve_mode(run_config: dict[str, Any], mode: str) -> bool:
    """``--mode`` → multi-turn or not. ``auto``: the run's ``config.multiturn.enabled``; ``single``: the
    single-turn chains (thoughts joined, tool calls dropped) whatever the run; ``multiturn``: insists on a
    multi-turn run. Raises :class:`ExportError`."""
    if mode not in MODES:
        raise ExportError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
    run_mt = run_is_multiturn(run_config)
    if mode == "multiturn" and not run_mt:
        raise ExportError("--mode multiturn: this run is not multi-turn (config.multiturn.enabled is false in config.json)")
    return run_mt if mode == "auto" else mode == "multiturn"


def kinds_for(flavor: str, multiturn: bool) -> tuple[str, ...]:
    """What ``--kind all`` means for a flavor in a mode."""
    return MT_FLAVORS.get(flavor, ()) if multiturn else FLAVORS.get(flavor, ())


def check_kinds(kinds: list[str], flavor: str, multiturn: bool, cfg: ExportConfig) -> None:
    """Refuse, in one line, what a flavor/mode cannot write."""
    if not multiturn:
        bad = [k for k in kinds if k not in FLAVORS[flavor]]
        if bad:
            raise ExportError(f"--flavor {flavor} writes {', '.join(FLAVORS[flavor])} only, not {bad[0]}")
        return
    if flavor not in MT_FLAVORS:
        raise ExportError(
            f"--flavor {flavor}: a multi-turn run's rows need a tool-calling rollout (the zoom environment) that "
            f"{flavor} files cannot carry; use --flavor trl (the bundled trainer runs the environment) or "
            "--flavor llamafactory (sft), or --mode single for single-turn rows"
        )
    bad = [k for k in kinds if k not in MT_FLAVORS[flavor]]
    if bad:
        raise ExportError(
            f"--kind {bad[0]}: a multi-turn export with --flavor {flavor} writes {', '.join(MT_FLAVORS[flavor])} only "
            f"(--mode single exports this run's {bad[0]} rows from single-turn chains)"
        )
    if cfg.rescale_to_original:
        raise ExportError(
            "export.rescale_to_original: not available for a multi-turn export (the crops were cut in the "
            "teacher's frame, so rows stay in it)"
        )


def resolve_export_config(
    run_config: dict[str, Any],
    *,
    recipe: str | None = None,
    overrides: list[str] | None = None,
    val_fraction: float | None = None,
    seed: int | None = None,
    strategies: str | None = None,
) -> tuple[ExportConfig, dict[str, Any]]:
    """The export knobs and task options, lowest precedence first: ``recipes/<task>.yaml`` ``export:``
    ← the run's resolved config (config.json) ← ``--recipe FILE`` ← ``--set export.KEY=V`` /
    ``--set task_options.KEY=V`` ← explicit flags. Raises ``ConfigError`` naming the key."""
    from ..config import ConfigError, apply_overrides, from_dict, load_recipe, section

    cfg = run_config.get("config", {}) if isinstance(run_config, dict) else {}
    task = str(cfg.get("task") or "sat2")
    base = dict(section(load_recipe(None, task), "export", f"recipe {task}"))
    base.update(section(cfg, "export", "config.json"))
    options = dict(section(cfg, "task_options", "config.json"))
    if recipe:
        rec = load_recipe(recipe, task)
        base.update(section(rec, "export", f"recipe {recipe}"))
        options.update(section(rec, "task_options", f"recipe {recipe}"))
    data = {"export": base, "task_options": options}
    for o in overrides or []:
        if not o.split("=", 1)[0].strip().startswith(("export.", "task_options.")):
            raise ConfigError(f"--set {o!r}: export takes export.KEY=VALUE or task_options.KEY=VALUE")
    data = apply_overrides(data, overrides or [], schema={"export": ExportConfig})
    for key, value in (("val_fraction", val_fraction), ("seed", seed), ("strategies", strategies)):
        if value is not None:
            data["export"][key] = value
    ec = from_dict(ExportConfig, data["export"], "export")
    try:
        ec.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return ec, dict(data["task_options"])
