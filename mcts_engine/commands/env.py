"""``mcts-engine env``: the versions and hardware a bug report needs (like ``trl env`` or vLLM's ``collect-env``).

Nothing heavy is imported to find a version (``importlib.metadata``); torch is imported only when it is
installed, to ask whether CUDA is available.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import platform
import sys

import typer

PACKAGES = ("torch", "transformers", "openai", "aiohttp", "datasets", "pyarrow", "pillow", "typer", "vllm")


def version_of(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def cuda_line() -> str:
    """CUDA availability, asked of torch only when torch is installed (its import is lazy)."""
    if importlib.util.find_spec("torch") is None:
        return "n/a (torch not installed)"
    try:
        import torch
    except Exception as exc:  # a broken install: say so, do not crash
        return f"unknown (torch import failed: {type(exc).__name__}: {exc})"
    if not torch.cuda.is_available():
        return f"not available (torch built for CUDA {torch.version.cuda})" if torch.version.cuda else "not available (CPU build)"
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return f"available: {torch.cuda.device_count()} device(s) ({names}), CUDA {torch.version.cuda}"


def collect() -> list[tuple[str, str]]:
    from .. import __version__

    rows = [("mcts-engine", __version__), ("Python", sys.version.split()[0]), ("Platform", platform.platform())]
    for dist in PACKAGES:
        v = version_of(dist)
        if v is not None or dist != "vllm":  # vllm only when present
            rows.append((dist, v or "not installed"))
    rows.append(("CUDA", cuda_line()))
    return rows


def env() -> None:
    """Print versions (Python, platform, torch, transformers, openai, aiohttp, …, vllm if present) and CUDA availability."""
    rows = collect()
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        typer.echo(f"- {k:<{width}} : {v}")
