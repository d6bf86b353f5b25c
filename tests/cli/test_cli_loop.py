"""`gsched simulate --replan-every --guard`: the tidal loop from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

TRACE = """id,kind,submit_time,duration,num_gpu,gpu_share,profile,preemptible,utilization
svc-a,inference,0,,1,0.5,0.2;0.2;0.9;0.9,,
t1,training,60,80000,1,1,,true,0.3
"""
CLUSTER = "prices: {A100: 2.0}\nnodes:\n  - {name: n, count: 1, gpus: 2, gpu_model: A100}\n"


def gsched(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gsched", *args], capture_output=True,
                          text=True, timeout=120)


def test_the_loop_flags_add_guard_and_replan_figures(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    (tmp_path / "c.yaml").write_text(CLUSTER)
    out = gsched("simulate", str(tmp_path / "t.csv"), "--cluster", str(tmp_path / "c.yaml"),
                 "--policy", "tidal", "--replan-every", "3600", "--guard", "--surge", "1.0",
                 "--surge-start-slot", "0", "--surge-slots", "96", "--json",
                 str(tmp_path / "o.json"), "-q")
    assert out.returncode == 0, out.stderr
    f = json.loads((tmp_path / "o.json").read_text())["policies"]["tidal"]
    assert f["replans"] >= 1
    # the surge doubles the service beside the training: the guard evicts it
    assert f["guard_evictions"] >= 1 and f["evictions_per_training_job"] >= 1
    assert "gpu_hours_lost_share" in f


def test_a_replan_interval_under_a_minute_is_refused(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text(TRACE)
    out = gsched("simulate", str(tmp_path / "t.csv"), "--replan-every", "5")
    assert out.returncode == 2
    assert "--replan-every" in out.stderr and "Traceback" not in out.stderr


RESERVE_TRACE = """id,kind,submit_time,duration,num_gpu,gpu_share,profile,preemptible,utilization
day,inference,0,,1,0.6,0.15;0.15;1;1,,
night,inference,0,,1,0.6,1;1;0.15;0.15,,
"""


def test_inference_reserve_keeps_anti_phase_services_apart(tmp_path: Path) -> None:
    # Alone the pair peaks at 0.69 of a GPU: shared by profile, but not under a +50 %
    # surge reserve (1.04), so the reserve puts them on two GPUs.
    (tmp_path / "t.csv").write_text(RESERVE_TRACE)
    (tmp_path / "c.yaml").write_text(CLUSTER)
    peaks = {}
    for reserve in ("0", "0.5"):
        out = gsched("simulate", str(tmp_path / "t.csv"), "--cluster",
                     str(tmp_path / "c.yaml"), "--policy", "tidal", "--inference-reserve",
                     reserve, "--until", "86400", "--json", str(tmp_path / "o.json"), "-q")
        assert out.returncode == 0, out.stderr
        peaks[reserve] = json.loads((tmp_path / "o.json").read_text())["policies"]["tidal"][
            "peak_occupied_gpus"]
    assert peaks == {"0": 1, "0.5": 2}
