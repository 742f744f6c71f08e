"""The trainer's user-facing error (no heavy imports: the CLI raises it before torch loads)."""

from __future__ import annotations


class TrainSetupError(RuntimeError):
    """A one-line, user-facing problem with the model, data or environment (the CLI prints it, exit 2)."""
