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
    return Cluster(nodes=[Node(name=f"{model.lower()}-{k:04d}", gpu_count=gpus_per_node,
                               gpu_model=model) for k in range(nodes)])
