"""`gsched simulate` as a user runs it: real process, real files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

TRACE = """id,kind,submit_time,duration,num_gpu,gpu_share,profile
svc-a,inference,0,,1,0.5,0.2;0.2;0.9;0.9
svc-b,inference,0,,1,0.5,0.9;0.9;0.2;0.2
t1,training,60,3600,1,1,
t2,training,120,7200,2,1,
t3,training,180,1800,1,0.5,
"""
CLUSTER = "prices: {A100: 2.0}\nnodes:\n  - {name: n, count: 2, gpus: 2, gpu_model: A100}\n"
CONTRACT = {"gpu_allocation_rate", "mean_gpu_utilization", "cost", "cost_per_experiment",
            "completed_training_jobs", "queue_delay_p50_s", "queue_delay_p99_s",
            "jct_mean_s", "makespan_s", "slo_risk_slot_minutes", "preemptions"}


def gsched(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gsched", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "t.csv").write_text(TRACE)
    (tmp_path / "c.yaml").write_text(CLUSTER)
    return tmp_path / "t.csv", tmp_path / "c.yaml"


def test_replay_prints_the_table_and_writes_json_and_plot(files, tmp_path):
    trace, cluster = files
    out = gsched("simulate", str(trace), "--cluster", str(cluster), "--policy", "all",
                 "--json", str(tmp_path / "o.json"), "--plot", str(tmp_path / "o.png"))
    assert out.returncode == 0, out.stderr
    for name in ("k8s-spread", "binpack", "bestfit", "fgd", "peak"):
        assert name in out.stdout
    assert "Cost per experiment" in out.stdout
    data = json.loads((tmp_path / "o.json").read_text())
    assert data["mode"] == "replay" and data["trace"].endswith("t.csv")
    assert data["cluster"]["nodes"] == 2 and data["cluster"]["gpus"] == 4
    assert set(data["policies"]) >= {"k8s-spread", "binpack", "bestfit", "fgd", "peak"}
    for figures in data["policies"].values():
        assert CONTRACT <= set(figures)
        assert 0 <= figures["gpu_allocation_rate"] <= 1
        assert 0 <= figures["mean_gpu_utilization"] <= 1
        assert figures["completed_training_jobs"] + figures["unfinished_jobs"] == 3
    # Spreading the two half-GPU services over both nodes strands the 2-GPU job.
    assert data["policies"]["k8s-spread"]["unfinished_jobs"] == 1
    assert data["policies"]["binpack"]["completed_training_jobs"] == 3
    png = (tmp_path / "o.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_policy_list_and_inflation_json(files, tmp_path):
    trace, cluster = files
    out = gsched("simulate", str(trace), "--cluster", str(cluster), "--policy", "fgd,binpack",
                 "--mode", "inflation", "--seeds", "3", "--json", str(tmp_path / "i.json"))
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "i.json").read_text())
    assert data["mode"] == "inflation" and list(data["policies"]) == ["fgd", "binpack"]
    for f in data["policies"].values():
        assert f["seeds"] == 3
        assert 0 < f["allocation_ratio_at_100"] <= 1 and 0 <= f["fragmented_gpu_share"] <= 1


def test_without_cluster_one_is_sized_to_the_trace(files, tmp_path):
    trace, _ = files
    out = gsched("simulate", str(trace), "--policy", "binpack", "--json",
                 str(tmp_path / "s.json"), "--quiet")
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "s.json").read_text())
    assert "sized to trace" in data["cluster"]["source"]
    assert data["cluster"]["gpus"] == 8  # peak request 4 GPUs -> at least one 8-GPU node


@pytest.mark.parametrize("args, message", [
    (["--policy", "fifo"], "unknown policy 'fifo'"),
    (["--mode", "batch"], "unknown mode 'batch'"),
])
def test_bad_options_are_one_clear_line(files, args, message):
    trace, cluster = files
    out = gsched("simulate", str(trace), "--cluster", str(cluster), *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_bad_trace_names_file_line_and_field(tmp_path, files):
    _, cluster = files
    bad = tmp_path / "bad.csv"
    bad.write_text("id,kind,submit_time,duration\nj1,training,0,100\nj2,training,5,-3\n")
    out = gsched("simulate", str(bad), "--cluster", str(cluster))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "bad.csv:3" in out.stderr and "duration" in out.stderr


def test_missing_files_are_named(tmp_path, files):
    trace, _ = files
    out = gsched("simulate", str(tmp_path / "nope.csv"))
    assert out.returncode == 2 and "nope.csv" in out.stderr and "Traceback" not in out.stderr
    out = gsched("simulate", str(trace), "--cluster", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2 and "nope.yaml" in out.stderr and "Traceback" not in out.stderr


def test_job_larger_than_any_node_is_reported_not_looped_on(tmp_path, files):
    _, cluster = files
    t = tmp_path / "big.csv"
    t.write_text("id,kind,submit_time,duration,num_gpu\nbig,training,0,100,8\n"
                 "ok,training,0,100,1\n")
    out = gsched("simulate", str(t), "--cluster", str(cluster), "--policy", "binpack")
    assert out.returncode == 0, out.stderr
    assert "can never fit" in out.stderr and "big" in out.stderr


def run_main(capsys, *args: str) -> tuple[str, str]:
    from gsched.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    assert e.value.code == 0, err
    return out, err


def test_header_says_how_actual_load_departs_from_the_profiles(files, capsys):
    trace, cluster = files
    out, _ = run_main(capsys, "simulate", str(trace), "--cluster", str(cluster), "--policy",
                      "tidal", "--noise", "0.2", "--shift-slots", "4", "--surge", "0.5",
                      "--surge-start-slot", "1", "--surge-slots", "2")
    assert out.splitlines()[1] == ("actual load departs from the profiles: noise 0.2, peaks "
                                   "shifted +4 slots, surge +50% over slots 1-2")
    out, _ = run_main(capsys, "simulate", str(trace), "--cluster", str(cluster), "--policy",
                      "tidal")
    assert "actual load" not in out


def test_one_seed_has_no_spread_row_and_counts_print_as_integers(files, capsys, tmp_path):
    trace, cluster = files
    out, _ = run_main(capsys, "simulate", str(trace), "--cluster", str(cluster), "--mode",
                      "inflation", "--seeds", "1", "--policy", "binpack,fgd")
    assert "std over seeds" not in out
    failed = next(ln for ln in out.splitlines() if "Failed pods" in ln)
    assert "." not in failed.split("(mean)")[1]
    out, _ = run_main(capsys, "simulate", str(trace), "--cluster", str(cluster), "--mode",
                      "inflation", "--seeds", "2", "--policy", "binpack")
    assert "std over seeds" in out


def test_inflation_plot_of_a_small_cluster_has_curves_and_no_warning(files, capsys, tmp_path):
    import warnings

    from gsched.scheduler.policies.registry import make_policy
    from gsched.simulator.inflation import inflate
    from gsched.traces.cluster import load_cluster
    from gsched.traces.load import load_trace

    trace, cluster = files
    res = inflate(load_trace(trace), load_cluster(cluster), lambda: make_policy("binpack"),
                  seeds=1)
    assert len(res.curve) >= 2  # a 4-GPU cluster: every 256th pod gave no point at all
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_main(capsys, "simulate", str(trace), "--cluster", str(cluster), "--mode",
                 "inflation", "--seeds", "1", "--plot", str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_placements_lists_every_start_and_stop_in_order(files, tmp_path):
    trace, cluster = files
    out = tmp_path / "p.csv"
    r = gsched("simulate", str(trace), "--cluster", str(cluster), "--policy", "binpack,peak",
               "--placements", str(out), "-q")
    assert r.returncode == 0, r.stderr
    import csv

    rows = list(csv.DictReader(out.open()))
    for pol in ("binpack", "peak"):
        mine = [r for r in rows if r["policy"] == pol]
        starts = {r["job"]: r for r in mine if r["event"] == "start"}
        assert set(starts) == {"svc-a", "svc-b", "t1", "t2", "t3"}
        assert len(starts["t2"]["gpus"].split(";")) == 2
        assert {r["job"] for r in mine if r["event"] == "stop"} >= {"t1", "t3"}
        times = [float(r["time"]) for r in mine]
        assert times == sorted(times)
        stop_t1 = next(r for r in mine if r["event"] == "stop" and r["job"] == "t1")
        assert float(stop_t1["time"]) >= 60 + 3600 - 1e-6
        assert stop_t1["node"] == starts["t1"]["node"]


def test_placements_need_replay_mode(files, tmp_path):
    trace, cluster = files
    r = gsched("simulate", str(trace), "--cluster", str(cluster), "--mode", "inflation",
               "--placements", str(tmp_path / "p.csv"))
    assert r.returncode == 2 and "--placements" in r.stderr
    assert not (tmp_path / "p.csv").exists()
