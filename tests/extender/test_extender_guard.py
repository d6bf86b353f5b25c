"""The live load guard: agent reports over the safe line evict training and close GPUs."""

from __future__ import annotations

import numpy as np
import pytest
from fake_kube_api import FakeKubeAPI, node, pod
from prometheus_client import generate_latest

from gsched.agents.model import Report, Series
from gsched.scheduler.extender.guard import LoadGuard
from gsched.scheduler.extender.history import UsageHistory
from gsched.scheduler.extender.ingest import IngestService
from gsched.scheduler.extender.kube import pod_evictor

FLAT = ";".join(["0.5"] * 96)


def web(profile: str) -> dict:
    """The inference pod on GPU 0 of n1: half a GPU, `profile` its day."""
    return pod("web", "u-web", milli=500, node_name="n1", phase="Running",
               annotations={"gsched.io/kind": "inference", "gsched.io/profile": profile,
                            "gsched.io/gpus": "0"})


def start(*pods: dict):
    """A fake API server with n1 (2 GPUs) and `pods` running, and a tidal extender
    synced to it (all pods in its state)."""
    api = FakeKubeAPI().start()
    api.put_node(node("n1", gpus=2))
    for p in pods:
        api.put_pod(p)
    core, ext, sync = api.synced_extender()
    uids = {p["metadata"]["uid"] for p in pods}
    assert api.wait_for(lambda: uids <= set(ext.state.running))
    return api, core, ext, sync


@pytest.fixture
def cluster():
    api, core, ext, sync = start(
        web(FLAT),
        pod("train", "u-train", milli=500, node_name="n1", phase="Running",
            annotations={"gsched.io/kind": "training", "gsched.io/gpus": "0"}),
        pod("solo", "u-solo", milli=500, node_name="n1", phase="Running",
            annotations={"gsched.io/kind": "training", "gsched.io/gpus": "1"}))
    yield api, core, ext
    sync.stop()
    api.stop()


def report(util0: float, util1: float, rid: str = "r-00000001") -> Report:
    t = [1000.0 + k for k in range(10)]
    return Report(report_id=rid, node="n1", created_at=1010.0, gpus=[
        Series(gpu="GPU-0", index=0, t=t, util=[util0] * 10),
        Series(gpu="GPU-1", index=1, t=t, util=[util1] * 10)])


def test_over_the_line_evicts_training_beside_inference_and_closes_the_gpu(cluster):
    api, core, ext = cluster
    guard = LoadGuard(ext, pod_evictor(core))
    # GPU 1 holds training only: a busy training GPU is not an SLO risk, nothing to do.
    assert guard.on_report(report(0.99, 1.0)) == [("default", "train")]
    assert api.evictions == [("default", "train")]
    assert ext.state.blocked[0].tolist() == [True, False]
    m = ext.metrics
    assert m.guard_evictions._value.get() == 1 and m.guard_trips._value.get() == 1
    assert m.guard_blocked._value.get() == 1
    assert api.wait_for(lambda: "u-train" not in ext.state.running)
    # Under the safe line but over the recede line (0.85): the GPU stays closed.
    guard.on_report(report(0.9, 0.5, "r-00000002"))
    assert ext.state.blocked[0, 0]
    # Web alone, near its forecast 0.25: still closed until the forecast slot changes
    # (training re-admitted into the slot that just overloaded would overload it again).
    guard.on_report(report(0.3, 0.5, "r-00000003"))
    assert ext.state.blocked[0, 0]
    ext.state.now += ext.state.slot_seconds
    guard.on_report(report(0.3, 0.5, "r-00000004"))
    assert not ext.state.blocked.any() and m.guard_blocked._value.get() == 0


def test_without_the_hold_a_gpu_reopens_at_the_first_quiet_report(cluster):
    api, core, ext = cluster
    guard = LoadGuard(ext, pod_evictor(core), hold_to_slot_end=False)
    guard.on_report(report(0.99, 0.2))
    assert ext.state.blocked[0, 0]
    guard.on_report(report(0.3, 0.2, "r-00000002"))
    assert not ext.state.blocked.any()


def test_a_follower_closes_the_gpu_but_does_not_evict(cluster):
    api, core, ext = cluster
    guard = LoadGuard(ext, pod_evictor(core), is_leader=lambda: False)
    assert guard.on_report(report(0.99, 0.2)) == []
    assert api.evictions == [] and ext.state.blocked[0, 0]


def test_ingest_runs_the_guard_on_every_accepted_report(cluster, tmp_path):
    api, core, ext = cluster
    guard = LoadGuard(ext, pod_evictor(core))
    ingest = IngestService(UsageHistory(str(tmp_path / "h.db")), ext.metrics, None,
                           on_report=guard.on_report)
    code, body = ingest.handle(report(0.99, 0.2).model_dump_json().encode(), {})
    assert code == 200 and body["duplicate"] is False
    assert api.evictions == [("default", "train")]
    text = generate_latest(ext.metrics.registry).decode()
    assert "gsched_guard_evictions_total 1.0" in text


def test_recede_line_above_safe_line_is_refused(cluster):
    _, core, ext = cluster
    with pytest.raises(ValueError, match="recede_line"):
        LoadGuard(ext, pod_evictor(core), safe_line=0.8, recede_line=0.9)


def test_a_gpu_measured_well_over_its_forecast_is_closed_without_evictions(cluster):
    api, core, ext = cluster
    guard = LoadGuard(ext, pod_evictor(core))
    # GPU 0 is forecast at 0.75 (web: half a GPU at 0.5, train: half a GPU at 1.0).
    guard.on_report(report(0.8, 0.2))
    assert not ext.state.blocked.any()
    guard.on_report(report(0.99, 0.2, "r-00000002"))  # over the line: train leaves
    assert api.wait_for(lambda: "u-train" not in ext.state.running)
    ext.state.now += ext.state.slot_seconds  # the next slot: the hold has ended
    guard.on_report(report(0.35, 0.2, "r-00000003"))  # web alone, near its 0.25: reopened
    assert not ext.state.blocked.any()
    # 0.6 is under the recede line but 0.35 over web's forecast: closed, no eviction
    guard.on_report(report(0.6, 0.2, "r-00000004"))
    assert ext.state.blocked[0, 0] and api.evictions == [("default", "train")]


STEP = ";".join(["0.8"] * 8 + ["0.2"] * 88)  # busy until 02:00, then a valley


@pytest.fixture
def stepped():
    """One node, a service on GPU 0 whose forecast falls at 02:00, and a clock we move."""
    api, core, ext, sync = start(web(STEP))
    clock = {"t": 7 * 900 + 100.0}  # 01:46, slot 7: forecast 0.4 (half a GPU at 0.8)
    ext.clock = lambda: clock["t"]
    yield api, core, ext, clock
    sync.stop()
    api.stop()


def test_a_valley_is_closed_at_the_boundary_until_a_report_measures_it(stepped):
    api, core, ext, clock = stepped
    guard = LoadGuard(ext, pod_evictor(core))
    ext.state.now = clock["t"]
    guard.on_report(report(0.4, 0.0))  # as forecast: nothing to do
    assert not ext.state.blocked.any() and guard.step() == 0
    clock["t"] = 8 * 900 + 1.0  # 02:00: the forecast says 0.1, the agents last saw 0.4
    assert guard.step() == 1
    assert ext.state.blocked[0].tolist() == [True, False]
    assert guard.step() == 0  # once per slot
    m = ext.metrics
    assert m.guard_boundary_closures._value.get() == 1 and m.guard_blocked._value.get() == 1
    ext.state.now = clock["t"]
    guard.on_report(report(0.4, 0.0, "r-00000002"))  # the peak is late: stays closed
    assert ext.state.blocked[0, 0]
    guard.on_report(report(0.1, 0.0, "r-00000003"))  # the valley, measured: reopened
    assert not ext.state.blocked.any() and api.evictions == []


def test_a_measurement_already_in_the_new_slot_is_not_second_guessed(stepped):
    api, core, ext, clock = stepped
    guard = LoadGuard(ext, pod_evictor(core))
    clock["t"] = 8 * 900 + 1.0
    ext.state.now = clock["t"]
    guard.on_report(report(0.1, 0.0))
    assert guard.step() == 0 and not ext.state.blocked.any()
    off = LoadGuard(ext, pod_evictor(core), verify_valleys=False)
    clock["t"] = 7 * 900 + 100.0
    ext.state.now = clock["t"]
    off.on_report(report(0.4, 0.0, "r-00000002"))
    clock["t"] = 8 * 900 + 1.0
    assert off.step() == 0 and not ext.state.blocked.any()


def usage_report(slot: int, util: float, rid: str) -> Report:
    """The web pod's own usage of GPU 0 over one slot (ten samples)."""
    t = [slot * 900.0 + 30.0 + 60.0 * k for k in range(10)]
    return Report(report_id=rid, node="n1", created_at=t[-1], workloads=[
        Series(gpu="GPU-0", index=0, workload="web", namespace="default", pod="web", t=t,
               util=[util] * 10)])


def test_a_pod_whose_day_runs_late_is_booked_late(stepped):
    """web's forecast is 0.4 of the GPU until 02:00, 0.1 after; its pod measured the
    day an hour late (0.1 until 01:00, then 0.4). At 02:00 its booking moves four slots
    later: busy until 03:00, as the simulator's re-phasing would book it."""
    api, core, ext, clock = stepped
    guard = LoadGuard(ext, pod_evictor(core))
    base = ext.state.running["u-web"].load.copy()
    for k in range(8):
        clock["t"] = ext.state.now = k * 900 + 600.0
        guard.on_report(usage_report(k, 0.1 if k < 4 else 0.4, f"r-{k:08d}"))
    clock["t"] = 8 * 900 + 1.0
    guard.step()
    load = ext.state.running["u-web"].load
    assert np.allclose(load, np.roll(base, 4))
    assert ext.state.load[0, 0, 10] == pytest.approx(0.4)  # 02:30 booked busy, not 0.1
    assert ext.metrics.rephased_bookings._value.get() == 1


def test_a_pod_on_time_keeps_its_booking(stepped):
    api, core, ext, clock = stepped
    guard = LoadGuard(ext, pod_evictor(core))
    base = ext.state.running["u-web"].load.copy()
    for k in range(8):
        clock["t"] = ext.state.now = k * 900 + 600.0
        guard.on_report(usage_report(k, 0.4, f"r-{k:08d}"))
    clock["t"] = 8 * 900 + 1.0
    guard.step()
    assert np.array_equal(ext.state.running["u-web"].load, base)
    assert ext.metrics.rephased_bookings._value.get() == 0


def test_a_new_pod_is_booked_at_the_lag_the_cluster_runs_at(stepped):
    """Once measured services agree the day runs an hour late, a pod not yet placed is
    filtered and bound on its profile shifted by four slots; a placed pod keeps its own."""
    api, core, ext, clock = stepped
    guard = LoadGuard(ext, pod_evictor(core))
    new = web(STEP)
    new["metadata"].update(name="web2", uid="u-web2")
    new["spec"].pop("nodeName", None)
    prof = ext.translate(new).job.profile.copy()
    guard.rephaser.rephasing.cluster_lag = 4  # as `settle` leaves it after such a slot
    lagged = ext.translate(new).job
    assert np.allclose(lagged.profile, np.roll(prof, 4))
    assert guard.rephaser.rephasing.arrived["u-web2"] == 4
    assert np.allclose(ext.translate(api.pods[("default", "web")]).job.profile, prof)
