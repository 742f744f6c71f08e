"""CLI commands, one light module each (heavy imports happen inside the command bodies)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

import typer

TEACHER_KINDS = ("openai", "sim", "vllm")


def fail(msg: str, code: int = 2) -> NoReturn:
    """A one-line error on stderr and the exit code (2: bad input or option)."""
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


@dataclass(frozen=True)
class TeacherChoice:
    kind: str  # openai | sim | vllm
    why: str  # how it was chosen, for the first line a command prints


def choose_teacher(
    teacher: str | None,
    base_url: str | None,
    model: str | None,
    recipe_kind: str | None,
    bundled: bool,
) -> TeacherChoice:
    """Which teacher backend a command uses — the ONE rule ``generate``, ``eval`` and ``demo`` share.

    In order: ``--teacher``; else the kind the recipe or a ``--set teacher.kind=…`` names; else ``openai``
    when ``--base-url`` or ``--model`` is given; else the scripted ``sim`` on the bundled sample data, and
    ``openai`` on the user's data. A server address can never end up talking to the simulator: ``sim``
    (named anywhere) together with ``--base-url``/``--model`` is refused. Raises ``ValueError`` with a
    one-line reason for an unknown kind or a contradiction.
    """
    server = [flag for flag, v in (("--base-url", base_url), ("--model", model)) if v]
    for label, kind in (("--teacher", teacher), ("teacher.kind", recipe_kind)):
        if kind is not None and kind not in TEACHER_KINDS:
            raise ValueError(f"{label} {kind!r}: expected one of {', '.join(TEACHER_KINDS)}")
    if teacher is not None:
        if teacher == "sim" and server:
            raise ValueError(f"--teacher sim is a scripted simulator and does not use {' or '.join(server)}; "
                             "drop --teacher sim to use the server")
        return TeacherChoice(teacher, "(--teacher)")
    if recipe_kind is not None:
        if recipe_kind == "sim" and server:
            raise ValueError(f"the recipe (or --set) names teacher.kind sim, which does not use {' or '.join(server)}; "
                             "pass --teacher openai to use the server")
        return TeacherChoice(recipe_kind, "(recipe teacher.kind)")
    if server:
        return TeacherChoice("openai", f"({' and '.join(server)} given)")
    if bundled:
        return TeacherChoice("sim", "(default on the bundled sample data: no --teacher, --base-url or --model)")
    return TeacherChoice("openai", "(default for --data)")


def backend_missing(kind: str) -> str | None:
    """Why ``kind`` cannot run here (the in-process ``vllm`` backend without vllm installed), before anything
    is printed about it; None when it can be tried."""
    import importlib.util

    if kind == "vllm" and importlib.util.find_spec("vllm") is None:
        from ..teachers.vllm_local import INSTALL_HINT

        return INSTALL_HINT
    return None


def recipe_teacher_kind(recipe: dict | None, overrides: list[str]) -> str | None:
    """The teacher kind a recipe (after ``--set`` overrides) names explicitly, or None."""
    from ..config import RunConfig, apply_overrides

    data = apply_overrides(dict(recipe or {}), list(overrides), schema=RunConfig)
    section = data.get("teacher") if isinstance(data, dict) else None
    kind = section.get("kind") if isinstance(section, dict) else None
    return None if kind is None else str(kind)
