"""The `gsched` command line: parses arguments and calls in, nothing more.

Each command group lives in its own module under `gsched/commands/` and exposes
`register(app)`; this file only collects them and turns user mistakes into one clear line.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import typer

from gsched.errors import GschedError

app = typer.Typer(
    name="gsched",
    help="GPU cluster scheduler for tidal and colocated workloads.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    import gsched.commands as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"gsched.commands.{mod.name}")
        module.register(app)


_register_commands()


def main() -> None:
    """Entry point: run the app, printing gsched errors without a traceback."""
    try:
        app(standalone_mode=False)
    except GschedError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.secho("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
