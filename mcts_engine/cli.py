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
