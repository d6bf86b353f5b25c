"""The NVML source against a fake driver at the pynvml boundary, error codes included."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pynvml
import pytest
from fake_nvml import MIB, FakeGpu, FakeNvml, FakeProcess

from gsched.agents.nvml import NvmlSource
from gsched.agents.pods import PodAttributor, PodDirectory, PodInfo
from gsched.errors import UnavailableError

CID_A = "a" * 64
CID_B = "b" * 64
UID_A = "5f3c2d1e-8a7b-4c6d-9e0f-123456789abc"
UID_B = "0e9d8c7b-6a5f-4e3d-2c1b-abcdef012345"


def proc_tree(root: Path, cgroups: dict[int, str]) -> Path:
    for pid, text in cgroups.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cgroup").write_text(text)
    return root


def directory() -> PodDirectory:
    pods = [
        PodInfo(namespace="serving", name="llm-7d9f8b6c5-x2x9z", uid=UID_A,
                containers={CID_A: "server"}, labels={"pod-template-hash": "7d9f8b6c5"},
                owner_kind="ReplicaSet", owner_name="llm-7d9f8b6c5"),
        PodInfo(namespace="research", name="train-42", uid=UID_B, containers={CID_B: "worker"},
                owner_kind="Job", owner_name="train-42"),
    ]
    return PodDirectory(lambda: pods)


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[FakeNvml, NvmlSource]:
    fake = FakeNvml([
        FakeGpu(uuid="GPU-aaaa", util=70, used_mib=30000, processes=[
            FakeProcess(pid=101, used_bytes=20000 * MIB, sm_util=40),
            FakeProcess(pid=102, used_bytes=8000 * MIB, sm_util=25),
            FakeProcess(pid=201, used_bytes=2000 * MIB, sm_util=5)]),
        FakeGpu(uuid="GPU-bbbb", util=0, used_mib=0),
    ]).install(monkeypatch)
    proc = proc_tree(tmp_path / "proc", {
        # containerd, systemd driver, cgroup v2
        101: f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
             f"{UID_A.replace('-', '_')}.slice/cri-containerd-{CID_A}.scope\n",
        102: f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
             f"{UID_A.replace('-', '_')}.slice/cri-containerd-{CID_A}.scope\n",
        # docker, cgroupfs driver, cgroup v1
        201: f"12:memory:/kubepods/besteffort/pod{UID_B}/{CID_B}\n"
             f"1:name=systemd:/kubepods/besteffort/pod{UID_B}/{CID_B}\n",
    })
    src = NvmlSource("gpu-node-1", attributor=PodAttributor(directory(), proc))
    src.open()
    return fake, src


def test_sample_reads_every_gpu_field_in_dcgm_units(node: tuple[FakeNvml, NvmlSource]) -> None:
    _, src = node
    s = src.sample()
    g0 = s.gpus[0]
    assert (g0.index, g0.uuid, g0.name) == (0, "GPU-aaaa", "NVIDIA A100-SXM4-80GB")
    assert g0.util_pct == 70 and g0.mem_used_mib == 30000 and g0.mem_total_mib == 81920
    assert g0.mem_free_mib == 81920 - 30000
    assert g0.sm_clock_mhz == 1410 and g0.power_w == 250.0 and g0.temp_c == 60
    assert not g0.lost and s.errors == ()


def test_processes_are_summed_per_pod_through_their_cgroups(
        node: tuple[FakeNvml, NvmlSource]) -> None:
    _, src = node
    pods = {p.pod: p for p in src.sample().pods}
    llm = pods["llm-7d9f8b6c5-x2x9z"]
    assert llm.util_pct == 65 and llm.mem_used_mib == 28000 and sorted(llm.pids) == [101, 102]
    assert (llm.namespace, llm.container, llm.workload) == ("serving", "server", "serving/llm")
    train = pods["train-42"]
    assert train.util_pct == 5 and train.workload == "research/train-42"
    assert train.gpu_uuid == "GPU-aaaa"


def test_a_lost_gpu_is_flagged_and_the_others_still_sampled(
        node: tuple[FakeNvml, NvmlSource]) -> None:
    fake, src = node
    src.sample()
    fake.gpus[0].lost = True
    s = src.sample()
    assert s.gpus[0].lost and s.gpus[0].uuid == "GPU-aaaa" and s.gpus[0].util_pct is None
    assert not s.gpus[1].lost and s.gpus[1].util_pct == 0
    assert s.pods == () and any("GPU is lost" in e for e in s.errors)
    fake.gpus[0].lost = False  # back after a reset: a fresh handle, sampled again
    s = src.sample()
    assert not s.gpus[0].lost and s.gpus[0].util_pct == 70


def test_a_gpu_lost_before_its_first_handle_is_reported_lost(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml([FakeGpu(uuid="GPU-x", lost=True), FakeGpu(uuid="GPU-y")]).install(monkeypatch)
    src = NvmlSource("n", attributor=None)
    src.open()
    s = src.sample()
    assert s.gpus[0].lost and not s.gpus[1].lost and s.gpus[1].uuid == "GPU-y"


def test_not_supported_fields_are_none_and_not_asked_again(
        node: tuple[FakeNvml, NvmlSource]) -> None:
    fake, src = node
    fake.gpus[1].unsupported |= {"power", "temperature"}
    for _ in range(3):
        s = src.sample()
    assert s.gpus[1].power_w is None and s.gpus[1].temp_c is None
    assert s.gpus[1].util_pct == 0 and s.errors == ()
    assert fake.calls["power"] == 3 + 1  # GPU 0 three times, GPU 1 once


def test_a_process_exiting_mid_sample_is_skipped(node: tuple[FakeNvml, NvmlSource],
                                                  tmp_path: Path) -> None:
    fake, src = node
    # NVML still lists PID 102, but it has exited: its /proc entry is gone.
    (tmp_path / "proc" / "102" / "cgroup").unlink()
    (tmp_path / "proc" / "102").rmdir()
    pods = {p.pod: p for p in src.sample().pods}
    assert pods["llm-7d9f8b6c5-x2x9z"].pids == (101,)
    assert pods["llm-7d9f8b6c5-x2x9z"].util_pct == 40


def test_no_process_utilisation_samples_means_idle_not_an_error(
        node: tuple[FakeNvml, NvmlSource]) -> None:
    fake, src = node
    for p in fake.gpus[0].processes:
        p.sm_util = None  # the driver answers NVML_ERROR_NOT_FOUND
    s = src.sample()
    assert s.errors == ()
    assert {p.pod: p.util_pct for p in s.pods} == {"llm-7d9f8b6c5-x2x9z": 0, "train-42": 0}


def test_unexpected_nvml_errors_are_named_not_raised(node: tuple[FakeNvml, NvmlSource],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _, src = node

    def broken(h: int) -> None:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetPowerUsage", broken)
    s = src.sample()
    assert s.gpus[0].power_w is None and s.gpus[0].util_pct == 70
    assert "gpu 0: power: Unknown Error" in s.errors


def test_no_library_is_a_clear_unavailable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeNvml([], library_present=False).install(monkeypatch)
    with pytest.raises(UnavailableError, match="NVML is not available .*replay:PATH"):
        NvmlSource("n").open()


def test_real_pynvml_without_a_driver_is_unavailable() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(UnavailableError, match="NVML is not available"):
        NvmlSource("n").open()


def test_agent_command_without_nvml_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    try:
        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        pytest.skip("this machine has an NVIDIA driver")
    except pynvml.NVMLError:
        pass
    r = subprocess.run([sys.executable, "-c", "from gsched.cli import main; main()", "agent",
                        "--port", "-1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "NVML is not available" in lines[0]
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_process_utilisation_raising_success_means_no_samples(
        node: tuple[FakeNvml, NvmlSource], monkeypatch: pytest.MonkeyPatch) -> None:
    _, src = node

    def no_samples(h: int, ts: int) -> list:
        raise pynvml.NVMLError(pynvml.NVML_SUCCESS)  # what pynvml does on a count of 0

    monkeypatch.setattr(pynvml, "nvmlDeviceGetProcessUtilization", no_samples)
    s = src.sample()
    assert s.errors == () and {p.util_pct for p in s.pods} == {0.0}
