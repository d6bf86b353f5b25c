"""Every command misused as a user would: exit code 2, a usage line at most, then exactly
one `error:` line that names what is wrong, and never a traceback.

`CASES` run as real processes (`python -m gsched`), once and concurrently, each its own
test so a failure names the command line; they cover every command and every kind of
mistake. `MORE_CASES`, the long tail of the same kinds, run through the same entry point
in this process (a process each would take minutes on a busy machine).
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

TRACE = """id,kind,submit_time,duration,num_gpu,gpu_share,profile
svc-a,inference,0,,1,0.5,0.2;0.2;0.9;0.9
t1,training,60,3600,1,1,
"""
CLUSTER = "nodes:\n  - {name: a100, count: 2, gpu_count: 8, gpu_model: A100}\n"

# (command line, a substring the error line must contain). {port} is a port in use.
CASES: list[tuple[str, str]] = [
    # the command tree itself
    ("", "missing command: one of agent, capacity, demo, pack, serve, simulate, sweep, "
         "profiles, trace"),
    ("trace", "missing command: one of build, generate, inspect"),
    ("nope", "No such command 'nope'"),
    ("--nope", "No such option: --nope"),
    # simulate
    ("simulate", "Missing argument 'TRACE'"),
    ("simulate t.csv --seeds 0", "'--seeds'"),
    ("simulate t.csv --cluster eight.yaml", "nodes[0].count': count must be a whole number"),
    ("simulate t.csv --json /proc/gsched/out.json", "field '--json': cannot"),
    ("simulate ms.csv", "ms.csv:2: field 'duration': 1e+10 is past the sanity limit of "
                        "31,622,400 s"),
    ("simulate huge.csv", "huge.csv:2: field 'submit_time': 1e+308 is past the sanity limit"),
    # trace
    ("trace build", "Missing option '--out'"),
    ("trace build --out x.csv --days 0 --inference-services 0 --training-jobs 0",
     "field '--days'"),
    ("trace generate --out x.csv --days 5000", "past the limit of 3,650 days"),
    # capacity and sweep
    ("capacity", "Missing argument 'TRACE'"),
    ("capacity t.csv --queue-p95 abc", "field '--queue-p95': expected a duration"),
    ("sweep", "Missing argument 'GRID'"),
    ("sweep no-such-grid.yaml", "no-such-grid.yaml: cannot read grid file"),
    # profiles
    ("profiles", "missing command: one of learn"),
    ("profiles learn", "Missing option '--prometheus'"),
    ("profiles learn --prometheus http://127.0.0.1:1 --since 3x",
     "field '--since': not a duration"),
    ("profiles learn --prometheus http://127.0.0.1:1",
     "Prometheus at http://127.0.0.1:1 unreachable"),
    # pack (argument errors only)
    ("pack", "Missing argument 'WORKLOADS'"),
    ("pack t.csv --time-limit -1", "'--time-limit'"),
    # serve
    ("serve --port 70000", "'--port'"),
    ("serve --cluster c.yaml --port {port}", "field '--port': cannot listen on 127.0.0.1:{port}"),
    ("serve --cluster c.yaml --host no-such-host.invalid --port 0", "field '--host'"),
    ("serve --cluster c.yaml --headroom 1.5", "field '--headroom'"),
    ("serve --cluster c.yaml --policy nope", "unknown policy 'nope'"),
    ("serve --cluster c.yaml --workload no-such-trace.csv", "trace file not found"),
    ("serve --cluster eight.yaml", "count must be a whole number"),
    ("serve --cluster c.yaml --db adir", "field '--db': is a directory"),
    ("serve --cluster c.yaml --tls-cert c.yaml", "give both --tls-cert and --tls-key"),
    ("serve --cluster c.yaml --tls-cert c.yaml --tls-key c.yaml --port 0",
     "cannot load the TLS certificate"),
    ("serve --cluster c.yaml --token-file missing", "cannot read token file"),
    ("serve --cluster c.yaml --kubeconfig c.yaml", "exclude each other"),
    # agent
    ("agent --source bogus", "unknown source 'bogus'"),
    ("agent --source replay:missing.csv", "replay trace not found"),
    ("agent --source replay:t.csv --interval 0", "field '--interval'"),
    ("agent --source replay:t.csv --report-every 0", "field '--report-every'"),
    ("agent --source replay:t.csv --gpus 0", "field '--gpus'"),
    ("agent --source replay:t.csv --speed 0", "field '--speed'"),
    # demo
    ("demo --nodes 0", "'--nodes'"),
    ("demo --trace missing.tar.gz", "replay trace not found"),
    ("demo --speed 0", "field '--speed'"),
    ("demo --interval -1", "field '--interval'"),
]

# The long tail, in process: (command line, a substring the error line must contain).
MORE_CASES: list[tuple[str, str]] = [
    ("simulate --nope t.csv", "No such option: --nope"),
    ("demo --scheduler-port 70000", "'--scheduler-port'"),
    ("demo --nodes 9", "'--nodes'"),
    ("agent --source replay:t.csv --queue-max 0", "'--queue-max'"),
    ("agent --source replay:t.csv --log-level loud", "'--log-level'"),
    ("agent --source replay:t.csv --port 70000", "'--port'"),
    ("serve --cluster c.yaml --duration -1", "'--duration'"),
    ("serve --cluster c.yaml --max-body-mib 0", "'--max-body-mib'"),
    ("serve --cluster c.yaml --log-level loud", "'--log-level'"),
    ("serve --port web", "'--port'"),
    ("serve --port -1", "'--port'"),
    ("pack t.csv --kind nope", "unknown kind 'nope'"),
    ("trace generate --out /proc/gsched/x.csv", "cannot create its directory"),
    ("trace generate --out x.csv --jobs 0", "field '--jobs'"),
    ("simulate t.csv --json adir", "field '--json': is a directory"),
    ("simulate t.csv --surge 0.5", "--surge-slots"),
    ("simulate t.csv --until -5", "field '--until'"),
    ("simulate t.csv --mode nope", "unknown mode 'nope'"),
    ("simulate missing.csv", "missing.csv: trace file not found"),
    ("simulate adir", "is a directory"),
    ("simulate empty.csv", "empty trace"),
    ("simulate binary.csv", "unknown trace format"),
    ("simulate t.csv --seeds -3", "'--seeds'"),
    ("simulate t.csv --seeds many", "'--seeds'"),
    ("simulate t.csv --policy nope", "unknown policy 'nope'"),
    ("simulate t.csv --headroom 2", "'--headroom'"),
    ("simulate t.csv --target 0.5", "'--target'"),
    ("simulate t.csv --noise -1", "'--noise'"),
    ("simulate t.csv --checkpoint-interval 0", "field '--checkpoint-interval'"),
    ("simulate t.csv --restart-overhead -1", "field '--restart-overhead'"),
    ("simulate t.csv --mode inflation --noise 0.1", "replay mode only"),
    ("simulate t.csv --cluster missing.yaml", "missing.yaml: cannot read cluster file"),
    ("simulate t.csv --cluster million.yaml", "outside 0 to 100,000 nodes"),
    ("simulate t.csv --profiles missing.csv", "profiles file not found"),
    ("simulate t.csv --plot adir", "field '--plot': is a directory"),
    ("simulate t.csv --plot out.txt", "field '--plot'"),
    ("simulate mem.csv", "mem.csv:2: field 'gpu_mem_mib'"),
    ("simulate span.csv", "span.csv:3: field 'submit_time'"),
    ("simulate bad.csv.gz", "damaged gzip data"),
    ("trace nope", "No such command 'nope'"),
    ("trace build --out x.csv --curves nope", "unknown curve source(s) nope"),
    ("trace build --out adir", "is a directory; --out needs a file name"),
    ("trace build --out x.csv --servegen missing.csv", "missing.csv: field '--servegen'"),
    ("trace generate", "Missing option '--out'"),
    ("trace generate --out x.csv --inference-fraction 2", "field '--inference-fraction'"),
    ("trace inspect", "Missing argument 'TRACE'"),
    ("trace inspect t.csv --slots 0", "'--slots'"),
    ("trace inspect ms.csv", "sanity limit"),
    ("pack t.csv --time-limit soon", "'--time-limit'"),
    ("pack t.csv --headroom 5", "'--headroom'"),
    ("pack t.csv --workers 0", "'--workers'"),
    ("pack missing.csv", "trace file not found"),
]


def _row(**fields: str) -> str:
    base = {"id": "a", "kind": "training", "submit_time": "0", "duration": "100",
            "gpu_mem_mib": "0"}
    base.update(fields)
    return ",".join(base) + "\n" + ",".join(base.values()) + "\n"


def _files(d: Path) -> None:
    (d / "t.csv").write_text(TRACE)
    (d / "c.yaml").write_text(CLUSTER)
    (d / "eight.yaml").write_text("nodes:\n  - {name: a, count: eight, gpu_count: 8}\n")
    (d / "million.yaml").write_text("nodes:\n  - {name: a, count: 1000000, gpu_count: 8}\n")
    (d / "empty.csv").write_text("")
    (d / "binary.csv").write_bytes(bytes(range(256)))
    (d / "ms.csv").write_text(_row(duration="1e10"))
    (d / "huge.csv").write_text(_row(submit_time="1e308"))
    (d / "mem.csv").write_text(_row(gpu_mem_mib="1e12"))
    (d / "span.csv").write_text(_row() + "b,training,4e8,100,0\n")
    (d / "bad.csv.gz").write_bytes(gzip.compress(TRACE.encode())[:40])
    (d / "adir").mkdir()


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "GSCHED_TRACES": str(cwd / "no-traces")}
    return subprocess.run([sys.executable, "-m", "gsched", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120, env=env)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    d = tmp_path_factory.mktemp("misuse")
    _files(d)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = str(busy.getsockname()[1])
    try:
        lines = {c: c.replace("{port}", port) for c, _ in CASES}
        with ThreadPoolExecutor(max_workers=4) as pool:
            done = dict(zip(lines, pool.map(lambda c: _run(c.split(), d), lines.values()),
                            strict=True))
    finally:
        busy.close()
    return {c: (r, port) for c, r in done.items()}


@pytest.mark.parametrize(("line", "expected"), CASES, ids=[c or "(none)" for c, _ in CASES])
def test_misuse_is_one_clear_error_line(results, line: str, expected: str):
    r, port = results[line]
    where = f"gsched {line}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr + r.stdout, where
    assert r.returncode == 2, where
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, where
    assert all(ln.startswith(("Usage: ", "error: ")) for ln in lines), where
    assert lines[-1] == errors[0], where
    assert expected.replace("{port}", port) in errors[0], where
    assert r.stdout == "", where


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("misuse-more")
    _files(d)
    return d


@pytest.mark.parametrize(("line", "expected"), MORE_CASES, ids=[c for c, _ in MORE_CASES])
def test_more_misuse_is_one_clear_error_line(workdir, monkeypatch, capsys, line: str,
                                             expected: str):
    from gsched.cli import main

    monkeypatch.chdir(workdir)
    monkeypatch.setenv("GSCHED_TRACES", str(workdir / "no-traces"))
    with pytest.raises(SystemExit) as exit_:
        main(line.split())
    out, err = capsys.readouterr()
    where = f"gsched {line}\nstdout: {out}\nstderr: {err}"
    assert exit_.value.code == 2, where
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], where
    assert all(ln.startswith(("Usage: ", "error: ")) for ln in lines), where
    assert expected in errors[0], where
    assert out == "", where
