"""The ``mcts-engine`` command line. Each command lives in ``mcts_engine/commands/<name>.py``; this
module only wires them up, so ``mcts-engine --help`` stays fast (no torch/transformers import)."""

from __future__ import annotations

import typer

from .commands.demo import demo
from .commands.env import env
from .commands.eval import eval as eval_
from .commands.export import export
from .commands.generate import generate
from .commands.report import report
from .commands.train import train


def _no_type_for_flags() -> None:
    """Typer's help prints a ``<bool>`` type column for on/off flags (``--force``, ``--help``); a flag takes
    no value, so show none. (``TyperOption.display_type_rich`` is the one place that column is computed.)"""
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "_flags_untyped", False):
        return

    def display_type_rich(self, ctx):  # type: ignore[no-untyped-def]
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._flags_untyped = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_no_type_for_flags()
app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    help="Grounded MCTS data engine: generate search trees, export training data, train students.",
)
app.command("generate")(generate)
app.command("export")(export)
app.command("report")(report)
app.command("train")(train)
app.command("eval")(eval_)
app.command("demo")(demo)
app.command("env")(env)


def _version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"mcts-engine {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """mcts-engine: generate → export → train grounded visual reasoning data."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
