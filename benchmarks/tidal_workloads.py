"""Realistic tidal workloads for the packer benchmarks, built from the real traces.

Inference curves are learned (gsched.scheduler.packing.profiles) from the Alibaba GenAI GPU
duty cycles (one profile per pod, utilisation of a whole GPU) and the eight ServeGen
m-large clients (request rate scaled so the client's p99 window is a busy GPU). Each
benchmark workload draws one real curve and a GPU share; training is flat at a level
drawn from the Lucid colocation measurements' utilisations. Seeded, so every run of a
benchmark packs the same instance.
"""

from __future__ import annotations

import csv
import tarfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from gsched.models import Cluster, Node
from gsched.scheduler.packing.problem import Workload
from gsched.scheduler.packing.profiles import learn_profiles, samples_from_long
from gsched.traces.paths import shared_traces_dir


def genai_duty_samples(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per pod (timestamps, duty cycle %) from pod_gpu_duty_cycle_anon.tar.gz."""
    with tarfile.open(path) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith(".csv"))
        f = tf.extractfile(member)
        assert f is not None
        raw = np.genfromtxt(f, delimiter=",", skip_header=1, dtype=None, encoding=None)
    return samples_from_long(raw["f2"].astype(str), raw["f1"].astype(float),
                             raw["f0"].astype(float))


def servegen_samples(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(t seconds, request rate) of one ServeGen client."""
    arr = np.loadtxt(path, delimiter=",", usecols=(0, 1))
    return arr[:, 0], arr[:, 1]


@lru_cache(maxsize=4)
def profile_bank(slots: int = 96, traces: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(GenAI pod profiles, ServeGen client profiles), each (k, slots) in [0, 1]."""
    base = Path(traces) if traces else shared_traces_dir()
    duty = learn_profiles(genai_duty_samples(base / "alibaba-genai" /
                                             "pod_gpu_duty_cycle_anon.tar.gz"),
                          slots=slots, capacity=100.0)
    genai = np.array([p.values for p in duty.values() if p.source == "learned"
                      and max(p.values) > 0.05])
    sg = []
    for f in sorted((base / "servegen").glob("language-m-large-chunk-*-trace.csv")):
        t, r = servegen_samples(f)
        cap = float(np.percentile(r, 99)) or float(r.max())
        if cap <= 0:
            continue
        sg.append(learn_profiles({"c": (t, r)}, slots=slots, capacity=cap)["c"].values)
    return genai, np.array(sg)


def lucid_utilizations(traces: str | None = None) -> np.ndarray:
    """GPU utilisations of measured training jobs (Lucid colocate_info), in [0, 1]."""
    base = Path(traces) if traces else shared_traces_dir()
    with open(base / "lucid" / "colocate_info.csv") as f:
        rows = list(csv.DictReader(f))
    keys = ["gpu_util"]
    vals = np.array([float(r[k]) for r in rows for k in keys if r[k] not in ("", None)])
    vals = vals[np.isfinite(vals)]
    return np.clip(vals / 100.0 if vals.max() > 1.5 else vals, 0.05, 1.0)


def tidal_mix(n: int, seed: int = 0, training_share: float = 0.2, slots: int = 96
              ) -> list[Workload]:
    """`n` workloads: real inference curves at drawn GPU shares, plus flat training."""
    rng = np.random.default_rng(seed)
    genai, sg = profile_bank(slots)
    train_u = lucid_utilizations()
    out: list[Workload] = []
    for i in range(n):
        r = rng.random()
        if r < training_share:
            share = float(rng.choice([0.25, 0.5, 1.0], p=[0.3, 0.4, 0.3]))
            load = np.full(slots, share * float(rng.choice(train_u)))
            k = int(rng.choice([1, 2, 4], p=[0.8, 0.15, 0.05])) if share == 1.0 else 1
            out.append(Workload(id=f"train-{i}", load=load, num_gpu=k,
                                gpu_mem_mib=int(rng.choice([8192, 16384, 32768]))))
        elif r < training_share + (1 - training_share) * 0.5:
            prof = genai[rng.integers(len(genai))]
            out.append(Workload(id=f"genai-{i}", load=prof.copy(), gpu_mem_mib=16384))
        else:
            prof = sg[rng.integers(len(sg))]
            share = float(rng.choice([0.25, 0.5, 0.75, 1.0]))
            out.append(Workload(id=f"llm-{i}", load=share * prof, gpu_mem_mib=int(share * 40960)))
    return out


def cluster_for(n_gpus: int, gpus_per_node: int = 8, model: str = "A100") -> Cluster:
    nodes = -(-n_gpus // gpus_per_node)
    return Cluster(nodes=[Node(name=f"{model.lower()}-{k}", gpu_count=gpus_per_node,
                               gpu_model=model) for k in range(nodes)])


# --- The field mix: every real curve in ../shared/traces, with binding GPU memory -------

#: GPU memory of the benchmark's GPUs (A100 80 GB), MiB
FIELD_GPU_MEM = 81_920


def _genai_tar_csv(path: Path) -> np.ndarray:
    with tarfile.open(path) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith(".csv"))
        f = tf.extractfile(member)
        assert f is not None
        return np.genfromtxt(f, delimiter=",", names=True, dtype=None, encoding=None)


def _rate_profile(t: np.ndarray, v: np.ndarray, slots: int) -> np.ndarray | None:
    """A busy-time or request-rate series as a daily profile: its p99 is a busy GPU."""
    cap = float(np.percentile(v, 99)) or float(v.max())
    if cap <= 0 or len(t) < 24:
        return None
    p = learn_profiles({"c": (t, v)}, slots=slots, capacity=cap)["c"]
    return np.asarray(p.values) if p.source == "learned" else None


def _windowed(t: np.ndarray, w: np.ndarray, window: float = 600.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """Events (time, weight) as per-window sums over the whole span (empty windows 0)."""
    k = ((t - t.min()) // window).astype(np.int64)
    sums = np.bincount(k, weights=w)
    return t.min() + window * np.arange(len(sums)), sums


@lru_cache(maxsize=2)
def field_curves(slots: int = 96, traces: str | None = None
                 ) -> list[tuple[str, np.ndarray, int | None]]:
    """Every real daily curve in the shared traces: (name, profile, GPU memory MiB or None).

    - Alibaba GenAI GPU duty cycle, one per pod (memory: the pod's measured peak GPU
      memory from pod_gpu_memory_used_bytes, where the pod is there);
    - Alibaba GenAI gateway QPS, one per pod and request type (memory as above);
    - Alibaba GenAI LoRA request trace, busy GPU-seconds per 10 minutes, one per
      checkpoint model with at least 50 requests;
    - ServeGen m-large, request rate of each of the eight clients.
    """
    base = Path(traces) if traces else shared_traces_dir()
    gdir = base / "alibaba-genai"
    mem_raw = _genai_tar_csv(gdir / "pod_gpu_memory_used_bytes_anon.tar.gz")
    pod_mem: dict[str, int] = {}
    for pod, val in zip(mem_raw["container_ip"].astype(str), mem_raw["value"], strict=True):
        mib = int(float(val) / 2**20)
        if mib > pod_mem.get(pod, 0):
            pod_mem[pod] = mib
    out: list[tuple[str, np.ndarray, int | None]] = []
    duty = learn_profiles(genai_duty_samples(gdir / "pod_gpu_duty_cycle_anon.tar.gz"),
                          slots=slots, capacity=100.0)
    for pod, p in sorted(duty.items()):
        if p.source == "learned" and max(p.values) > 0.05:
            out.append((f"genai-duty-{pod[:8]}", np.asarray(p.values), pod_mem.get(pod)))
    qps = _genai_tar_csv(gdir / "qps.tar.gz")
    pods = np.array([f"{ip or 'gateway'}|{rt}" for ip, rt in
                     zip(qps["container_ip"].astype(str), qps["request_type"].astype(str),
                         strict=True)])
    for key, (t, v) in sorted(samples_from_long(pods, qps["timestamp_anon"].astype(float),
                                                qps["value"].astype(float)).items()):
        prof = _rate_profile(t, v, slots)
        if prof is not None:
            ip = key.split("|")[0]
            out.append((f"genai-qps-{ip[:8]}", prof, pod_mem.get(ip)))
    lora = _genai_tar_csv(gdir / "lora_request_trace.tar.gz")
    when = lora["gmt_create"].astype("datetime64[s]").astype(np.int64).astype(float)
    busy = np.nan_to_num(lora["exec_time_seconds"].astype(float))
    model = lora["checkpoint_model_version_id"].astype(str)
    for m in sorted(set(model)):
        sel = model == m
        if sel.sum() >= 50:
            prof = _rate_profile(*_windowed(when[sel], busy[sel]), slots)
            if prof is not None:
                out.append((f"genai-lora-{m}", prof, None))
    for f in sorted((base / "servegen").glob("language-m-large-chunk-*-trace.csv")):
        prof = _rate_profile(*servegen_samples(f), slots)
        if prof is not None:
            out.append((f"servegen-{f.stem.split('-')[4]}", prof, None))
    return out


def field_rows(n: int, seed: int = 0, slots: int = 96, training_share: float = 0.1
               ) -> list[dict]:
    """`n` workloads over every real curve (round robin, so each is used), plus flat
    training, with GPU memory that binds on 80 GB GPUs, as trace rows.

    A service takes its curve at a GPU share drawn from 0.10-1.00 in steps of 0.05 (so
    the mix has hundreds of distinct profiles); its memory is the pod's measured peak
    where the trace has one, else a model's weights plus KV cache drawn 12-40 GB, scaled
    towards the share. Training: flat at a Lucid utilisation, 10-40 GB, a few on 2-4
    GPUs. Seeded: one instance per (n, seed). Row keys: id, kind, num_gpu, share, mem,
    curve (a `field_curves` name, or None for flat training at `util`), util.
    """
    rng = np.random.default_rng(seed)
    curves = field_curves(slots)
    order = rng.permutation(len(curves))
    train_u = lucid_utilizations()
    rows: list[dict] = []
    for i in range(n):
        if rng.random() < training_share:
            k = int(rng.choice([1, 2, 4], p=[0.8, 0.15, 0.05]))
            util = float(rng.choice(train_u)) * (1.0 if k > 1 else float(rng.choice([0.5, 1.0])))
            rows.append(dict(id=f"train-{i}", kind="training", num_gpu=k, share=1.0,
                             mem=int(rng.integers(10, 41)) * 1024, curve=None,
                             util=round(util, 3)))
            continue
        name, _, mem = curves[order[i % len(curves)]]
        share = round(float(rng.integers(2, 21)) * 0.05, 2)
        if mem is None or mem <= 0:
            mem = int(rng.integers(12, 41)) * 1024
        mem = max(2048, min(FIELD_GPU_MEM, int(mem * (0.5 + 0.5 * share))))
        rows.append(dict(id=f"{name}-{i}", kind="inference", num_gpu=1, share=share, mem=mem,
                         curve=name, util=1.0))
    return rows


def field_mix(n: int, seed: int = 0, slots: int = 96, training_share: float = 0.1
              ) -> list[Workload]:
    """`field_rows` as packer workloads (load = share x curve, request = share)."""
    curves = {name: prof for name, prof, _ in field_curves(slots)}
    return [Workload(id=r["id"], num_gpu=r["num_gpu"], gpu_mem_mib=r["mem"],
                     request=r["share"],
                     load=(np.round(curves[r["curve"]], 4) * r["share"] if r["curve"]
                           else np.full(slots, r["util"] * r["share"])))
            for r in field_rows(n, seed, slots, training_share)]


def write_field_trace(rows: list[dict], directory: Path, slots: int = 96) -> Path:
    """The rows as a native trace (`field.csv`) and its named profiles
    (`field.profiles.csv`), as `gsched pack` reads them."""
    curves = {name: prof for name, prof, _ in field_curves(slots)}
    used = sorted({r["curve"] for r in rows if r["curve"]})
    with open(directory / "field.profiles.csv", "w") as f:
        f.write("name," + ",".join(f"s{k}" for k in range(slots)) + "\n")
        for name in used:
            f.write(name + "," + ",".join(f"{v:.4f}" for v in np.round(curves[name], 4)) + "\n")
    path = directory / "field.csv"
    with open(path, "w") as f:
        f.write("id,kind,submit_time,duration,num_gpu,gpu_share,gpu_mem_mib,utilization,"
                "profile\n")
        for r in rows:
            dur = 86400 if r['kind'] == 'training' else ''
            f.write(f"{r['id']},{r['kind']},0,{dur},{r['num_gpu']},{r['share']},{r['mem']},"
                    f"{r['util']},{r['curve'] or ''}\n")
    return path
