"""Cluster descriptions: gsched's YAML/JSON file, the openb node list, or one sized
to a trace. All three produce the same `Cluster` model.

YAML/JSON form::

    prices: {A100: 2.5}          # optional, USD per GPU-hour
    nodes:
      - name: a100             # with `count`, nodes are named a100-0, a100-1, ...
        count: 4
        gpu_count: 8
        gpu_model: A100
        gpu_memory_mib: 81920  # optional, default by model
        cpu_milli: 96000       # optional, 0 = not limited
        memory_mib: 1048576    # optional, 0 = not limited
        labels: {zone: a}
"""

from __future__ import annotations

import csv
import heapq
import io
import json
import math
from pathlib import Path

import yaml
from pydantic import ValidationError

from gsched.errors import InputError
from gsched.models import Cluster, Node, Trace
from gsched.traces.files import read_text

OPENB_NODE_COLUMNS = ["sn", "cpu_milli", "memory_mib", "gpu", "model"]
#: Largest `count` of one node entry: far past any real cluster, short of exhausting memory.
MAX_NODES = 100_000


def load_cluster(path: Path | str) -> Cluster:
    """Load a cluster file, choosing the reader by content (openb CSV or YAML/JSON)."""
    path = Path(path)
    text = read_text(path, "cluster file")
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if first.replace(" ", "").startswith("sn,"):
        return read_openb_nodes(path, text)
    return _read_yaml(path, text)


def _read_yaml(path: Path, text: str) -> Cluster:
    fname = str(path)
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        line = getattr(e, "lineno", None) if line is None else line + 1
        raise InputError(f"not valid YAML/JSON: {e}", file=fname, line=line) from e
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise InputError("expected a mapping with a 'nodes' list", file=fname, field="nodes")
    nodes: list[Node] = []
    for i, entry in enumerate(data["nodes"]):
        if not isinstance(entry, dict):
            raise InputError("each node must be a mapping", file=fname, field=f"nodes[{i}]")
        entry = dict(entry)
        count = entry.pop("count", None)
        if "gpus" in entry and "gpu_count" not in entry:
            entry["gpu_count"] = entry.pop("gpus")
        name = str(entry.get("name", f"node-{i}"))
        count = _count(count, fname, f"nodes[{i}].count")
        names = [name] if count is None else [f"{name}-{k}" for k in range(count)]
        for nm in names:
            try:
                nodes.append(Node(**{**entry, "name": nm}))
            except ValidationError as e:
                err = e.errors()[0]
                fld = ".".join(str(x) for x in err["loc"])
                raise InputError(err["msg"], file=fname, field=f"nodes[{i}].{fld}") from None
    try:
        return Cluster(nodes=nodes, prices=data.get("prices") or {}, source=fname)
    except ValidationError as e:
        raise InputError(e.errors()[0]["msg"], file=fname, field="nodes") from None


def _count(raw: object, fname: str, field: str) -> int | None:
    """A node entry's `count`: a whole number of nodes, up to `MAX_NODES`."""
    if raw is None:
        return None
    try:
        ok = not isinstance(raw, bool) and float(raw).is_integer()  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"count must be a whole number of nodes, got {raw!r}", file=fname,
                         field=field)
    n = int(float(raw))  # type: ignore[arg-type]
    if not 0 <= n <= MAX_NODES:
        raise InputError(f"count {n:,} is outside 0 to {MAX_NODES:,} nodes", file=fname,
                         field=field)
    return n


def read_openb_nodes(path: Path | str, text: str | None = None,
                     gpu_only: bool = True) -> Cluster:
    """Read an Alibaba openb node list (`sn,cpu_milli,memory_mib,gpu,model`)."""
    path = Path(path)
    fname = str(path)
    text = read_text(path, "openb node list") if text is None else text
    rows = csv.DictReader(io.StringIO(text))
    missing = [c for c in OPENB_NODE_COLUMNS if c not in (rows.fieldnames or [])]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)}", file=fname, line=1)
    nodes = []
    for lineno, r in enumerate(rows, start=2):
        try:
            gpus = int(r["gpu"])
            node = Node(name=r["sn"], gpu_count=gpus, gpu_model=(r["model"] or "none").strip(),
                        cpu_milli=int(r["cpu_milli"]), memory_mib=int(r["memory_mib"]))
        except (ValueError, TypeError, ValidationError) as e:
            raise InputError(f"bad node row: {e}", file=fname, line=lineno) from None
        if gpu_only and gpus == 0:
            continue
        nodes.append(node)
    return Cluster(nodes=nodes, source=fname)


def peak_concurrent_request(trace: Trace) -> float:
    """Most GPUs requested at once if every job ran the moment it arrived."""
    ends: list[tuple[float, float]] = []
    cur = peak = 0.0
    for j in trace.jobs:  # sorted by submit time
        while ends and ends[0][0] <= j.submit_time:
            cur -= heapq.heappop(ends)[1]
        cur += j.gpu_request
        peak = max(peak, cur)
        heapq.heappush(ends, (j.submit_time + j.duration if j.duration else math.inf,
                              j.gpu_request))
    return peak


def size_cluster(trace: Trace, fraction: float = 0.75, gpus_per_node: int = 8,
                 gpu_model: str = "A100") -> Cluster:
    """A cluster of identical 8-GPU nodes holding `fraction` of the trace's peak request.

    Sizing below the peak is deliberate: with room for everything at once, every policy
    looks the same; contention is where placement matters.
    """
    biggest = max((j.num_gpu for j in trace.jobs), default=1)
    per_node = max(gpus_per_node, biggest)
    need = max(peak_concurrent_request(trace) * fraction, biggest, 1)
    count = max(1, math.ceil(need / per_node))
    nodes = [Node(name=f"node-{i:04d}", gpu_count=per_node, gpu_model=gpu_model)
             for i in range(count)]
    return Cluster(nodes=nodes, source=f"sized to trace ({fraction:.0%} of peak request)")
