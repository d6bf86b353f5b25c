"""Every reader loads its real public trace from ../shared/traces and gets the facts right."""

from __future__ import annotations

import numpy as np
import pytest

from gsched.errors import InputError
from gsched.traces.cluster import load_cluster
from gsched.traces.gavel import read_gavel
from gsched.traces.genai import (
    duty_cycle_profiles,
    load_duty_cycle_samples,
    lora_request_profile,
)
from gsched.traces.load import detect_format, load_trace
from gsched.traces.openb import read_openb_pods
from gsched.traces.servegen import read_servegen, servegen_aggregate_profile, servegen_profile


@pytest.fixture(scope="module")
def openb_default(traces_dir):
    return load_trace(traces_dir / "alibaba-openb" / "openb_pod_list_default.csv")


def test_openb_default_pods_map_qos_shares_and_lifetimes(openb_default, traces_dir):
    tr = openb_default
    assert len(tr.jobs) == 8152
    # BE pods are training, LS/Guaranteed/Burstable inference (counted from the file).
    assert tr.counts() == {"training": 3398, "inference": 4754}
    by_id = {j.id: j for j in tr.jobs}
    first = by_id["openb-pod-0001"]  # 6000,12288,1,460,,LS,Running,427061,12902960
    assert first.kind == "inference" and first.priority == 100 and not first.preemptible
    assert first.gpu_share == pytest.approx(0.46) and first.num_gpu == 1
    assert first.submit_time == 427061 and first.duration == 12902960 - 427061
    assert first.cpu_milli == 6000 and first.memory_mib == 12288
    assert sum(1 for j in tr.jobs if j.num_gpu == 0) == 1088
    assert sum(1 for j in tr.jobs if j.num_gpu == 8) == 44
    assert all(j.preemptible for j in tr.jobs if j.kind == "training")
    assert sum(1 for j in tr.jobs if j.duration is None) == 1  # one non-positive lifetime
    assert tr.jobs == sorted(tr.jobs, key=lambda j: (j.submit_time, j.id))


def test_openb_pod_phase_filter_keeps_only_named_phases(traces_dir):
    tr = read_openb_pods(traces_dir / "alibaba-openb" / "openb_pod_list_default.csv",
                         phases=["Pending"])
    assert len(tr.jobs) == 441 + 2 + 454


def test_openb_gpu_spec_and_bad_qos_on_a_small_file(tmp_path):
    p = tmp_path / "pods.csv"
    head = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,"
    p.write_text(head + "deletion_time,scheduled_time\n"
                 "p0,1000,2048,2,1000,V100M16|V100M32,BE,Running,10,70,10\n")
    (job,) = load_trace(p).jobs
    assert job.gpu_models == ("V100M16", "V100M32") and job.num_gpu == 2
    assert job.kind == "training" and job.preemptible and job.duration == 60
    p.write_text(head + "deletion_time,scheduled_time\np0,1000,2048,1,500,,XX,Running,0,9,0\n")
    with pytest.raises(InputError) as e:
        load_trace(p)
    assert (e.value.line, e.value.field) == (2, "qos")


def test_openb_multigpu_list_without_times_arrives_at_zero_and_never_ends(traces_dir):
    tr = load_trace(traces_dir / "alibaba-openb" / "openb_pod_list_multigpu50.csv")
    assert len(tr.jobs) == 9061
    assert all(j.submit_time == 0 and j.duration is None for j in tr.jobs)
    assert any("inflation" in w for w in tr.warnings)


def test_openb_gpu_node_list_has_1213_nodes_and_6212_gpus(traces_dir):
    c = load_cluster(traces_dir / "alibaba-openb" / "openb_node_list_gpu_node.csv")
    assert (len(c.nodes), c.total_gpus) == (1213, 6212)


def test_gavel_trace_is_2000_training_jobs_with_big_jobs_warned(traces_dir):
    tr = read_gavel(traces_dir / "gavel-philly" / "ee9e8c.trace")
    assert len(tr.jobs) == 2000 and tr.counts()["training"] == 2000
    gpus = np.bincount([j.num_gpu for j in tr.jobs])
    assert (gpus[1], gpus[2], gpus[4], gpus[8], gpus[16], gpus[32]) == (975, 47, 321, 543,
                                                                       106, 5)
    assert any("112 Gavel job(s)" in w for w in tr.warnings)
    assert tr.jobs[-1].submit_time == pytest.approx(4508448)
    # The per-type median assumption: the median job of every type runs median_hours.
    durs = np.array([j.duration for j in tr.jobs])
    assert np.median(durs) == pytest.approx(3600, rel=0.05)
    assert all(j.preemptible and j.priority == 0 for j in tr.jobs)


def test_gavel_max_gpus_clamps_and_says_so(traces_dir):
    tr = read_gavel(traces_dir / "gavel-philly" / "ee9e8c.trace", max_gpus=8)
    assert max(j.num_gpu for j in tr.jobs) == 8
    assert any("112 Gavel job(s) asked for more than 8" in w for w in tr.warnings)


def test_servegen_profile_has_a_day_night_swing(traces_dir):
    files = sorted((traces_dir / "servegen").glob("*-trace.csv"))
    assert len(files) == 8
    t, rate = read_servegen(files[0])
    assert len(t) == 2016 and t[1] - t[0] == 600  # 14 days of 600 s windows
    prof = servegen_profile(files[0], slots=96)
    assert prof.shape == (96,) and prof.max() == pytest.approx(0.9)
    hourly = prof.reshape(24, 4).mean(axis=1)
    assert hourly.argmax() in range(9, 18) and hourly.argmin() in range(0, 6)  # daytime peak
    assert hourly.max() / hourly.min() > 4
    agg = servegen_aggregate_profile(files, slots=96)
    assert agg.max() == pytest.approx(0.9) and agg.min() < 0.3


def test_genai_duty_cycle_has_143_pods_over_a_day(traces_dir):
    path = traces_dir / "alibaba-genai" / "pod_gpu_duty_cycle_anon.tar.gz"
    samples = load_duty_cycle_samples(path)
    assert len(samples) == 143
    ts, vals = next(iter(samples.values()))
    assert isinstance(ts, np.ndarray) and ts.shape == vals.shape and np.all(np.diff(ts) >= 0)
    span = max(t.max() for t, _ in samples.values()) - min(t.min() for t, _ in samples.values())
    assert span / 3600 == pytest.approx(22.8, abs=0.1)
    assert all(0 <= v.min() and v.max() <= 1 for _, v in samples.values())
    profs = duty_cycle_profiles(path, slots=96)
    assert len(profs) == 143 and all(p.shape == (96,) for p in profs.values())
    fleet = np.mean(list(profs.values()), axis=0).reshape(24, 4).mean(axis=1)
    assert fleet.max() > 3 * fleet.min()  # the fleet is busier by day than by night


def test_genai_lora_requests_give_a_daily_cycle(traces_dir):
    prof = lora_request_profile(traces_dir / "alibaba-genai" / "lora_request_trace.tar.gz")
    assert prof.shape == (96,) and prof.max() == pytest.approx(0.9)
    assert prof.min() < 0.05  # the quiet late-morning hours


def test_load_trace_detects_each_format(traces_dir, tmp_path):
    assert detect_format(traces_dir / "gavel-philly" / "ee9e8c.trace") == "gavel"
    assert detect_format(traces_dir / "alibaba-openb" / "openb_pod_list_default.csv") == "openb"
    native = tmp_path / "t.csv"
    native.write_text("id,kind,submit_time,duration\na,training,0,10\n")
    assert detect_format(native) == "native" and len(load_trace(native).jobs) == 1


def test_load_trace_rejects_an_unknown_format_naming_the_file(traces_dir, tmp_path):
    with pytest.raises(InputError) as e:
        load_trace(traces_dir / "servegen" / "language-m-large-chunk-0-trace.csv")
    assert "unknown trace format" in str(e.value) and "chunk-0" in str(e.value)
    with pytest.raises(InputError, match="not found"):
        load_trace(tmp_path / "missing.csv")
