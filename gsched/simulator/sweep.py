"""Sweeps: a grid of simulations, one row of figures per cell, resumable.

A grid file names lists of values on six axes; the grid is their product, in this order:

    traces:   [examples/tidal-mix.csv]      # paths are relative to the grid file
    clusters: [sized, 12x8xA100, cluster.yaml]
    policies: [binpack, tidal]              # or "all"
    headroom: [0.05, 0.1]
    noise:    [0.0, 0.1]
    seeds:    [0, 1, 2]
    until_s:  86400                         # optional: stop every clock here
    out:      results.csv                   # optional: default <grid>.results.csv

A cluster is `sized` (what `gsched simulate` builds for the trace), `NODESxGPUSxMODEL`
(that many identical nodes) or a cluster file. The seed drives the noise of actual load
(`LoadDeviation.seed`) and the policy's own seed, so a (cell, seed) pair always gives the
same row: the table holds no wall-clock figures, and the same grid gives the same bytes
whether its cells ran in one process, in many, or on Ray.

Resuming: each finished row is appended to a journal beside the table as soon as it is
known, and the table is rewritten (atomically, in grid order) at the end. A re-run reads
both and runs only the cells neither holds.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from gsched.errors import InputError
from gsched.models import Cluster
from gsched.scheduler.policies.policy import PolicyConfig
from gsched.scheduler.policies.registry import make_policy, policy_names
from gsched.simulator.capacity import parse_node_type
from gsched.simulator.colocation import default_model
from gsched.simulator.engine import SimConfig, simulate
from gsched.simulator.load import LoadDeviation
from gsched.traces.files import atomic_write_text, read_text

#: The grid's axes, in the order cells are enumerated and columns are written.
AXES = ("trace", "cluster", "policy", "headroom", "noise", "seed")
#: Figures that measure the machine, not the schedule: left out so rows are reproducible.
WALL_CLOCK = ("wall_seconds", "events_per_second")
#: Figures the summary averages over seeds.
SUMMARY_FIGURES = ("mean_gpu_utilization", "gpu_allocation_rate", "cost",
                   "training_queue_delay_p95_s", "queue_delay_p95_s", "jct_mean_s",
                   "slo_risk_slot_minutes", "preemptions", "unfinished_jobs")
_CLUSTER_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+\s*[xX*]\s*\S+)\s*$")


class Grid(BaseModel):
    """A grid file (see the module docstring)."""

    model_config = {"extra": "forbid"}

    traces: list[str] = Field(min_length=1)
    clusters: list[str] = Field(default_factory=lambda: ["sized"], min_length=1)
    policies: list[str] | str = "all"
    headroom: list[float] = Field(default_factory=lambda: [0.1], min_length=1)
    noise: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    until_s: float | None = Field(default=None, gt=0)
    out: str | None = None

    @field_validator("headroom")
    @classmethod
    def _headroom(cls, v: list[float]) -> list[float]:
        if any(not 0 <= h < 1 for h in v):
            raise ValueError("every headroom must be in [0, 1)")
        return v

    @field_validator("noise")
    @classmethod
    def _noise(cls, v: list[float]) -> list[float]:
        if any(n < 0 for n in v):
            raise ValueError("noise must be >= 0")
        return v


@dataclass(frozen=True)
class Cell:
    """One simulation of the grid; paths are resolved, the axis values as written."""

    trace: str
    cluster: str
    policy: str
    headroom: float
    noise: float
    seed: int
    base: str  # the grid file's folder: relative paths are read from there
    until_s: float | None = None

    @property
    def key(self) -> tuple[str, ...]:
        return cell_key(asdict(self))

    def path(self, value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else Path(self.base) / p


def cell_key(row: dict) -> tuple[str, ...]:
    """A cell's identity from its axis values, as a row of the table spells them too."""
    return (str(row["trace"]), str(row["cluster"]), str(row["policy"]),
            repr(float(row["headroom"])), repr(float(row["noise"])), str(int(row["seed"])))


def load_grid(path: Path) -> tuple[Grid, list[Cell]]:
    """Read a grid file; every cell, in grid order. Names the file and field on error."""
    text = read_text(path, "grid file")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"not valid YAML: {e}", file=str(path),
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping with 'traces', 'policies', ...", file=str(path))
    try:
        grid = Grid(**data)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(err["msg"], file=str(path),
                         field=".".join(str(x) for x in err["loc"])) from None
    try:
        names = policy_names(grid.policies if isinstance(grid.policies, str)
                             else ",".join(grid.policies))
    except InputError as e:
        raise InputError(e.reason, file=str(path), field="policies") from None
    base = str(path.resolve().parent)
    for i, c in enumerate(grid.clusters):
        if c != "sized" and not _CLUSTER_SIZE.match(c):
            if not (Path(base) / c).is_file():
                raise InputError("expected 'sized', NODESxGPUSxMODEL (e.g. 12x8xA100) or a "
                                 f"cluster file; no file {c!r}", file=str(path),
                                 field=f"clusters[{i}]")
    for i, t in enumerate(grid.traces):
        if not (Path(base) / t).is_file():
            raise InputError(f"trace file not found: {t!r}", file=str(path),
                             field=f"traces[{i}]")
    cells = [Cell(t, c, p, float(h), float(n), int(s), base, grid.until_s)
             for t, c, p, h, n, s in itertools.product(
                 grid.traces, grid.clusters, names, grid.headroom, grid.noise, grid.seeds)]
    return grid, cells


def table_path(grid_path: Path, grid: Grid) -> Path:
    if grid.out:
        p = Path(grid.out)
        return p if p.is_absolute() else grid_path.resolve().parent / p
    return grid_path.with_name(f"{grid_path.stem}.results.csv")


# ---------------------------------------------------------------------- one cell
@functools.lru_cache(maxsize=8)
def _trace(path: str, mtime: float):  # noqa: ARG001 - mtime invalidates the cache
    from gsched.traces.load import load_trace

    return load_trace(Path(path))


def _cluster(cell: Cell, trace) -> Cluster:
    from gsched.traces.cluster import load_cluster, size_cluster

    if cell.cluster == "sized":
        return size_cluster(trace)
    m = _CLUSTER_SIZE.match(cell.cluster)
    if m:
        shape = parse_node_type(m.group(2))
        return shape.cluster(int(m.group(1)))
    return load_cluster(cell.path(cell.cluster))


def run_cell(cell: Cell) -> dict:
    """Simulate one cell: its axis values, cluster size and figures (no wall clock)."""
    path = cell.path(cell.trace)
    trace = _trace(str(path), path.stat().st_mtime)
    cluster = _cluster(cell, trace)
    cfg = PolicyConfig(headroom=cell.headroom, seed=cell.seed, workload=trace.jobs)
    sim = SimConfig(until_s=cell.until_s,
                    deviation=LoadDeviation(noise=cell.noise, seed=cell.seed))
    result = simulate(trace, cluster, make_policy(cell.policy, cfg), sim, _colocation())
    row: dict = {a: getattr(cell, a) for a in AXES}
    row.update(nodes=len(cluster.nodes), gpus=cluster.total_gpus)
    row.update({k: v for k, v in result.figures.items() if k not in WALL_CLOCK})
    return row


@functools.lru_cache(maxsize=1)
def _colocation():
    return default_model()


# ---------------------------------------------------------------------- the table
def journal_path(table: Path) -> Path:
    return table.with_name(f".{table.name}.journal")


def read_done(table: Path) -> dict[tuple[str, ...], dict]:
    """Rows already computed: the table from an earlier run plus any journal."""
    done: dict[tuple[str, ...], dict] = {}
    if table.exists():
        for row in csv.DictReader(io.StringIO(read_text(table, "sweep table"))):
            try:
                done[cell_key(row)] = row
            except (KeyError, ValueError):
                raise InputError("not a sweep table (missing or bad axis columns); move it "
                                 "away or set 'out' in the grid", file=str(table)) from None
    journal = journal_path(table)
    if journal.exists():
        for line in read_text(journal, "sweep journal").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by an interrupted run
                continue
            done[cell_key(row)] = row
    return done


def append_journal(table: Path, row: dict) -> None:
    """Record one finished row at once, so an interrupted sweep loses nothing done."""
    table.parent.mkdir(parents=True, exist_ok=True)
    with journal_path(table).open("a") as f:
        f.write(json.dumps(row) + "\n")


def _csv_text(rows: list[dict]) -> str:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r.get(k) is None else r[k] for k in columns})
    return buf.getvalue()


def write_table(table: Path, cells: list[Cell], done: dict[tuple[str, ...], dict]) -> list[dict]:
    """The table in grid order (cells of this grid only), then drop the journal."""
    rows = [_normalise(done[c.key]) for c in cells if c.key in done]
    atomic_write_text(table, _csv_text(rows))
    journal_path(table).unlink(missing_ok=True)
    return rows


def _normalise(row: dict) -> dict:
    """Rows read back from CSV are strings: give every value one spelling."""
    out = {}
    for k, v in row.items():
        if v is None or v == "":
            out[k] = None
        elif isinstance(v, str) and k not in ("trace", "cluster", "policy"):
            try:
                f = float(v)
                out[k] = int(f) if v.lstrip("-").isdigit() else f
            except ValueError:
                out[k] = v
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------- summary
def summarise(rows: list[dict]) -> list[dict]:
    """Mean over seeds of the key figures, per (trace, cluster, policy, headroom, noise)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[a] for a in AXES[:-1]), []).append(r)
    out = []
    for key, members in groups.items():
        s: dict = dict(zip(AXES[:-1], key, strict=True))
        s["seeds"] = len(members)
        s["gpus"] = members[0].get("gpus")
        for f in SUMMARY_FIGURES:
            vals = [float(m[f]) for m in members if m.get(f) is not None]
            s[f] = sum(vals) / len(vals) if vals else None
        out.append(s)
    return out


def write_summary(path: Path, summary: list[dict]) -> None:
    atomic_write_text(path, _csv_text(summary))
