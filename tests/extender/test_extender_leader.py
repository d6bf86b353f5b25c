"""Leader election: two replicas and one Lease on a local API server, clocks in hand."""

from __future__ import annotations

import re

import pytest
from fake_kube_api import FakeKubeAPI
from kubernetes import client

from gsched.scheduler.extender.leader import LeaderElector, micro_time, parse_micro_time


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def api():
    a = FakeKubeAPI().start()
    yield a
    a.stop()


def elector(api: FakeKubeAPI, name: str, wall: Clock, mono: Clock) -> LeaderElector:
    cfg = client.Configuration()
    cfg.host = api.url
    coord = client.CoordinationV1Api(client.ApiClient(cfg))
    return LeaderElector(coord, "gsched-system", "gsched", name, lease_duration_s=15,
                         renew_deadline_s=10, retry_period_s=2, clock=wall, monotonic=mono)


def lease(api: FakeKubeAPI) -> dict:
    return api.leases[("gsched-system", "gsched")]["spec"]


def at(t: float):
    return parse_micro_time(micro_time(t))


def test_micro_time_is_rfc3339_with_six_fraction_digits_in_utc():
    assert micro_time(0.25) == "1970-01-01T00:00:00.250000Z"
    assert micro_time(0) == "1970-01-01T00:00:00.000001Z"


def test_lease_timestamps_reach_the_api_server_with_six_fraction_digits(api):
    a = elector(api, "replica-a", Clock(1_800_000_000.0), Clock(0.0))
    assert a.try_acquire_or_renew()
    # what the client actually put on the wire (Go's MicroTime needs .000000)
    for key in ("acquireTime", "renewTime"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|\+00:00)", lease(api)[key])


def test_one_leader_then_takeover_after_expiry_then_release(api):
    wall, mono_a, mono_b = Clock(), Clock(100.0), Clock(5_000.0)
    a, b = elector(api, "replica-a", wall, mono_a), elector(api, "replica-b", wall, mono_b)

    assert a.try_acquire_or_renew() is True
    spec = lease(api)
    assert spec["holderIdentity"] == "replica-a"
    assert spec["leaseDurationSeconds"] == 15
    assert spec["leaseTransitions"] == 0
    assert parse_micro_time(spec["acquireTime"]) == parse_micro_time(spec["renewTime"]) \
        == at(wall.t)

    assert b.try_acquire_or_renew() is False
    assert (b.is_leader(), b.leader_name()) == (False, "replica-a")

    # a renews: renewTime moves, acquireTime stays
    wall.t += 2
    mono_a.t += 2
    assert a.try_acquire_or_renew() is True
    assert parse_micro_time(lease(api)["renewTime"]) == at(wall.t)
    assert parse_micro_time(lease(api)["acquireTime"]) == at(wall.t - 2)

    # b saw the record change; 14 s later by b's own clock it is still not expired
    mono_b.t += 1
    assert b.try_acquire_or_renew() is False
    mono_b.t += 14
    assert b.try_acquire_or_renew() is False
    # a stops renewing; a full lease duration after b last saw a change, b takes over
    mono_b.t += 1.5
    wall.t += 20
    assert b.try_acquire_or_renew() is True
    spec = lease(api)
    assert spec["holderIdentity"] == "replica-b"
    assert spec["leaseTransitions"] == 1
    assert parse_micro_time(spec["acquireTime"]) == at(wall.t)

    # a, past its renew deadline, has already stopped acting as leader
    mono_a.t += 11
    assert a.is_leader() is False
    assert a.try_acquire_or_renew() is False
    assert a.leader_name() == "replica-b"

    # b steps down cleanly: the lease is free, and a takes it without waiting
    b.release()
    assert lease(api)["holderIdentity"] == ""
    assert b.is_leader() is False
    mono_a.t += 1
    assert a.try_acquire_or_renew() is True
    assert lease(api)["leaseTransitions"] == 2


def test_racing_writers_cannot_both_win(api):
    wall = Clock()
    a = elector(api, "replica-a", wall, Clock(0.0))
    b = elector(api, "replica-b", wall, Clock(0.0))
    assert a.try_acquire_or_renew()
    a.release()
    # both read the free lease; b writes first, a's stale write is refused (409)
    real_read = a._read
    stale = real_read()
    assert b.try_acquire_or_renew() is True
    a._read = lambda: stale
    assert a.try_acquire_or_renew() is False
    assert lease(api)["holderIdentity"] == "replica-b"


def test_an_unreachable_api_server_ends_leadership_at_the_renew_deadline(api):
    wall, mono = Clock(), Clock(0.0)
    a = elector(api, "replica-a", wall, mono)
    assert a.try_acquire_or_renew()
    api.stop()
    mono.t += 5
    assert a.try_acquire_or_renew() is True  # still within the renew deadline
    mono.t += 6
    assert a.try_acquire_or_renew() is False
    assert a.is_leader() is False


def test_the_leader_labels_its_own_pod_for_the_service(api):
    from fake_kube_api import pod

    from gsched.scheduler.extender.kube import LEADER_LABEL, leader_labeller

    api.put_pod(pod("gsched-0", "u0", namespace="gsched-system", phase="Running"))
    cfg = client.Configuration()
    cfg.host = api.url
    label = leader_labeller(client.CoreV1Api(client.ApiClient(cfg)), "gsched-system",
                            "gsched-0")
    wall, mono = Clock(), Clock(0.0)
    a = elector(api, "gsched-0", wall, mono)
    a.on_change = label
    assert a.try_acquire_or_renew()
    meta = api.pods[("gsched-system", "gsched-0")]["metadata"]
    assert meta["labels"] == {LEADER_LABEL: "true"}
    a.release()
    assert LEADER_LABEL not in api.pods[("gsched-system", "gsched-0")]["metadata"]["labels"]
