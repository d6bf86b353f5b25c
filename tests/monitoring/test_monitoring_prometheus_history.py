"""Profiles and traces from the history a real Prometheus server holds.

The server holds two weeks of dcgm-exporter history backfilled with
`promtool tsdb create-blocks-from openmetrics`: twelve pods of the public GenAI
duty-cycle trace, its day (22.8 h of samples every 57 s) repeated for 14 days, as
`DCGM_FI_DEV_GPU_UTIL{namespace, pod, gpu, Hostname}`. Ten pods are Deployment pods
(`svc-NN-<hash>-<id>`, two per workload for the first pair), two are bare pods.
What `gsched profiles learn --prometheus` learns must equal what `learn_profiles`
learns from the same samples read from the trace file.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from monitoring_support import PROMETHEUS, free_port, wait_for

from gsched.models import DAY_SECONDS
from gsched.scheduler.extender import pods as podlib
from gsched.scheduler.extender.store import Store
from gsched.scheduler.packing.profiles import learn_profiles
from gsched.traces.genai import load_duty_cycle_samples
from gsched.traces.load import load_trace
from gsched.traces.prometheus import PrometheusReader, workload_of
from gsched.traces.servegen import daily_mean

DAYS = 14
GSCHED = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "gsched"


def _pods(samples: dict) -> list[tuple[str, str, str, int]]:
    """(trace pod id, k8s pod name, node, gpu) for the twelve busiest-named pods."""
    ids = sorted(i for i, (_, v) in samples.items() if v.max() >= 0.3)[:12]
    out = []
    for n, pid in enumerate(ids):
        h = hashlib.sha256(pid.encode()).hexdigest()
        if n < 2:  # two pods of one Deployment
            name = f"svc-00-7d9f8c6b5a-{h[:5]}"
        elif n < 10:
            name = f"svc-{n:02d}-{h[5:15]}-{h[15:20]}"
        else:
            name = f"finetune-{'ab'[n - 10]}x"
        out.append((pid, name, f"gpu-node-{n // 4}", n % 4))
    return out


def _tiled(t: np.ndarray) -> np.ndarray:
    return np.concatenate([t + d * DAY_SECONDS for d in range(DAYS)])


@pytest.fixture(scope="module")
def history(tmp_path_factory, traces_dir):
    work = tmp_path_factory.mktemp("prom-history")
    samples = load_duty_cycle_samples(traces_dir / "alibaba-genai" /
                                      "pod_gpu_duty_cycle_anon.tar.gz")
    pods = _pods(samples)
    lines = ["# TYPE DCGM_FI_DEV_GPU_UTIL gauge"]
    expected: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for pid, name, node, gpu in pods:
        t, v = samples[pid]
        t, v = _tiled(t), np.tile(v, DAYS)
        lab = (f'{{Hostname="{node}",container="main",gpu="{gpu}",namespace="genai",'
               f'pod="{name}"}}')
        lines += [f"DCGM_FI_DEV_GPU_UTIL{lab} {x * 100:.10g} {ts:.0f}"
                  for ts, x in zip(t, v, strict=True)]
        expected.setdefault(workload_of("genai", name), []).append((t, v))
    lines.append("# EOF")
    om = work / "history.om"
    om.write_text("\n".join(lines) + "\n")
    data = work / "data"
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(om),
                    str(data)], check=True, capture_output=True, timeout=600)
    om.unlink()
    port = free_port()
    (work / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\n")
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={work / 'prometheus.yml'}",
                             f"--storage.tsdb.path={data}", "--storage.tsdb.retention.time=100y",
                             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError((work / "prometheus.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(ready, "Prometheus with the backfilled history", timeout_s=120)
        by_wl = {}
        for wl, parts in expected.items():
            t = np.concatenate([p[0] for p in parts])
            v = np.concatenate([p[1] for p in parts])
            o = np.argsort(t, kind="stable")
            by_wl[wl] = (t[o], v[o])
        end = max(float(t.max()) for t, _ in by_wl.values())
        yield url, by_wl, pods, end
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def _learn(url: str, end: float, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "learned.json"
    r = subprocess.run([str(GSCHED), "profiles", "learn", "--prometheus", url,
                        "--since", "14d", "--until", f"{end:.0f}", "--db",
                        str(tmp_path / "g.db"), "--json", str(out), *extra],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return json.loads(out.read_text())


def test_the_server_holds_two_weeks_of_every_pod(history):
    url, by_wl, pods, end = history
    reader = PrometheusReader(url)
    got = reader.read(end - DAYS * DAY_SECONDS, end)
    assert len(got) == len(pods) == 12
    assert {ps.workload for ps in got.values()} == set(by_wl)
    for wl, (t, _) in by_wl.items():  # every sample of the file, and nothing else
        mine = [ps.samples() for ps in got.values() if ps.workload == wl]
        ts = np.sort(np.concatenate([m[0] for m in mine]))
        np.testing.assert_array_equal(ts, np.sort(t))
    assert max(ps.span[1] - ps.span[0] for ps in got.values()) > 13.9 * DAY_SECONDS


def test_profiles_learned_from_prometheus_equal_those_from_the_trace_file(history, tmp_path):
    url, by_wl, _, end = history
    learned = _learn(url, end, tmp_path)
    from_file = learn_profiles(by_wl, now=end)
    assert set(learned) == set(from_file) == set(by_wl)
    assert len(by_wl) == 11  # the two pods of svc-00 are one workload
    for wl, p in from_file.items():
        got = learned[wl]
        assert got["samples"] == p.samples and got["source"] == p.source
        np.testing.assert_allclose(got["values"], p.values, rtol=0, atol=1e-9)
        assert got["confidence"] == pytest.approx(p.confidence)
    assert sum(p.source == "learned" for p in from_file.values()) >= 9
    # not flat: these are real daily curves
    assert max(max(p.values) - min(p.values) for p in from_file.values()) > 0.3


def test_a_range_query_at_the_scrape_step_learns_nearly_the_same(history, tmp_path):
    """`--step`: Prometheus resamples (each point repeats the newest sample within its
    5-minute lookback, so short gaps fill): the same daily shapes, not the same numbers
    at the edges of a pod's quiet hours."""
    url, by_wl, _, end = history
    learned = _learn(url, end, tmp_path, "--step", "57")
    from_file = learn_profiles(by_wl, now=end)
    assert set(learned) == set(from_file)
    for wl, p in from_file.items():
        got, want = np.asarray(learned[wl]["values"]), np.asarray(p.values)
        assert learned[wl]["source"] == p.source
        assert np.abs(got - want).mean() <= 0.03, (wl, np.abs(got - want).mean())
        if want.std() > 0.05:
            assert np.corrcoef(got, want)[0, 1] > 0.9, wl


def test_learned_profiles_are_stored_where_serve_reads_them(history, tmp_path):
    url, by_wl, pods, end = history
    learned = _learn(url, end, tmp_path)
    store = Store(tmp_path / "g.db")
    arrays = store.profile_arrays()
    stored = store.profiles()
    store.close()
    assert set(stored) == set(by_wl)  # fallbacks are stored too, but not used to place
    assert set(arrays) == {w for w, p in learned.items() if p["source"] == "learned"}
    # a new pod of the svc-00 Deployment is placed by the learned profile at once
    pod = {"metadata": {"name": "svc-00-7d9f8c6b5a-zzzzz", "namespace": "genai", "uid": "u1",
                        "labels": {"pod-template-hash": "7d9f8c6b5a"},
                        "ownerReferences": [{"kind": "ReplicaSet",
                                             "name": "svc-00-7d9f8c6b5a"}]},
           "spec": {"schedulerName": "gsched", "containers": [
               {"name": "main", "resources": {"limits": {"gsched.io/gpu-milli": "500"}}}]}}
    pj = podlib.pod_to_job(pod, arrays.get)
    assert pj.workload == "genai/svc-00"
    np.testing.assert_allclose(pj.job.profile, learned["genai/svc-00"]["values"])


def test_trace_build_from_prometheus_is_the_cluster_s_history(history, tmp_path):
    url, by_wl, pods, end = history
    out = tmp_path / "mine.csv"
    r = subprocess.run([str(GSCHED), "trace", "build", "--prometheus", url, "--since", "14d",
                        "--until", f"{end:.0f}", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    tr = load_trace(out)
    assert len(tr.jobs) == 12
    assert sorted(j.kind for j in tr.jobs) == ["inference"] * 10 + ["training"] * 2
    for j in tr.jobs:
        if j.kind == "inference":
            t, v = by_wl[j.profile_name]
            # still reporting at the end of the window: runs to the end of the trace
            assert (j.duration is None) == (t.max() >= end - 2 * 57), j.id
            np.testing.assert_allclose(j.profile, np.clip(daily_mean(t, v, 96), 0, 1),
                                       atol=1e-6)
        else:
            assert 0 < j.duration <= DAYS * DAY_SECONDS and 0 < j.utilization <= 1
    sim = subprocess.run([str(GSCHED), "simulate", str(out), "--policy", "tidal,binpack",
                          "-q", "--json", str(tmp_path / "s.json")],
                         capture_output=True, text=True, timeout=600)
    assert sim.returncode == 0, sim.stderr
    figs = json.loads((tmp_path / "s.json").read_text())["policies"]
    assert figs["tidal"]["unschedulable_jobs"] == 0


def test_an_unreachable_prometheus_is_one_clear_error(tmp_path):
    r = subprocess.run([str(GSCHED), "profiles", "learn", "--prometheus",
                        f"http://127.0.0.1:{free_port()}", "--db", str(tmp_path / "x.db")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "unreachable" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.db").exists()
    r = subprocess.run([str(GSCHED), "profiles", "learn", "--prometheus", "http://x",
                        "--since", "two weeks"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--since" in r.stderr
