"""Multi-turn (zoom) GRPO rollouts: the environment the rollout loop talks to, per-row settings, length bounds.

An episode (``rollout.rollout`` with :class:`ZoomEnvironment`)::

    prompt (system with the multi-turn student rules, user: frame image + question) <|im_start|>assistant\\n
    turn 1 (policy)   <think> … (x, y). </think>\\n<tool_call>\\n{…[x, y]…}\\n</tool_call>      ← stop string
    observation (env) <|im_end|>\\n<|im_start|>user\\n<observation>\\nZoomed view around (x, y):\\n<crop image>
                      \\n</observation><|im_end|>\\n<|im_start|>assistant\\n
    turn 2 (policy)   …
    last turn         the environment pre-fills ``<answer>`` (forced, as the search's ``continue`` style does)
                      and the policy writes the rest: `` X </answer>``                          ← stop string

Invariants and choices:
- The zoom is the environment module's, never re-implemented here: every turn is classified by
  ``mcts_engine.zoom.episode.take_turn`` (the eval loop's own rule: answer / valid tool call / ``bad_tool_call``,
  ``no_tool_call``, ``out_of_frame``, ``invalid_turn``, ``truncated``, ``no_answer_at_max_turns``), and a valid call
  runs ``environment.observe(frame_image, parse_step(turn), frame, MultiTurnConfig)`` (check_tool_step + zoom) on
  the frame image of the row with the row's ``multiturn`` settings, so crops match the search's byte for byte.
- A malformed or out-of-frame tool call (or a thought without a call, a truncated turn, …) ends the episode; its
  reward is computed from what is there (``rewards.score_turns``).
- The observation turn has exactly the structure of the exported SFT rows (``export.rows.observation_parts``),
  rendered by the model's own chat template (the text between the assistant turn and the next assistant header),
  encoded by the processor alone (its crop's pixels + the expanded image placeholders). Only the new observation
  is encoded per turn; the tokens already in the context are never re-tokenized (see ``rollout``).
- Observation tokens (text AND the crop's image tokens) and the pre-filled ``<answer>`` are environment segments:
  ``target_mask`` is False on them, so they carry zero loss weight. The policy's own turn tokens are trained.
- A row's worst-case length (prompt + ``max_turns`` turns of ``max_new_tokens`` + ``max_turns - 1`` observations)
  must fit ``train.max_length``; a row that cannot is skipped and counted (image tokens are never truncated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, MultiTurnConfig, from_dict
from ..frame import Frame
from ..grounding import parse_step
from ..protocol import final_turn, observation_template
from ..teachers.base import Continuation
from ..zoom.environment import MULTITURN_STOPS, crop_output_size, observation_text
from ..zoom.environment import observe as environment_observe
from ..zoom.episode import ZoomEpisode as TurnRecord
from ..zoom.episode import take_turn
from .data import TURN_END, SpecialIds, encode, image_tokens, normalize_messages, render
from .model import TrainSetupError
from .rollout import Episode, Observation

_SENTINEL = "@@mcts-engine-turn@@"


# ------------------------------------------------------------------------------------------------
# Settings per row
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZoomSettings:
    """The environment of one row: crop settings (``MultiTurnConfig``) and the turn budget."""

    env: MultiTurnConfig
    max_turns: int  # assistant turns, the last forced to answer


@dataclass(frozen=True)
class ZoomTask:
    """One prompt's environment at rollout time: its settings and the frame image the model saw."""

    settings: ZoomSettings
    image: Any  # PIL image, the frame (the environment crops it)
    frame: Frame


def settings_from(struct: Any, recipe: dict[str, Any], max_turns: int, fallback_turns: int, where: str) -> ZoomSettings:
    """A row's settings: the row's ``multiturn`` struct (the export writes what the search used) over the recipe's
    ``multiturn:`` section; ``max_turns`` > 0 (``train.grpo.max_turns``) overrides the row's turn budget."""
    base = {k: v for k, v in (recipe or {}).items() if k in MultiTurnConfig.__dataclass_fields__}
    row = dict(struct) if isinstance(struct, dict) else {}
    merged = {**base, **{k: v for k, v in row.items() if k in MultiTurnConfig.__dataclass_fields__ and v is not None}}
    merged["enabled"] = True
    try:
        env = from_dict(MultiTurnConfig, merged, f"{where}: multiturn")
    except ConfigError as exc:
        raise TrainSetupError(str(exc)) from None
    turns = max_turns or int(row.get("max_turns") or 0) or int(fallback_turns or 0)
    if turns < 1:
        raise TrainSetupError(f"{where}: multiturn.max_turns is missing (set train.grpo.max_turns)")
    if env.crop_offset < 1 or env.crop_size < 28:
        raise TrainSetupError(f"{where}: multiturn crop_offset must be >= 1 and crop_size >= 28")
    return ZoomSettings(env=env, max_turns=turns)


def row_settings(source: Any, mode: str, recipe: dict[str, Any], max_turns: int, fallback_turns: int) -> dict[int, ZoomSettings]:
    """Row index → settings for the rows that roll out multi-turn (``train.grpo.multiturn``: auto = rows with a
    ``multiturn`` struct, and every row when the recipe's ``multiturn.enabled`` is true; on = every row; off = none).
    Checks that each such row's image is its frame."""
    if mode == "off":
        return {}
    structs = source.column("multiturn")
    every = mode == "on" or bool((recipe or {}).get("enabled"))
    if not every and not any(isinstance(s, dict) for s in structs):
        return {}
    fw, fh = source.column("frame_width"), source.column("frame_height")
    out: dict[int, ZoomSettings] = {}
    for i, struct in enumerate(structs):
        if not every and not isinstance(struct, dict):
            continue
        out[i] = settings_from(struct, recipe, max_turns, fallback_turns, source.where(i))
        sizes = source.image_sizes[i]
        if not sizes:
            raise TrainSetupError(f"{source.where(i, 'images')}: a multi-turn row needs its frame image")
        if fw[i] is not None and fh[i] is not None and (int(fw[i]), int(fh[i])) != tuple(sizes[0]):
            raise TrainSetupError(
                f"{source.where(i, 'images')}: the image is {sizes[0][0]}x{sizes[0][1]} but frame_width x frame_height "
                f"is {fw[i]}x{fh[i]}: multi-turn crops are cut in the frame the model saw")
    return out


def crop_size(width: int, height: int, env: MultiTurnConfig) -> tuple[int, int]:
    """(width, height) of the crops of a ``width`` × ``height`` frame (``environment.crop_output_size``: every crop
    with ``crop_border: shift`` or ``crop_shape: square``; the largest, uncut ones with ``clip``)."""
    return crop_output_size(int(width), int(height), env)


def crop_frames(source: Any, settings: dict[int, ZoomSettings]) -> list[tuple[int, int]]:
    """The crop sizes the rollouts will show (so the processor is sized not to resize them either)."""
    return sorted({crop_size(*source.image_sizes[i][0], s.env) for i, s in settings.items()})


# ------------------------------------------------------------------------------------------------
# Encoding an observation turn
# ------------------------------------------------------------------------------------------------


def observation_messages(text: str) -> list[dict[str, Any]]:
    """The observation user turn as the exported SFT rows hold it (text, image part, text)."""
    from ..export.rows import observation_parts

    return normalize_messages([{"role": "user", "content": observation_parts(text)}], "observation")


def observation_tail(processor: Any, text: str) -> str:
    """The chat-template text from the end of an assistant turn's content to the next assistant header:
    ``<|im_end|>\\n<|im_start|>user\\n<observation>…<|vision_start|><|image_pad|><|vision_end|>…<|im_end|>\\n
    <|im_start|>assistant\\n`` for Qwen templates (found by rendering around a sentinel, never hand-written)."""
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "s"}]},
        {"role": "assistant", "content": [{"type": "text", "text": _SENTINEL}]},
        *observation_messages(text),
    ]
    rendered = render(processor, messages, add_generation_prompt=True)
    at = rendered.find(_SENTINEL)
    if at < 0:
        raise TrainSetupError("the chat template dropped the assistant turn's text (cannot place observations)")
    return rendered[at + len(_SENTINEL):]


def encode_observation(processor: Any, text: str, crop: Any, closed: bool, prefix: str = "") -> Observation:
    """Tokens + pixels of one observation turn. ``closed``: the policy's turn already ended with ``<|im_end|>``
    (then the tail does not repeat it). ``prefix`` is appended after the assistant header (a pre-fill)."""
    tail = observation_tail(processor, text)
    if closed and tail.startswith(TURN_END):
        tail = tail[len(TURN_END):]
    enc = encode(processor, tail + prefix, [crop])
    return Observation(
        ids=enc["input_ids"].tolist(),
        mm_token_type_ids=enc["mm_token_type_ids"].tolist(),
        pixel_values=enc["pixel_values"],
        image_grid_thw=enc["image_grid_thw"],
        prefix=prefix,
        images=[crop],
    )


def prefill(processor: Any, prefix: str) -> Observation:
    """A text-only environment segment (the forced ``<answer>`` of a one-turn budget)."""
    ids = processor.tokenizer.encode(prefix, add_special_tokens=False)
    return Observation(ids=list(ids), prefix=prefix)


def worst_case_extra(processor: Any, frame: tuple[int, int], settings: ZoomSettings, max_new_tokens: int) -> int:
    """Tokens a multi-turn episode can add to its prompt: every turn at ``max_new_tokens``, an observation after
    every turn but the last (text + crop image tokens), and the forced ``<answer>`` pre-fill."""
    w, h = frame
    cw, ch = crop_size(w, h, settings.env)
    tail = observation_tail(processor, observation_text((max(w - 1, 0), max(h - 1, 0)), observation_template(settings.env)))
    text_tokens = len(processor.tokenizer.encode(tail + final_turn(settings.env)[0], add_special_tokens=False))
    obs = text_tokens - 1 + image_tokens(processor, cw, ch)[0]
    return settings.max_turns * max_new_tokens + (settings.max_turns - 1) * obs + text_tokens


def limit_lengths(scan: Any, source: Any, settings: dict[int, ZoomSettings], processor: Any, max_new_tokens: int,
                  max_length: int) -> None:
    """Move multi-turn rows whose worst-case episode exceeds ``max_length`` from ``scan.kept`` to the skipped count."""
    kept = []
    for i in scan.kept:
        s = settings.get(i)
        if s is not None and scan.lengths[i] + worst_case_extra(processor, source.image_sizes[i][0], s, max_new_tokens) > max_length:
            scan.skipped["too_long"] += 1
            scan.lengths.pop(i, None)
            continue
        kept.append(i)
    scan.kept = kept


# ------------------------------------------------------------------------------------------------
# The environment
# ------------------------------------------------------------------------------------------------


def turn_record(ep: Episode, task: ZoomTask) -> TurnRecord:
    """The episode's turns classified by ``mcts_engine.zoom.episode.take_turn`` (kept in ``ep.state``, extended with
    the turns not yet classified; a truncated last turn is classified ``truncated``)."""
    rec: TurnRecord = ep.state.setdefault("turns", TurnRecord())
    trained = [s for s in ep.segments if s.trainable]
    for i in range(len(rec.turns), len(ep.turns)):
        if rec.end:  # over (cannot happen: the rollout stops an episode the environment ended)
            break
        last = i == len(ep.turns) - 1
        tokens = len(trained[i].ids) if i < len(trained) else 0
        cont = Continuation(ep.turns[i], "length" if (last and ep.truncated) else "stop", tokens)
        take_turn(rec, cont, i == task.settings.max_turns - 1, task.frame)
    return rec


class ZoomEnvironment:
    """The rollout :class:`~mcts_engine.train.rollout.Environment` of multi-turn rows. ``tasks[prompt_index]`` is
    the prompt's :class:`ZoomTask` (None: that prompt is single-turn, one turn and done)."""

    stop: tuple[str, ...] = MULTITURN_STOPS

    def __init__(self, processor: Any, ids: SpecialIds, tasks: Sequence[ZoomTask | None]) -> None:
        self.processor, self.ids, self.tasks = processor, ids, list(tasks)

    @property
    def max_turns(self) -> int:
        return max((t.settings.max_turns for t in self.tasks if t is not None), default=1)

    def begin(self, ep: Episode) -> Observation | None:
        """A one-turn budget forces the first turn: pre-fill ``<answer>``."""
        task = self.tasks[ep.prompt_index]
        if task is None or task.settings.max_turns > 1:
            return None
        return prefill(self.processor, final_turn(task.settings.env)[0])

    def observe(self, ep: Episode, turn_text: str) -> Observation | None:
        task = self.tasks[ep.prompt_index]
        if task is None:
            return None
        rec = turn_record(ep, task)
        turn = rec.turns[-1]
        if turn.point is None:  # an answer, or a failed step: the episode is over
            return None
        result, err = environment_observe(task.image, parse_step(turn_text), task.frame, task.settings.env)
        if result is None:  # take_turn ran the same check; kept for safety
            turn.error, rec.end = err, str(err).split(":", 1)[0]
            return None
        turn.record = {"point": list(result.point), "box": list(result.box), "text": result.text}
        forced_next = len(ep.turns) == task.settings.max_turns - 1
        last = [s for s in ep.segments if s.trainable][-1].ids
        closed = bool(last) and last[-1] == self.ids.end
        return encode_observation(self.processor, result.text, result.crop, closed, final_turn(task.settings.env)[0] if forced_next else "")


# ------------------------------------------------------------------------------------------------
# Stats
# ------------------------------------------------------------------------------------------------

STAT_KEYS = ("turns", "zooms", "distinct_points", "malformed_calls", "malformed", "out_of_frame", "answered", "forced",
             "observation_tokens")


def episode_stats(rec: TurnRecord, observation_tokens: int = 0) -> dict[str, float]:
    """Per-episode counts (summed over a step, then divided by the episode count): assistant turns, valid zooms,
    distinct zoom points, malformed tool calls (``bad_tool_call``), whether the episode had one, ended out of
    frame, answered, reached the forced turn; observation tokens (text + image) appended by the environment."""
    malformed = sum(1 for t in rec.turns if (t.error or "").startswith("bad_tool_call"))
    return {
        "turns": float(len(rec.turns)),
        "zooms": float(len(rec.points)),
        "distinct_points": float(len(set(rec.points))),
        "malformed_calls": float(malformed),
        "malformed": float(malformed > 0),
        "out_of_frame": float(rec.end == "out_of_frame"),
        "answered": float(rec.end == "answer"),
        "forced": float(any(t.forced for t in rec.turns)),
        "observation_tokens": float(observation_tokens),
    }


__all__ = ["ZoomEnvironment", "ZoomSettings", "ZoomTask", "crop_frames", "crop_size", "encode_observation",
           "episode_stats", "limit_lengths", "observation_tail", "row_settings", "settings_from", "turn_record",
           "worst_case_extra"]
