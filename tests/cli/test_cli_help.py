"""`gsched --version` and the help every command prints: conventional, complete, 80 columns."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version

import pytest

from gsched.cli import build_command

#: Options another change documents (issue 10 owns `pack`); everything else must say what
#: it does.
UNDOCUMENTED_ELSEWHERE = {("pack", "quiet")}


def _commands(cmd=None, path=()):  # noqa: ANN001, ANN202
    cmd = cmd or build_command()
    subs = getattr(cmd, "commands", None)
    if subs is None:
        yield path, cmd
        return
    for name, sub in subs.items():
        yield from _commands(sub, (*path, name))


COMMANDS = [" ".join(p) for p, _ in _commands()]


def _help(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH")}
    r = subprocess.run([sys.executable, "-m", "gsched", *args, "--help"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_version_prints_the_installed_version():
    r = subprocess.run([sys.executable, "-m", "gsched", "--version"], capture_output=True,
                       text=True, timeout=60)
    assert (r.returncode, r.stdout.strip()) == (0, f"gsched {version('gsched')}")


def test_every_command_and_option_has_help():
    missing = []
    for path, cmd in _commands():
        assert cmd.help, path
        for p in cmd.params:
            if not p.help and (path[-1], p.name) not in UNDOCUMENTED_ELSEWHERE:
                missing.append(f"{' '.join(path)} --{p.name}")
    assert missing == []


@pytest.mark.parametrize("command", ["", "simulate", "trace build", "serve"])
def test_piped_help_is_plain_conventional_and_fits_80_columns(command):
    text = _help(*command.split())
    lines = text.splitlines()
    assert lines[0].startswith(f"Usage: gsched {command}".replace("  ", " "))
    assert max(len(ln) for ln in lines) <= 80, max(lines, key=len)
    for typer_ism in ("<bool>", "<list[", "<path>", "<int", "{trace}", "╭", "│"):
        assert typer_ism not in text, typer_ism
    assert "--help" in text and "-h, --help" in text


def test_usage_lines_name_arguments_in_capitals():
    assert _help("simulate").splitlines()[0] == "Usage: gsched simulate [OPTIONS] TRACE"
    text = _help("trace", "build")
    assert "--servegen PATH" in text and "--days FLOAT" in text and "--seed INT" in text
    assert "--inline-profiles " in text and "--inline-profiles BOOL" not in text


def test_every_command_is_listed():
    top = _help()
    for name in ("agent", "demo", "pack", "serve", "simulate", "trace"):
        assert f"\n  {name} " in top
    assert {"simulate", "trace build", "trace generate", "trace inspect", "serve", "agent",
            "demo", "pack"} <= set(COMMANDS)
