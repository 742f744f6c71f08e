"""Validation of a built config, in one style: enum-like fields by their annotation, numeric knobs by a table.

An enum-like field is typed ``Literal[...]``, alone or in a union with an open text form (:data:`AtFile`,
:data:`QuestionTemplate`) it also accepts; :func:`check_choices` reads the allowed values from the annotation
(``typing.get_type_hints``), so the type is the one place they are written. A numeric knob's bounds are a row of
``_RANGES`` keyed by its dotted path. ``config.from_dict`` checks the choices and ranges of every section it builds;
:func:`validate_run_config` (called once by ``build_run_config``, and by ``run_generate`` for a config built in
code) checks a whole ``RunConfig``: choices, ranges and the one cross-field rule. Every failure is a one-line
:class:`ConfigError` naming the key and what is allowed. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import fields
from types import UnionType
from typing import TYPE_CHECKING, Any, Literal, NewType, Union, get_args, get_origin, get_type_hints

if TYPE_CHECKING:
    from .config import RunConfig


class ConfigError(ValueError):
    """A bad recipe, override or option; its message is one line naming the key."""


# The open text forms an enum-like field may take besides its words (see ``_OPEN_FORMS``)
AtFile = NewType("AtFile", str)  # "@FILE": the named file's exact text
QuestionTemplate = NewType("QuestionTemplate", str)  # a template with a {question} placeholder

_OPEN_FORMS: dict[Any, tuple[str, Any]] = {  # open form → (how an error names it, the test a value passes)
    AtFile: ("@FILE", lambda v: v.startswith("@") and len(v) > 1),
    QuestionTemplate: ("a template with {question}", lambda v: "{question}" in v),
}


# Allowed ranges of numeric knobs: key → (lowest, highest, lowest excluded). A value outside is a
# one-line ConfigError naming the key, before any work (a zero budget would store empty trees).
_RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "limit": (1, None, False),
    "teacher.temperature": (0, None, False),
    "teacher.final_temperature": (0, None, False),
    "teacher.top_p": (0, 1, True),
    "teacher.max_tokens": (1, None, False),
    "teacher.concurrency": (1, None, False),
    "teacher.timeout_s": (0, None, True),
    "teacher.max_retries": (0, None, False),
    "teacher.max_pixels": (1, None, False),
    "teacher.min_pixels": (1, None, False),
    "teacher.sim_accuracy": (0, 1, False),
    "teacher.sim_latency_s": (0, None, False),
    "teacher.sim_mean_steps": (0, None, False),
    "teacher.sim_point_noise": (0, None, False),
    "teacher.sim_bad_step_rate": (0, 1, False),
    "teacher.jpeg_quality": (1, 100, False),
    "search.simulations": (1, None, False),
    "search.children": (1, None, False),
    "search.rollouts": (0, None, False),
    "search.max_depth": (1, None, False),
    "search.exploration": (0, None, False),
    "search.parallel_simulations": (1, None, False),
    "search.virtual_loss": (0, None, False),
    "search.trees_in_flight": (0, None, False),
    "search.max_calls": (1, None, False),
    "search.step_retries": (0, None, False),
    "search.puct_exploration": (0, None, False),
    "search.target_correct": (1, None, False),
    "search.min_point_distance": (0, 1, False),  # [0, 1): see _OPEN_HIGH
    "search.max_consecutive_errors": (1, None, False),
    "search.prior_temperature": (0, None, True),
    "search.max_children": (0, None, False),
    "search.widen_c": (0, None, True),
    "search.widen_alpha": (0, None, False),
    "search.expand_asks": (1, None, False),
    "multiturn.crop_offset": (1, None, False),
    "multiturn.crop_size": (28, None, False),
    "multiturn.dot_radius": (0, None, False),
    "inputs.max_image_pixels": (1, None, False),
    "inputs.max_question_chars": (1, None, False),
    "inputs.max_answer_chars": (1, None, False),
    "inputs.max_choice_chars": (1, None, False),
    "inputs.max_choices": (2, None, False),
    "inputs.max_row_bytes": (1, None, False),
    "store.checkpoint_s": (0, None, True),
}
_OPEN_HIGH = frozenset({"search.min_point_distance"})  # keys whose upper bound is excluded


def range_text(low: float | None, high: float | None, open_low: bool, open_high: bool = False) -> str:
    """``≥ 1``, ``> 0``, ``0..1``, ``(0, 1]``, ``[0, 1)``: an allowed range as the error message states it."""
    if high is None:
        return f"{'>' if open_low else '≥'} {low:g}"
    if open_high:
        return f"{'(' if open_low else '['}{low:g}, {high:g})"
    return f"({low:g}, {high:g}]" if open_low else f"{low:g}..{high:g}"


def check_range(key: str, value: float, low: float | None, high: float | None, open_low: bool = False,
                open_high: bool = False) -> None:
    """``ConfigError`` naming ``key`` and its allowed range when ``value`` lies outside it."""
    bad = (low is not None and (value <= low if open_low else value < low)) or (
        high is not None and (value >= high if open_high else value > high))
    if bad:
        raise ConfigError(f"{key}: {value!r} is out of range (allowed: {range_text(low, high, open_low, open_high)})")


def validate_run_config(cfg: RunConfig) -> None:
    """Check every enum-like field of ``cfg`` (its annotation), every bounded knob (see ``_RANGES``) and the
    cross-field rule; the first bad one is a ``ConfigError``. ``build_run_config`` calls it once."""
    check_choices(cfg, "config")
    for name in ("teacher", "search", "multiturn", "inputs", "store", "eval"):
        check_choices(getattr(cfg, name), name)
    for key, (low, high, open_low) in _RANGES.items():
        section, _, name = key.rpartition(".")
        owner = getattr(cfg, section) if section else cfg
        value = getattr(owner, name, None)
        if value is not None:
            check_range(key, value, low, high, open_low, key in _OPEN_HIGH)
    if cfg.teacher.min_pixels > cfg.teacher.max_pixels:
        raise ConfigError(f"teacher.min_pixels: {cfg.teacher.min_pixels} is above teacher.max_pixels {cfg.teacher.max_pixels}")


def check_ranges(obj: Any, where: str) -> None:
    """Check the bounded knobs (``_RANGES``) of one section built alone (``where``: ``search``, ``config.search``,
    or ``config`` for the top level): a ``ConfigError`` naming the first key out of range."""
    section_name = where.removeprefix("config").lstrip(".")
    for key, (low, high, open_low) in _RANGES.items():
        section, _, name = key.rpartition(".")
        if section != section_name:
            continue
        value = getattr(obj, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            check_range(key, value, low, high, open_low, key in _OPEN_HIGH)


def choices_of(hint: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]] | None:
    """The allowed words (``Literal`` arguments) and open forms (``AtFile``, ``QuestionTemplate``) a field's
    annotation names; None for a field that is not enum-like."""
    members = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    words = tuple(w for m in members if get_origin(m) is Literal for w in get_args(m))
    forms = tuple(m for m in members if m in _OPEN_FORMS)
    return (words, forms) if words or forms else None


def choice_text(hint: Any) -> str:
    """The allowed values of an enum-like annotation as errors and docs state them: ``task, model, none or @FILE``."""
    words, forms = choices_of(hint) or ((), ())
    items = [str(w) for w in words] + [_OPEN_FORMS[f][0] for f in forms]
    return f"{', '.join(items[:-1])} or {items[-1]}" if forms else ", ".join(items)


def check_value(value: Any, hint: Any, key: str) -> None:
    """A one-line ``ConfigError`` naming ``key`` and the allowed values unless ``value`` fits the enum-like
    annotation ``hint`` (a ``Literal`` word, or an open form's text); other annotations accept anything."""
    spec = choices_of(hint)
    if spec is None or value in spec[0]:
        return
    if isinstance(value, str) and any(_OPEN_FORMS[f][1](value) for f in spec[1]):
        return
    raise ConfigError(f"{key}: {value!r} is not one of {choice_text(hint)}")


def check_choices(obj: Any, where: str) -> None:
    """Check every enum-like field of the dataclass ``obj`` against its annotation (not nested sections:
    :func:`from_dict` checks each as it builds it). ``where`` is the section's name, ``config`` for the top."""
    prefix = "" if where == "config" else f"{where.removeprefix('config.')}."
    hints = get_type_hints(type(obj))
    for f in fields(obj):
        check_value(getattr(obj, f.name), hints[f.name], prefix + f.name)
