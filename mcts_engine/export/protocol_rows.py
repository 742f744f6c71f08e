"""Export rows in a protocol (``mcts-engine export --protocol vigorl``; ``--set system_prompt=…``).

What changes in a row, so data from this engine mixes with a released model's own datasets and continues
training its checkpoints (``docs/protocols.md``):

- the system message: ``system_prompt`` (task | model | none | @FILE; ``protocol.resolve_system_prompt``): under
  ``model`` the row has NO system message (the trainer's chat template supplies its default, as at serving
  time), under ``none`` an empty one;
- the first user turn: ``user_text`` (task | question);
- multi-turn rows: every observation turn is rewritten with the protocol's ``observation_text`` and its crop is
  cut again from the stored frame with the protocol's geometry (``zoom.environment.zoom``: the same code the search,
  eval and the trainer's rollouts run); the ``multiturn`` column carries the protocol's keys so a GRPO rollout
  crops and words its observations the same way.

The search's own points, thoughts and tool calls are kept verbatim (the tool-call JSON is the same in both).
Pure except :func:`protocol_settings` (reads recipes) and the frame image the caller passes in.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..config import PROTOCOL_MT_KEYS, MultiTurnConfig, apply_overrides, from_dict


def row_multiturn_keys() -> dict[str, Any]:
    """Parquet types of the protocol keys a multi-turn row's ``multiturn`` struct carries."""
    from datasets import Value

    types = {str: Value("string"), int: Value("int32"), bool: Value("bool")}
    default = asdict(MultiTurnConfig())
    return {k: types[type(default[k])] for k in PROTOCOL_MT_KEYS}


def row_multiturn(mt: dict[str, Any]) -> dict[str, Any]:
    """The protocol keys of a run's (or a preset's) ``multiturn`` section, defaults filled in, ``@FILE`` texts
    read (a row must carry the exact text, not a path on the machine that exported it)."""
    from ..protocol import read_setting_file

    merged = {**asdict(MultiTurnConfig()), **{k: v for k, v in (mt or {}).items() if k in PROTOCOL_MT_KEYS}}
    out = {k: merged[k] for k in PROTOCOL_MT_KEYS}
    for key in ("observation_text", "final_think", "final_user_text"):
        out[key] = read_setting_file(str(out[key]), f"multiturn.{key}")
    return out


def protocol_settings(task: str, protocol: str | None, overrides: list[str] | None) -> dict[str, Any]:
    """The prompt settings an export applies: the preset of ``protocol`` for ``task`` (if any) under the
    ``--set`` overrides of ``system_prompt``, ``user_text`` and ``multiturn.*``. Returns
    ``{"system_prompt", "user_text", "multiturn": {protocol keys set}, "geometry": {crop_offset, crop_size,
    draw_dot, dot_radius set}}`` — empty when nothing is set (rows are written as before)."""
    from ..protocol import load_with_protocol

    mine = split_overrides(list(overrides or []))[0]
    if not protocol and not mine:
        return {}
    data = load_with_protocol(None, task, protocol) if protocol else {}
    data = {k: data[k] for k in ("system_prompt", "user_text", "multiturn") if k in data}
    data = apply_overrides(data, mine)
    mt_section = dict(data.get("multiturn") or {})
    mt_section.pop("enabled", None)
    mcfg = from_dict(MultiTurnConfig, mt_section, "multiturn")
    source = str(data.get("system_prompt", "task"))
    text_source = str(data.get("user_text", "task"))
    from ..config import SystemPromptSource, UserTextSource
    from ..config_checks import check_value

    check_value(source, SystemPromptSource, "system_prompt")
    check_value(text_source, UserTextSource, "user_text")
    # only what the preset or --set names: a key left unset keeps the run's own value in the rows
    geometry = {k: getattr(mcfg, k) for k in ("crop_offset", "crop_size", "draw_dot", "dot_radius") if k in mt_section}
    keys = {k: v for k, v in row_multiturn(asdict(mcfg)).items() if k in mt_section}
    return {"system_prompt": source, "user_text": text_source, "multiturn": keys, "geometry": geometry,
            "protocol": protocol or ""}


def changes_observations(settings: dict[str, Any] | None) -> bool:
    """Whether ``settings`` change multi-turn observations (their text or their crops): rows then get them anew."""
    return bool(settings and (settings.get("geometry") or settings.get("multiturn")))


def system_message(settings: dict[str, Any], task: Any, multiturn: bool) -> str | None:
    """The rows' system message under ``settings`` (None = no system message)."""
    from ..protocol import student_system

    return student_system(str(settings.get("system_prompt", "task")), task, multiturn)


def first_user_text(settings: dict[str, Any], task: Any, sample: Any) -> str:
    from ..protocol import user_text

    return user_text(task, sample, str(settings.get("user_text", "task")))


def env_settings(base: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A row's ``multiturn`` struct: the run's environment (``export.config.multiturn_settings``) with the
    protocol's geometry and keys on top."""
    return {**base, **settings.get("geometry", {}), **settings.get("multiturn", {})}


def recut_chains(chains: list[Any], frame_image: Any, env: dict[str, Any], encode: Any) -> tuple[list[Any], dict[str, Any]]:
    """Multi-turn chains in the protocol, and the crops they now show: each observation's text is the protocol's
    template at the same point, its crop is cut again from ``frame_image`` (the frame the search saw) with the
    protocol's geometry (``zoom.environment.zoom``), stored with ``encode(PIL image)``. The returned crops dict is
    keyed by each new observation's ``image.file`` (``protocol:<n>``), as ``export.rows.mt_sft_row`` reads it."""
    from dataclasses import replace

    from ..protocol import observation_template
    from ..zoom.environment import observation_text, zoom

    cfg = from_dict(MultiTurnConfig, {k: v for k, v in env.items() if k in MultiTurnConfig.__dataclass_fields__}, "multiturn")
    template = observation_template(cfg)
    crops: dict[str, Any] = {}
    by_point: dict[tuple[int, int], str] = {}
    out = []
    for chain in chains:
        turns = []
        for turn in chain.turns:
            obs = turn.observation
            if obs is None:
                turns.append(turn)
                continue
            point = (int(obs["point"][0]), int(obs["point"][1]))
            key = by_point.get(point)
            crop, box = zoom(frame_image, point, cfg)
            if key is None:
                key = by_point[point] = f"protocol:{len(by_point)}"
                crops[key] = encode(crop)
            new_obs = {**obs, "text": observation_text(point, template), "box": [int(v) for v in box],
                       "image": {**(obs.get("image") or {}), "file": key, "width": crop.width, "height": crop.height}}
            turns.append(replace(turn, observation=new_obs))
        out.append(replace(chain, turns=tuple(turns)))
    return out, crops


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """``--set`` overrides an export's protocol takes (system_prompt, user_text, multiturn.*) and the rest."""
    mine = [o for o in overrides if o.split("=", 1)[0].strip().split(".")[0] in ("system_prompt", "user_text", "multiturn")]
    return mine, [o for o in overrides if o not in mine]


__all__ = ["row_multiturn_keys", "row_multiturn", "protocol_settings", "system_message", "first_user_text",
           "env_settings", "changes_observations", "recut_chains", "split_overrides"]
