"""The ``journey`` command: every command module registers itself on one Typer app.

``main()`` turns any unexpected exception into one line on stderr and exit code 1 (never a
traceback); long-running commands leave through ``cli.processes.finish`` (flush, ``os._exit``).
"""

from __future__ import annotations

import importlib.util
import sys

import typer

from cli import plan, processes

app = typer.Typer(
    name="journey",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Durable patient journeys for laser facial pore contraction.",
)
plan.register(app)
processes.register(app)

# cli/journeys.py (enrol, list, status, signals) is being written by another engineer; until it
# lands the CLI must still work. Once it exists, replace this with a plain import.
if importlib.util.find_spec("cli.journeys") is not None:
    from cli import journeys

    journeys.register(app)


def main() -> None:
    """Entry point of the ``journey`` console script."""
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as error:  # the contract: one line and a non-zero exit, never a traceback
        message = str(error).splitlines()[0] if str(error) else ""
        sys.stderr.write(f"error: {type(error).__name__}{': ' + message if message else ''}\n")
        sys.stderr.flush()
        sys.exit(1)
