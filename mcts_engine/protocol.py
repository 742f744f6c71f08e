"""Prompt protocols: where a system prompt and the first user turn come from, and the ``--protocol`` presets.

A released checkpoint answers well only when it is asked the way it was trained: its system prompt, its
observation sentence, its crop geometry, its final turn. None of those wordings lives in this code. They are
configuration — recipe keys, files the user points to, or what the served checkpoint's chat template supplies
— resolved here, once, for every place a prompt is built (generate's teacher, eval, demo, export rows, and
through the exported rows the GRPO trainer).

System prompt sources (``system_prompt`` for the model under test / the student, ``teacher.system_prompt``
for generate's teacher), resolved by :func:`resolve_system_prompt`:

- ``task``  — the task's own prompt (``Task.student_system`` / ``Task.teacher_system``): today's behaviour.
- ``model`` — no system message at all. The chat template that renders the conversation (vLLM's, from the
  served checkpoint; the trainer's tokenizer's) applies its default: a template that defines a default system
  prompt — Qwen2.5-VL's, and the released ViGoRL checkpoints', whose model cards say the prompt is in the chat
  template — inserts it. Resolves to ``None``.
- ``none``  — an EMPTY system message. It differs from ``model`` exactly where a template has a default:
  Qwen2.5-VL-style templates insert their default only when the first message is not a system message, so
  ``none`` renders an empty system block and the model sees no system text at all (a base model asked with
  no instructions; a server whose template would otherwise add a default). Resolves to ``""``.
- ``@FILE`` — the file's exact text (nothing stripped), for a prompt that must match byte for byte.

Presets (``--protocol NAME``): ``recipes/<task>_<NAME>.yaml`` — a recipe layer under the user's own
``--recipe`` and ``--set``. Known protocols: :data:`PROTOCOLS`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from .config import PROTOCOL_MT_KEYS, RECIPES_DIR, ConfigError, deep_merge, load_recipe

PROTOCOLS: dict[str, str] = {
    "vigorl": "the released ViGoRL checkpoints' interface (Sarch et al. 2025, 'Grounded Reinforcement Learning "
              "for Visual Reasoning'): recipes/<task>_vigorl.yaml",
}


def read_setting_file(value: str, key: str) -> str:
    """``@FILE`` → the file's exact text; any other value is returned as is. One-line ``ConfigError`` when
    the file cannot be read. A file is read once while it is unchanged (size and modification time)."""
    if not value.startswith("@"):
        return value
    path = Path(value[1:]).expanduser()
    try:
        st = path.stat()
        return _read_text(str(path), st.st_size, st.st_mtime_ns)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ConfigError(f"{key}: cannot read {path} ({reason})") from None


@functools.lru_cache(maxsize=64)
def _read_text(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 - size/mtime key the cache
    with open(path, encoding="utf-8", newline="") as fh:  # exact text: no newline translation
        return fh.read()


def resolve_system_prompt(source: str, task_text: str, key: str = "system_prompt") -> str | None:
    """The system message to send: ``None`` = no system message; ``""`` = an empty one; else its text.

    ``source`` is ``task`` (→ ``task_text``), ``model`` (→ ``None``), ``none`` (→ ``""``) or ``@FILE``
    (→ the file's exact text). Anything else is a one-line ``ConfigError`` naming ``key``."""
    if source == "task":
        return task_text
    if source == "model":
        return None
    if source == "none":
        return ""
    if source.startswith("@") and len(source) > 1:
        return read_setting_file(source, key)
    raise ConfigError(f"{key}: {source!r} is not one of task, model, none or @FILE")


def student_system(source: str, task: Any, multiturn: bool) -> str | None:
    """The system message of the model under test / the student (eval, demo, export rows): ``source`` is the
    top-level ``system_prompt``; ``task`` = the task's student prompt (its multi-turn variant when ``multiturn``)."""
    return resolve_system_prompt(str(source), task.student_system(True) if multiturn else task.student_prompt)


def teacher_system(run: Any, task: Any, multiturn: bool) -> str | None:
    """The system message of generate's teacher (``teacher.system_prompt``)."""
    return resolve_system_prompt(str(getattr(run.teacher, "system_prompt", "task")), task.teacher_system(multiturn),
                                 "teacher.system_prompt")


def user_text(task: Any, sample: Any, source: str = "task") -> str:
    """The first user turn's text.

    ``task``: the task's wording (``Task.user_text``). ``question``: the sample's question exactly as the data
    has it — a released dataset whose rows hold the full query — unless the sample has options its question
    does not list (then the task's wording, so no option is lost). A template holding ``{question}`` (or
    ``@FILE`` with one): the template with the question put in."""
    if source == "task":
        return task.user_text(sample)
    if source == "question":
        from .samples.vigorl import parse_options

        if not sample.choices or parse_options(sample.question):
            return str(sample.question)
        return task.user_text(sample)
    text = read_setting_file(source, "user_text")
    if "{question}" not in text:
        raise ConfigError(f"user_text: {source!r} is not task, question or a template with {{question}}")
    return text.replace("{question}", str(sample.question))


def final_turn(mcfg: Any) -> tuple[str, str | None]:
    """``(prefill, user_text)`` of the last allowed turn: the assistant text a ``continue``-style request is
    pre-filled with (``<answer>``, after ``<think> final_think </think>`` when one is set) and the user turn a
    ``plain``-style request ends with (``None`` = the built-in one). ``@FILE`` values are read."""
    from .grounding import ANSWER_OPEN

    think = read_setting_file(str(getattr(mcfg, "final_think", "") or ""), "multiturn.final_think")
    prefill = f"<think> {think.strip()} </think>\n{ANSWER_OPEN}" if think.strip() else ANSWER_OPEN
    user = read_setting_file(str(getattr(mcfg, "final_user_text", "") or ""), "multiturn.final_user_text") or None
    return prefill, user


def inline_texts(mcfg: Any) -> Any:
    """``mcfg`` (a ``MultiTurnConfig``) with its ``@FILE`` texts replaced by the files' text (a copy): a run's
    config then records — and its hash covers — the exact wording, not a path."""
    from dataclasses import replace

    return replace(mcfg, **{k: read_setting_file(str(getattr(mcfg, k)), f"multiturn.{k}")
                            for k in ("observation_text", "final_think", "final_user_text")})


def observation_template(mcfg: Any) -> str:
    """The observation turn's template (``multiturn.observation_text``; ``@FILE`` read)."""
    return read_setting_file(str(mcfg.observation_text), "multiturn.observation_text")


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


def protocol_tasks(protocol: str) -> list[str]:
    """The tasks that have a preset for ``protocol`` (``recipes/<task>_<protocol>.yaml``)."""
    return sorted(p.name[: -len(f"_{protocol}.yaml")] for p in RECIPES_DIR.glob(f"*_{protocol}.yaml"))


def protocol_recipe(protocol: str, task: str) -> Path:
    """The preset recipe of ``protocol`` for ``task``; a one-line ``ConfigError`` for an unknown protocol or a
    task without a preset."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"--protocol {protocol!r}: unknown protocol (known: {', '.join(sorted(PROTOCOLS))})")
    path = RECIPES_DIR / f"{task}_{protocol}.yaml"
    if not path.exists():
        tasks = protocol_tasks(protocol)
        raise ConfigError(f"--protocol {protocol}: no preset for task {task!r} (presets for: {', '.join(tasks) or 'none'})")
    return path


def protocol_task(protocol: str | None, task: str | None, recipe: str | None) -> str | None:
    """The task a command runs when ``--protocol`` is given without ``--task``: the recipe's task, else None."""
    if task or not protocol or not recipe:
        return task
    return str(load_recipe(recipe, "sat2").get("task") or "") or None


def load_with_protocol(recipe: str | None, task: str, protocol: str | None) -> dict[str, Any]:
    """The recipe a command uses: the protocol's preset for ``task`` (when ``protocol``), with the user's
    ``--recipe`` (if any) merged on top; without a protocol, exactly ``load_recipe(recipe, task)``."""
    if not protocol:
        return load_recipe(recipe, task)
    data = load_recipe(str(protocol_recipe(protocol, task)), task)
    if recipe:
        data = deep_merge(data, load_recipe(recipe, task))
    data.setdefault("protocol", protocol)
    return data


__all__ = [
    "PROTOCOLS", "read_setting_file", "resolve_system_prompt", "student_system", "teacher_system", "user_text",
    "final_turn", "inline_texts", "observation_template",
    "PROTOCOL_MT_KEYS", "multiturn_record", "prompt_record", "protocol_tasks", "protocol_recipe", "protocol_task", "load_with_protocol",
]


# --------------------------------------------------------------------------------------------
# What a run directory records
# --------------------------------------------------------------------------------------------

def multiturn_record(mcfg: Any) -> dict[str, Any]:
    """``mcfg`` as a run records it: every field, less the protocol keys that hold their defaults, ``@FILE`` texts
    read (the record holds the exact text, so a changed file is a changed config)."""
    from dataclasses import asdict

    from .config import MultiTurnConfig

    default = asdict(MultiTurnConfig())
    d = asdict(mcfg)
    for key in ("observation_text", "final_think", "final_user_text"):
        d[key] = read_setting_file(str(d[key]), f"multiturn.{key}")
    return {k: v for k, v in d.items() if k not in PROTOCOL_MT_KEYS or v != default[k]}


def prompt_record(system_prompt: str = "task", user_text_source: str = "task", max_long_side: int = 0,
                  protocol: str = "") -> dict[str, Any]:
    """The prompt settings a run records (empty when all hold their defaults)."""
    out: dict[str, Any] = {}
    if system_prompt != "task":
        out["system_prompt"] = system_prompt
    if user_text_source != "task":
        out["user_text"] = user_text_source
    if max_long_side:
        out["max_long_side"] = int(max_long_side)
    if protocol:
        out["protocol"] = protocol
    return out
