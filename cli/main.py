"""The ``journey`` command (temporary: the team lead owns this file and will replace it)."""

import typer

from cli import plan

app = typer.Typer(no_args_is_help=True)
plan.register(app)


def main() -> None:
    """Entry point of the ``journey`` console script."""
    app()
