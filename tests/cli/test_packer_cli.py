"""`gsched pack`: the plan table, the JSON contract, and clear errors for bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gsched.cli import main

HEADER = "id,kind,submit_time,duration,num_gpu,gpu_share,gpu_mem_mib,profile\n"


def bump(hour: int, peak: float) -> str:
    h = np.arange(24)
    d = np.minimum(np.abs(h - hour), 24 - np.abs(h - hour))
    return ";".join(f"{v:.2f}" for v in np.maximum(0.05, peak * np.exp(-(d / 3) ** 2)))


def run(argv: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", ["gsched", *argv])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def write(tmp_path: Path, rows: list[str]) -> Path:
    f = tmp_path / "w.csv"
    f.write_text(HEADER + "".join(r + "\n" for r in rows))
    return f


def test_pack_prints_the_plan_and_writes_the_json_contract(tmp_path, monkeypatch, capsys):
    rows = [f"day{i},inference,0,,1,1,0,{bump(14, 0.8)}" for i in range(2)]
    rows += [f"night{i},inference,0,,1,1,0,{bump(2, 0.8)}" for i in range(2)]
    out = tmp_path / "plan.json"
    code = run(["pack", str(write(tmp_path, rows)), "--json", str(out), "--time-limit", "3"],
               monkeypatch)
    assert code == 0
    text = capsys.readouterr().out
    assert "peak reservation" in text and "day0" in text
    assert "14:15" in text  # a GPU peaks in its afternoon tide (24 values resampled to 96)
    plan = json.loads(out.read_text())
    for key in ("gpus_used", "lower_bound", "peak_reservation_gpus", "profile_ffd_gpus",
                "solve_seconds", "slots", "assignments"):
        assert key in plan
    assert plan["gpus_used"] == 2 and plan["peak_reservation_gpus"] == 4
    assert plan["lower_bound"] == 2 and plan["slots"] == 96
    pairs = {}
    for a in plan["assignments"]:
        pairs.setdefault((a["node"], tuple(a["gpus"])), set()).add(a["workload"][:3])
    assert all(v == {"day", "nig"} for v in pairs.values())  # each GPU: one day, one night


def test_a_workload_larger_than_any_gpu_is_named_with_exit_2(tmp_path, monkeypatch, capsys):
    rows = [f"ok,inference,0,,1,0.5,1000,{bump(3, 0.5)}",
            f"giant,inference,0,,1,1,900000,{bump(3, 0.5)}"]
    code = run(["pack", str(write(tmp_path, rows))], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2
    assert "giant" in err and "memory" in err and "Traceback" not in err


@pytest.mark.parametrize("args, match", [(["--kind", "gpu"], "unknown kind"),
                                         (["--at", "-5"], "no GPU workloads")])
def test_bad_options_are_clear_errors(tmp_path, monkeypatch, capsys, args, match):
    rows = [f"ok,inference,10,,1,0.5,0,{bump(3, 0.5)}"]
    code = run(["pack", str(write(tmp_path, rows)), *args], monkeypatch)
    assert code == 2 and match in capsys.readouterr().err


def cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    """`gsched` as a subprocess: stdout and stderr are pipes, not a terminal."""
    return subprocess.run([sys.executable, "-m", "gsched", *args], capture_output=True,
                          text=True, timeout=120, **kw)


def services(tmp_path: Path, n: int = 12) -> Path:
    rows = [f"svc{i},inference,0,,1,{0.3 + 0.05 * (i % 5):.2f},{8000 * (1 + i % 3)},"
            f"{bump((5 * i) % 24, 0.9)}" for i in range(n)]
    return write(tmp_path, rows)


def test_same_seed_writes_byte_identical_json(tmp_path):
    trace = services(tmp_path)
    outs = []
    for k in range(2):
        out = tmp_path / f"p{k}.json"
        r = cli(["pack", str(trace), "--seed", "7", "--time-limit", "8", "--json", str(out),
                 "-q"])
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    plan = json.loads(outs[0])
    assert plan["deterministic"] is True and plan["solve_seconds_kind"] == "deterministic"


def test_json_gives_every_bound_names_the_binding_one_and_both_savings(tmp_path):
    out = tmp_path / "p.json"
    r = cli(["pack", str(services(tmp_path)), "--time-limit", "5", "--json", str(out), "-q"])
    assert r.returncode == 0, r.stderr
    plan = json.loads(out.read_text())
    assert set(plan["bounds"]) == {"load", "memory", "whole_gpu", "models", "clique", "lp"}
    assert plan["bounds"][plan["binding_bound"]] == plan["lower_bound"]
    assert all(v is None or v <= plan["gpus_used"] for v in plan["bounds"].values())
    assert isinstance(plan["bounds_cut"], dict)
    s = plan["saving"]
    assert s["headline"] == "vs_peak_reservation"
    assert s["vs_peak_reservation"] == pytest.approx(
        1 - plan["gpus_used"] / plan["peak_reservation_gpus"], abs=1e-6)
    assert s["vs_request_booking"] == pytest.approx(
        1 - plan["gpus_used"] / plan["request_booking_gpus"], abs=1e-6)
    assert plan["time_limit"] == 5 and plan["stopped_by"]


def test_sized_cluster_names_nodes_as_a_cluster_file_expands_them(tmp_path):
    out = tmp_path / "p.json"
    r = cli(["pack", str(services(tmp_path)), "--time-limit", "3", "--json", str(out), "-q"])
    assert r.returncode == 0, r.stderr
    nodes = {a["node"] for a in json.loads(out.read_text())["assignments"]}
    assert nodes and all(re.fullmatch(r"a100-(0|[1-9][0-9]*)", n) for n in nodes), nodes


def test_off_a_terminal_pack_prints_progress_to_stderr_and_quiet_silences_it(tmp_path):
    trace = services(tmp_path)
    r = cli(["pack", str(trace), "--time-limit", "3"])
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("pack:")]
    assert any("search" in ln for ln in lines) and any("GPUs" in ln for ln in lines)
    assert "of 3" in lines[0]
    q = cli(["pack", str(trace), "--time-limit", "3", "-q"])
    assert q.returncode == 0 and q.stderr == "" and q.stdout == ""


def test_quiet_has_help():
    r = cli(["pack", "--help"], env={**os.environ, "COLUMNS": "200"})
    quiet = next(ln for ln in r.stdout.splitlines() if "--quiet" in ln)
    assert "Print nothing but errors" in quiet
