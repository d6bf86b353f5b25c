"""`gsched sweep`: one table per grid, the same bytes wherever cells run, resumable."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest

from gsched.errors import UnavailableError
from gsched.simulator import sweep_runners
from gsched.simulator.sweep import (
    append_journal,
    journal_path,
    load_grid,
    read_done,
    run_cell,
    summarise,
    write_table,
)

TRACE = """id,kind,submit_time,duration,num_gpu,gpu_share,profile
svc-a,inference,0,,1,0.5,0.2;0.2;0.9;0.9
svc-b,inference,0,,1,0.5,0.9;0.9;0.2;0.2
t1,training,60,3600,1,1,
t2,training,120,7200,2,1,
t3,training,180,1800,1,0.5,
t4,training,200,5400,1,1,
"""
GRID = """traces: [t.csv]
clusters: [1x4xA100, 2x2xA100]
policies: [binpack, tidal]
headroom: [0.1]
noise: [0.0, 0.3]
seeds: [0, 1]
"""


@pytest.fixture
def grid(tmp_path: Path) -> Path:
    (tmp_path / "t.csv").write_text(TRACE)
    (tmp_path / "grid.yaml").write_text(GRID)
    return tmp_path / "grid.yaml"


def table_text(cells, runner) -> str:
    done: dict = {}
    runner(cells, lambda c, row: done.__setitem__(c.key, row))
    out = Path(cells[0].base) / f"out-{runner.__name__}.csv"
    write_table(out, cells, done)
    return out.read_text()


def test_grid_is_the_product_of_its_axes_in_order(grid):
    _, cells = load_grid(grid)
    assert len(cells) == 2 * 2 * 2 * 2
    assert [(c.cluster, c.policy, c.noise, c.seed) for c in cells[:3]] == [
        ("1x4xA100", "binpack", 0.0, 0), ("1x4xA100", "binpack", 0.0, 1),
        ("1x4xA100", "binpack", 0.3, 0)]


def test_seed_moves_noisy_cells_only(grid):
    _, cells = load_grid(grid)
    rows = {(c.cluster, c.policy, c.noise, c.seed): run_cell(c) for c in cells
            if c.cluster == "1x4xA100" and c.policy == "binpack"}
    assert rows[("1x4xA100", "binpack", 0.0, 0)] | {"seed": 1} == \
        rows[("1x4xA100", "binpack", 0.0, 1)]
    noisy = [rows[("1x4xA100", "binpack", 0.3, s)]["mean_gpu_utilization"] for s in (0, 1)]
    assert noisy[0] != noisy[1]
    assert "wall_seconds" not in rows[("1x4xA100", "binpack", 0.0, 0)]


def test_local_processes_and_ray_give_identical_tables(grid):
    """The acceptance test: the same grid, in one process, two processes and on Ray."""
    _, cells = load_grid(grid)
    inline = table_text(cells, sweep_runners.run_inline)

    def processes(cells, on_row):
        sweep_runners.run_processes(cells, on_row, workers=2)

    def ray_local(cells, on_row):
        sweep_runners.run_ray(cells, on_row, "local", num_cpus=2)

    assert table_text(cells, processes) == inline
    assert table_text(cells, ray_local) == inline
    rows = list(csv.DictReader(io.StringIO(inline)))
    assert len(rows) == len(cells)
    assert {r["policy"] for r in rows} == {"binpack", "tidal"}


def test_rerun_skips_done_cells_and_resumes_from_the_journal(grid, tmp_path):
    _, cells = load_grid(grid)
    table = tmp_path / "grid.results.csv"
    full = table_text(cells, sweep_runners.run_inline)
    # An interrupted run: five rows reached the journal, no table was written.
    done_rows = list(csv.DictReader(io.StringIO(full)))
    for row in done_rows[:5]:
        append_journal(table, {k: (v if v != "" else None) for k, v in row.items()})
    with journal_path(table).open("a") as f:
        f.write('{"trace": "t.csv", "clus')  # the line it was writing when killed
    done = read_done(table)
    assert set(done) == {c.key for c in cells[:5]}
    ran: list = []

    def counting(cells, on_row):
        ran.extend(cells)
        sweep_runners.run_inline(cells, on_row)

    todo = [c for c in cells if c.key not in done]
    counting(todo, lambda c, row: done.__setitem__(c.key, row))
    write_table(table, cells, done)
    assert len(ran) == len(cells) - 5
    assert table.read_text() == full
    assert not journal_path(table).exists()
    # Everything done: nothing runs.
    assert {c.key for c in cells} <= set(read_done(table))


def gsched(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    argv = ["-m", "gsched", *args] if code is None else ["-c", code, *args]
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                          timeout=300)


def test_cli_writes_table_and_summary_and_skips_done_cells(grid, tmp_path):
    out = gsched("sweep", str(grid), "--workers", "2")
    assert out.returncode == 0, out.stderr
    assert "16 cells (16 run now, 0 already done)" in out.stdout
    table = tmp_path / "grid.results.csv"
    summary = tmp_path / "grid.results.summary.csv"
    first = table.read_text()
    rows = list(csv.DictReader(io.StringIO(first)))
    assert len(rows) == 16 and all(r["unfinished_jobs"] == "0" for r in rows)
    srows = list(csv.DictReader(io.StringIO(summary.read_text())))
    assert len(srows) == 8 and {r["seeds"] for r in srows} == {"2"}
    # Drop two rows: only those two run again, and the table comes back the same.
    lines = first.splitlines(keepends=True)
    table.write_text("".join(lines[:-2]))
    again = gsched("sweep", str(grid), "--workers", "1")
    assert again.returncode == 0, again.stderr
    assert "(2 run now, 14 already done)" in again.stdout
    assert table.read_text() == first


def test_summary_is_the_mean_over_seeds():
    rows = [{"trace": "t", "cluster": "c", "policy": "p", "headroom": 0.1, "noise": 0.1,
             "seed": s, "gpus": 8, "cost": c, "mean_gpu_utilization": None}
            for s, c in ((0, 10.0), (1, 20.0))]
    (s,) = summarise(rows)
    assert (s["seeds"], s["cost"], s["mean_gpu_utilization"]) == (2, 15.0, None)


def test_without_ray_the_error_names_the_extra(grid, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UnavailableError, match=r"pip install 'gsched\[ray\]'"):
        sweep_runners.import_ray()
    code = ("import sys; sys.modules['ray'] = None; sys.argv = ['gsched'] + sys.argv[1:]; "
            "from gsched.cli import main; main()")
    out = gsched("sweep", str(grid), "--ray", "auto", code=code)
    assert out.returncode == 2
    assert "gsched[ray]" in out.stderr and "Traceback" not in out.stderr
    assert not (grid.parent / "grid.results.csv").exists()


@pytest.mark.parametrize("text, field", [
    ("traces: [t.csv]\nnoise: [-1]\n", "noise"),
    ("traces: [t.csv]\npolicies: [nope]\n", "policies"),
    ("traces: [missing.csv]\n", "traces[0]"),
    ("traces: [t.csv]\nclusters: [huge]\n", "clusters[0]"),
    ("traces: [t.csv]\nheadrom: [0.1]\n", "headrom"),
])
def test_bad_grid_is_one_line_naming_file_and_field(grid, text, field):
    grid.write_text(text)
    out = gsched("sweep", str(grid))
    assert out.returncode == 2
    assert str(grid) in out.stderr and f"'{field}'" in out.stderr
    assert "Traceback" not in out.stderr


def test_figures_do_not_depend_on_the_process_string_hash(traces_dir):
    """Sweeps compare rows from different processes: the simulator must not iterate
    hash-ordered sets. With PYTHONHASHSEED 1 and 2 the openb replay below used to differ
    in the last digits of its cost (the order colocated jobs were re-rated in)."""
    code = ("from gsched.scheduler.policies.registry import make_policy\n"
            "from gsched.scheduler.policies.policy import PolicyConfig\n"
            "from gsched.simulator.engine import simulate\n"
            "from gsched.traces.cluster import read_openb_nodes\n"
            "from gsched.traces.openb import read_openb_pods\n"
            f"d = {str(traces_dir / 'alibaba-openb')!r}\n"
            "tr = read_openb_pods(d + '/openb_pod_list_default.csv')\n"
            "cl = read_openb_nodes(d + '/openb_node_list_gpu_node.csv')\n"
            "cl = cl.model_copy(update={'nodes': cl.nodes[: len(cl.nodes) // 3]})\n"
            "f = simulate(tr, cl, make_policy('peak', PolicyConfig(workload=tr.jobs))).figures\n"
            "print(repr(f['cost']), repr(f['mean_gpu_utilization']))\n")
    import os

    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "PYTHONHASHSEED": seed},
                           check=True).stdout for seed in ("1", "2")}
    assert len(outs) == 1
