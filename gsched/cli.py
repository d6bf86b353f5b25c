"""The `gsched` command line: parses arguments and calls in, nothing more.

Each command group lives in its own module under `gsched/commands/` and exposes
`register(app)`; this file only collects them, tidies their help, and turns user mistakes
into one clear line: a usage line, then `error: ...`, exit code 2, never a traceback.

Usage errors are typer's own exceptions (typer vendors click and does not need the `click`
package), reached through the public `typer.TyperException` base, so nothing here depends on
which click, if any, is installed.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from typing import Annotated, Any, Literal, get_args, get_origin

import typer
import typer.main

from gsched.errors import GschedError

app = typer.Typer(
    name="gsched",
    help="GPU cluster scheduler for tidal and colocated workloads.",
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help: the boxed layout squeezes descriptions into a narrow column when piped.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

#: What a value of each Python type is called in help ("--seeds INT").
_METAVARS = {int: "INT", float: "FLOAT", str: "TEXT", bool: "BOOL"}


def gsched_version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("gsched")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gsched {gsched_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_print_version,
        help="Print gsched's version and exit.")] = False,
) -> None:
    """GPU cluster scheduler for tidal and colocated workloads."""


def _register_commands() -> None:
    import gsched.commands as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"gsched.commands.{mod.name}")
        module.register(app)


_register_commands()


def _metavar(param: Any) -> str:
    """`PATH`, `INT`, ... for an option's value (typer would print `<list[Path]>`)."""
    annotation = param.type_descriptor.annotation
    if get_origin(annotation) is Literal:  # a choice: name them
        return "[" + "|".join(map(str, get_args(annotation))) + "]"
    inner = get_args(annotation)
    if inner:  # list[Path] (a repeatable option): name the element
        annotation = inner[0]
    if isinstance(annotation, type) and issubclass(annotation, os.PathLike):
        return "PATH"
    return _METAVARS.get(annotation, "VALUE")


def _usage_pieces(command: Any, ctx: Any) -> list[str]:
    """`[OPTIONS] TRACE` rather than typer's `[OPTIONS] {trace}`."""
    pieces = [command.options_metavar] if command.options_metavar else []
    for p in command.get_params(ctx):
        if p.param_type_name == "argument":
            name = p.metavar or p.name.upper()
            pieces.append(name if p.required else f"[{name}]")
    return pieces


def _tidy(command: Any) -> None:
    """Conventional metavars in help and usage lines, for every command in the tree.

    typer builds these objects afresh for each run; setting public attributes (and two
    methods) on the instances keeps gsched off typer's private classes.
    """
    for sub in getattr(command, "commands", {}).values():
        _tidy(sub)
    for p in command.params:
        if p.param_type_name == "argument":
            p.metavar = p.metavar or p.name.upper()
            p.display_type_rich = lambda ctx: None  # "TRACE", not "TRACE <path>"
        elif not getattr(p, "is_flag", False) and not getattr(p, "count", False):
            p.metavar = p.metavar or _metavar(p)
    if not hasattr(command, "commands"):
        command.collect_usage_pieces = lambda ctx, c=command: _usage_pieces(c, ctx)


def build_command() -> Any:
    """The click command tree behind `gsched`, with tidied help."""
    command = typer.main.get_command(app)
    _tidy(command)
    return command


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _usage_error(e: typer.TyperException) -> int:
    """Print a usage line (when there is a command to show) and one `error:` line."""
    ctx = getattr(e, "ctx", None)
    message = _one_line(e.format_message()).replace("Value error, ", "")
    if ctx is not None:
        typer.echo(ctx.get_usage(), err=True)
        if message.rstrip(".") == "Missing command" and hasattr(ctx.command, "list_commands"):
            names = ", ".join(ctx.command.list_commands(ctx))
            message = f"missing command: one of {names} (see '{ctx.command_path} --help')"
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return 2


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, printing user mistakes as one line, never a traceback."""
    try:
        rv = build_command().main(argv, prog_name="gsched", standalone_mode=False)
    except GschedError as e:
        typer.secho(f"error: {_one_line(str(e))}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except typer.TyperException as e:  # usage errors: typer's vendored click exceptions
        sys.exit(_usage_error(e))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.secho("aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    # Without standalone mode, an Exit (e.g. from --help or --version) comes back as its code.
    sys.exit(rv if isinstance(rv, int) else 0)
