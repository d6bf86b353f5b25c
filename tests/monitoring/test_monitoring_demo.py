"""`gsched demo` starts agents, the scheduler and Prometheus, and stops them all."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from monitoring_support import PROMETHEUS

CLI = [sys.executable, "-c", "from gsched.cli import main; main()"]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ports_in(text: str) -> list[int]:
    return [int(p) for p in re.findall(r"http://127\.0\.0\.1:(\d+)/", text)]


def test_demo_runs_the_pipeline_and_stops_by_itself(tmp_path: Path) -> None:
    r = subprocess.run(CLI + ["demo", "--duration", "7", "--nodes", "2", "--interval", "0.5",
                              "--workdir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    out = r.stdout
    assert "agent demo-node-1" in out and "agent demo-node-2" in out
    m = re.search(r"stored (\d+) reports, (\d+) samples", r.stderr)
    assert m and int(m.group(1)) >= 2 and int(m.group(2)) > 0, r.stderr
    live = re.findall(r"reports (\d+), samples (\d+)", out)
    assert live and int(live[-1][0]) >= 1
    if os.access(PROMETHEUS, os.X_OK):
        assert "prometheus:" in out
        assert re.search(r"Prometheus sees (\d+) GPU series", out), out
    else:
        assert "prometheus is not installed" in r.stderr
    # Everything it started is gone: nothing listens on the ports it printed.
    ports = ports_in(out)
    assert len(ports) >= 3
    assert not any(listening(p) for p in ports)
    assert (tmp_path / "gsched.sqlite").exists()


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    p = subprocess.Popen(CLI + ["demo", "--nodes", "1", "--workdir", str(tmp_path)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in p.stdout:  # wait until it says it is up
            lines.append(line)
            if line.startswith("Ctrl-C stops everything"):
                break
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert "stopping" in err and "Traceback" not in err
    ports = ports_in("".join(lines))
    assert ports and not any(listening(q) for q in ports)


@pytest.mark.parametrize("args, message", [
    (["--trace", "/nonexistent/trace.tar.gz"], "replay trace not found"),
])
def test_demo_bad_input_is_one_line(args: list[str], message: str) -> None:
    r = subprocess.run(CLI + ["demo", "--duration", "1", *args], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
