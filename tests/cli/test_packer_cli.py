"""`gsched pack`: the plan table, the JSON contract, and clear errors for bad input."""

from __future__ import annotations

import json
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
