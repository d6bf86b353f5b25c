"""Long work off a terminal prints a progress line at a steady interval (CI, nohup,
kubectl logs), and nothing on a terminal or for work shorter than one interval."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from pathlib import Path

from gsched.progress import ProgressLog

ROOT = Path(__file__).resolve().parents[2]


class Pipe(io.StringIO):
    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.tty, self.wrote = tty, threading.Event()

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        n = super().write(s)
        self.wrote.set()
        return n


def test_lines_carry_the_tasks_and_a_closing_line():
    out = Pipe()
    with ProgressLog("simulate (inflation)", interval_s=0.01, stream=out) as log:
        log.update("tidal", 3, 10, "seeds")
        log.update("fgd", 10, 10, "seeds")
        assert out.wrote.wait(30)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("simulate (inflation): tidal 3/10 seeds (30%), "
                               "fgd 10/10 seeds (100%) [")
    assert lines[-1].startswith("simulate (inflation): done [")


def test_a_phase_without_counts():
    log = ProgressLog("trace build", stream=Pipe())
    log.phase("reading ServeGen curve 2 of 9")
    assert log.line().startswith("trace build: reading ServeGen curve 2 of 9 [0s]")


def test_silent_on_a_terminal_and_for_short_work():
    tty = Pipe(tty=True)
    with ProgressLog("x", interval_s=0.01, stream=tty) as log:
        assert not log.enabled
    pipe = Pipe()
    with ProgressLog("x", interval_s=3600, stream=pipe) as log:
        assert log.enabled
    assert tty.getvalue() == pipe.getvalue() == ""


def test_simulate_prints_progress_lines_when_piped(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "gsched", "simulate", str(ROOT / "examples/tidal-mix.csv"),
         "--cluster", str(ROOT / "examples/cluster.yaml"), "--mode", "inflation",
         "--seeds", "3", "--policy", "fgd,binpack", "--json", str(tmp_path / "o.json")],
        capture_output=True, text=True, timeout=300,
        env={"GSCHED_PROGRESS_INTERVAL": "0.01", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("simulate (inflation): ")]
    assert lines, r.stderr
    assert lines[-1].startswith("simulate (inflation): done [")
    assert any("seeds" in ln and "fgd" in ln and "binpack" in ln for ln in lines)
