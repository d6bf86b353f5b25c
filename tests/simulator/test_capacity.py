"""Capacity planning: the size found meets the targets, and one node fewer does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gsched.errors import InputError
from gsched.models import Job, Trace
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import POLICIES, make_policy
from gsched.simulator.capacity import (
    MONTH_HOURS,
    NodeShape,
    Probe,
    Targets,
    parse_node_type,
    plan_capacity,
    smallest_size,
    trace_node_shape,
)
from gsched.simulator.engine import simulate
from gsched.traces.load import load_trace

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tidal-mix.csv"


def tj(jid: str, t: float, dur: float, n: int = 1) -> Job:
    return Job(id=jid, kind="training", submit_time=t, duration=dur, num_gpu=n,
               preemptible=True)


def four_jobs() -> Trace:
    """Four 1-GPU hour-long jobs at once: on k one-GPU nodes, 4 - k of them wait 1 h."""
    return Trace(jobs=[tj(f"t{i}", 0, 3600) for i in range(4)], source="four")


def test_hand_checked_answer_on_one_gpu_nodes():
    # Queue delays with 3 nodes: [0, 0, 0, 3600] -> p95 3060 s > 30 min; 4 nodes: all 0.
    plan = plan_capacity(four_jobs(), ["binpack"], Targets(queue_p95_s=1800),
                         NodeShape(1, "A100"), prices={"A100": 2.0})
    p = plan.plans["binpack"]
    assert (p.nodes, p.gpus) == (4, 4)
    assert p.monthly_cost == pytest.approx(4 * 2.0 * MONTH_HOURS)
    assert p.search.probes[3].misses == ["training queue p95 3060 s > 1800 s"]
    # A looser target: two nodes are enough (delays 0, 0, 1 h, 1 h), one is not (p95 2.85 h).
    loose = plan_capacity(four_jobs(), ["binpack"], Targets(queue_p95_s=3600),
                          NodeShape(1, "A100")).plans["binpack"]
    assert loose.nodes == 2
    assert loose.search.probes[1].misses == ["training queue p95 10260 s > 3600 s"]


@pytest.mark.parametrize("policy", list(POLICIES))
def test_size_found_meets_targets_and_one_fewer_does_not(policy):
    """Independent re-simulation at the answer and one node below it, every policy."""
    trace = load_trace(EXAMPLE)
    trace = trace.model_copy(update={"jobs": trace.jobs[:120]})
    targets = Targets(slo_risk=0.0, queue_p95_s=3600)
    shape = trace_node_shape(trace)
    p = plan_capacity(trace, [policy], targets, shape).plans[policy]
    assert p.nodes is not None and p.nodes > 1
    cfg = PolicyConfig(workload=trace.jobs)
    at = simulate(trace, shape.cluster(p.nodes), make_policy(policy, cfg)).figures
    below = simulate(trace, shape.cluster(p.nodes - 1), make_policy(policy, cfg)).figures
    assert targets.misses(at) == []
    assert targets.misses(below) != []
    assert at["unfinished_jobs"] == 0 and at["unschedulable_jobs"] == 0
    assert at["slo_risk_slot_minutes"] <= 0
    assert (at["training_queue_delay_p95_s"] or 0) <= 3600
    assert p.figures["training_queue_delay_p95_s"] == at["training_queue_delay_p95_s"]


def test_search_brackets_then_bisects_and_checks_the_boundary():
    calls: list[int] = []

    def probe(n: int) -> Probe:
        calls.append(n)
        return Probe(n, [] if n >= 37 else ["short"], {})

    found = smallest_size(probe, start=5, limit=1000)
    assert found.nodes == 37
    assert found.probes[37].met and not found.probes[36].met
    assert calls[:4] == [5, 10, 20, 40]  # doubling until it passes
    assert len(calls) == len(set(calls))  # no size simulated twice
    # From above: halving until it fails.
    assert smallest_size(probe, start=300, limit=1000).nodes == 37
    # A size of one node (nothing below to check) and an unreachable target.
    assert smallest_size(lambda n: Probe(n, [], {}), 8, 100).nodes == 1
    never = smallest_size(lambda n: Probe(n, ["short"], {}), 8, 100)
    assert never.nodes is None and max(never.probes) == 100


def test_non_monotone_answer_still_has_a_failing_size_below():
    # Meets at 6 and from 9 up, not at 7-8: whatever the search lands on, one fewer fails.
    ok = {6} | set(range(9, 100))
    found = smallest_size(lambda n: Probe(n, [] if n in ok else ["x"], {}), 4, 99)
    assert found.nodes in ok and found.nodes - 1 not in ok
    assert found.probes[found.nodes - 1].misses == ["x"]


def test_node_type_and_trace_shape():
    assert parse_node_type("8xH100") == NodeShape(8, "H100")
    assert parse_node_type(" 4 X L4 ") == NodeShape(4, "L4")
    for bad in ("H100", "0xA100", "8x", "eight x A100"):
        with pytest.raises(InputError, match="--node-type"):
            parse_node_type(bad)
    jobs = [tj("a", 0, 60, n=16), Job(id="b", kind="training", submit_time=0, duration=60,
                                      gpu_models=("H100",))]
    assert trace_node_shape(Trace(jobs=jobs)) == NodeShape(16, "H100")


def test_job_that_never_fits_the_node_type_is_a_clear_error():
    with pytest.raises(InputError, match="1 job\\(s\\) can never fit a 4xA100 node: big"):
        plan_capacity(Trace(jobs=[tj("big", 0, 60, n=8)]), ["binpack"], Targets(),
                      NodeShape(4, "A100"))


def gsched(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gsched", *args], capture_output=True,
                          text=True, timeout=300)


def test_cli_writes_the_json_contract_and_plot(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("id,kind,submit_time,duration,num_gpu,gpu_share,profile\n"
                     "svc,inference,0,,1,0.5,0.2;0.9\n"
                     + "".join(f"t{i},training,0,3600,1,1,\n" for i in range(4)))
    out = gsched("capacity", str(trace), "--policy", "binpack,tidal", "--queue-p95", "30m",
                 "--node-type", "2xA100", "--price", "3", "--json", str(tmp_path / "c.json"),
                 "--plot", str(tmp_path / "c.png"))
    assert out.returncode == 0, out.stderr
    assert "saving vs k8s-spread" in out.stdout
    data = json.loads((tmp_path / "c.json").read_text())
    assert set(data) == {"trace", "targets", "policies"}
    assert data["trace"] == str(trace)
    assert data["targets"]["training_queue_delay_p95_s"] == 1800
    assert list(data["policies"]) == ["binpack", "tidal", "k8s-spread", "peak"]
    for p in data["policies"].values():
        assert set(p) == {"nodes", "gpus", "monthly_cost", "figures"}
        assert p["gpus"] == 2 * p["nodes"]
        assert p["monthly_cost"] == pytest.approx(p["gpus"] * 3 * MONTH_HOURS)
        assert p["figures"]["unfinished_jobs"] == 0
    # 4 whole-GPU jobs + a half-GPU service on 2-GPU nodes, none may wait: 3 nodes.
    assert data["policies"]["binpack"]["nodes"] == 3
    assert (tmp_path / "c.png").stat().st_size > 10_000


@pytest.mark.parametrize("args, field", [
    (["--queue-p95", "two hours"], "--queue-p95"),
    (["--node-type", "A100"], "--node-type"),
    (["--policy", "nope"], "--policy"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, field):
    trace = tmp_path / "t.csv"
    trace.write_text("id,kind,submit_time,duration,num_gpu\nt,training,0,60,1\n")
    out = gsched("capacity", str(trace), *args, "--json", str(tmp_path / "c.json"))
    assert out.returncode == 2
    assert field in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "c.json").exists()
