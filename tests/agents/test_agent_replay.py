"""Replay sources and the dcgm-compatible exporter over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gsched.agents.exporter import DCGM_LABELS, AgentExporter
from gsched.agents.replay import ReplaySource, parse_source
from gsched.errors import InputError
from gsched.models import DAY_SECONDS
from gsched.traces.genai import load_duty_cycle_samples


@pytest.fixture(scope="module")
def genai(traces_dir: Path) -> Path:
    return traces_dir / "alibaba-genai" / "pod_gpu_duty_cycle_anon.tar.gz"


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_genai_replay_plays_each_pods_measured_duty_cycle(genai: Path) -> None:
    clock = Clock()
    src = ReplaySource(genai, "node-a", gpus=4, speed=57.0, offset=10, clock=clock)
    src.open()
    truth = load_duty_cycle_samples(genai)
    pods = sorted(truth)[10:14]
    assert src.pod_names == [f"genai-{p[:12]}" for p in pods]
    for step in (0, 1, 500, 1000):
        clock.t = 1_000.0 + step  # one wall second = one 57 s trace sample
        s = src.sample()
        for g, pid in enumerate(pods):
            t, v = truth[pid]
            expect = v[np.searchsorted(t, t[0] + step * 57.0, side="right") - 1]
            assert s.pods[g].util_pct == pytest.approx(expect * 100)
            assert s.gpus[g].util_pct == pytest.approx(expect * 100)
        assert s.timestamp == pytest.approx(min(t[0] for t, _ in truth.values()) + step * 57.0)


def test_genai_replay_reads_the_memory_trace_beside_it(genai: Path) -> None:
    src = ReplaySource(genai, "node-a", gpus=8, offset=0, clock=Clock())
    src.open()
    s = src.sample()
    mems = [p.mem_used_mib for p in s.pods]
    assert all(m is not None and m >= 0 for m in mems) and max(mems) > 1000
    assert all(g.mem_total_mib == 81920 and g.mem_used_mib <= 81920 for g in s.gpus)


def test_replay_wraps_around_the_day(genai: Path) -> None:
    clock = Clock(0.0)
    src = ReplaySource(genai, "n", gpus=2, speed=1.0, offset=3, clock=clock)
    src.open()
    first = [p.util_pct for p in src.sample().pods]
    clock.t = DAY_SECONDS
    again = src.sample()
    assert [p.util_pct for p in again.pods] == first
    assert again.timestamp == src._t0 + DAY_SECONDS  # time keeps going: no duplicate stamps


def test_shared_gpus_sum_their_pods_capped_at_100(genai: Path) -> None:
    src = ReplaySource(genai, "n", gpus=2, pods_per_gpu=3, offset=0, clock=Clock())
    src.open()
    s = src.sample()
    assert len(s.pods) == 6
    for g in s.gpus:
        on_it = [p.util_pct for p in s.pods if p.gpu_index == g.index]
        assert len(on_it) == 3 and g.util_pct == pytest.approx(min(sum(on_it), 100.0))


def test_native_trace_replays_profiles_by_time_of_day(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    profile = ";".join(["0.1"] * 48 + ["0.8"] * 48)
    trace.write_text("id,kind,submit_time,duration,num_gpu,gpu_share,utilization,profile\n"
                     f"svc,inference,0,,1,0.5,1,\"{profile}\"\n"
                     "cpu,training,0,10,0,1,1,\n")
    clock = Clock(3 * DAY_SECONDS + 6 * 3600)  # 06:00
    src = ReplaySource(trace, "n", gpus=1, clock=clock)
    src.open()
    assert src.pod_names == ["svc"]  # the CPU-only job has nothing to replay
    assert src.sample().pods[0].util_pct == pytest.approx(5.0)  # share 0.5 x 0.1
    clock.t += 12 * 3600  # 18:00
    assert src.sample().pods[0].util_pct == pytest.approx(40.0)


def test_parse_source_and_bad_inputs(tmp_path: Path) -> None:
    assert parse_source("nvml") == ("nvml", None)
    assert parse_source("replay:/x/y.tar.gz") == ("replay", Path("/x/y.tar.gz"))
    with pytest.raises(InputError, match="--source"):
        parse_source("dcgm")
    with pytest.raises(InputError, match="not found"):
        ReplaySource(tmp_path / "missing.tar.gz", "n").open()
    with pytest.raises(InputError, match="--speed"):
        ReplaySource(tmp_path / "x.csv", "n", speed=0)


def test_exporter_uses_dcgm_names_labels_and_units(genai: Path) -> None:
    src = ReplaySource(genai, "node-a", gpus=2, offset=0, clock=Clock())
    src.open()
    sample = src.sample()
    exp = AgentExporter("node-a")
    exp.observe(sample, 0.002, 1234.0)
    fams = {f.name: f for f in text_string_to_metric_families(
        generate_latest(exp.registry).decode())}
    util = fams["DCGM_FI_DEV_GPU_UTIL"].samples
    assert len(util) == 2
    for s in util:
        assert set(s.labels) == set(DCGM_LABELS)
        g = sample.gpus[int(s.labels["gpu"])]
        assert s.labels["UUID"] == g.uuid and s.labels["Hostname"] == "node-a"
        assert s.labels["device"] == f"nvidia{g.index}" and s.labels["namespace"] == "replay"
        assert s.value == pytest.approx(g.util_pct)
    free = {s.labels["gpu"]: s.value for s in fams["DCGM_FI_DEV_FB_FREE"].samples}
    assert free["0"] == pytest.approx(81920 - sample.gpus[0].mem_used_mib)
    # The replay has no power readings: the series is absent, not a made-up zero.
    assert fams["DCGM_FI_DEV_POWER_USAGE"].samples == []
    assert fams["gsched_agent_last_collection_timestamp_seconds"].samples[0].value == 1234.0


def test_a_shared_gpu_is_exported_once_per_pod_like_dcgm_exporter(genai: Path) -> None:
    src = ReplaySource(genai, "node-a", gpus=1, pods_per_gpu=2, offset=0, clock=Clock())
    src.open()
    sample = src.sample()
    exp = AgentExporter("node-a")
    exp.observe(sample, 0.001, 1.0)
    fams = {f.name: f for f in text_string_to_metric_families(
        generate_latest(exp.registry).decode())}
    util = fams["DCGM_FI_DEV_GPU_UTIL"].samples
    assert sorted(s.labels["pod"] for s in util) == sorted(p.pod for p in sample.pods)
    assert {s.value for s in util} == {sample.gpus[0].util_pct}
    per_pod = {s.labels["pod"]: s.value for s in
               fams["gsched_agent_pod_gpu_utilization_ratio"].samples}
    assert per_pod == {p.pod: pytest.approx(p.util_pct / 100) for p in sample.pods}
