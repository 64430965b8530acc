"""The ``journey`` command: every command module registers itself on one Typer app.

``main()`` turns any unexpected exception into one line on stderr and exit code 1 (never a
traceback); long-running commands leave through ``cli.processes.finish`` (flush, ``os._exit``).

Only Typer and the command modules' signatures load here: Temporal, FastAPI, asyncpg, pydantic
and the protocol are imported inside the commands that use them, so ``journey --help``,
``journey --version`` and shell completion answer at once.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from cli import booking, journeys, plan, processes, scheduling, simulate
from cli.codes import ERROR, EXIT_CODES_HELP, INTERRUPTED

app = typer.Typer(
    name="journey",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Durable patient journeys for laser facial pore contraction.",
    epilog=EXIT_CODES_HELP,
)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pore-journey")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"journey {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Durable patient journeys for laser facial pore contraction."""


plan.register(app)
processes.register(app)
journeys.register(app)
booking.register(app)
scheduling.register(app)
simulate.register(app)


def main() -> None:
    """Entry point of the ``journey`` console script."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(INTERRUPTED)
    except Exception as error:  # the contract: one line and a non-zero exit, never a traceback
        message = str(error).splitlines()[0] if str(error) else ""
        sys.stderr.write(f"error: {type(error).__name__}{': ' + message if message else ''}\n")
        sys.stderr.flush()
        sys.exit(ERROR)
