"""Numbers past sane bounds are typos (milliseconds typed as seconds), reported as the usual
file:line:field error that states the bound; real traces sit far inside them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gsched.errors import InputError
from gsched.traces.bounds import LIMITS, MAX_SPAN_S
from gsched.traces.cluster import load_cluster
from gsched.traces.gavel import read_gavel
from gsched.traces.load import load_trace
from gsched.traces.synthetic import SyntheticSpec

HEADER = "id,kind,submit_time,duration,num_gpu,gpu_mem_mib,priority,cpu_milli,memory_mib\n"
GOOD = "a,training,0,3600,1,0,0,0,0\n"


def native(tmp_path: Path, row: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(HEADER + GOOD + row)
    return p


@pytest.mark.parametrize(("row", "field", "bound"), [
    ("b,training,0,1e10,1,0,0,0,0\n", "duration", "31,622,400 s (366 days)"),
    ("b,training,0,1e12,1,0,0,0,0\n", "duration", "31,622,400 s (366 days)"),
    ("b,training,1e308,60,1,0,0,0,0\n", "submit_time", "10,000,000,000 s"),
    ("b,training,0,60,1,1e308,0,0,0\n", "gpu_mem_mib", "1,048,576 MiB"),
    ("b,training,0,60,1,0,1e308,0,0\n", "priority", "2,147,483,647"),
    ("b,training,0,60,1,0,-1e12,0,0\n", "priority", "2,147,483,647"),
    ("b,training,0,60,1,0,0,1e308,0\n", "cpu_milli", "10,000,000"),
    ("b,training,0,60,1,0,0,0,1e308\n", "memory_mib", "1,073,741,824 MiB"),
])
def test_native_values_past_their_bound_name_file_line_field_and_bound(tmp_path, row, field,
                                                                       bound):
    p = native(tmp_path, row)
    with pytest.raises(InputError) as e:
        load_trace(p)
    assert str(e.value).startswith(f"{p}:3: field '{field}': ")
    assert f"sanity limit of {bound}" in str(e.value)


def test_a_duration_in_milliseconds_gets_a_hint(tmp_path):
    with pytest.raises(InputError, match="was it in milliseconds"):
        load_trace(native(tmp_path, "b,training,0,86400000,1,0,0,0,0\n"))


def test_values_at_the_bound_are_accepted(tmp_path):
    limit = int(LIMITS["duration"][0])
    tr = load_trace(native(tmp_path, f"b,training,0,{limit},1,0,0,0,0\n"))
    assert max(j.duration for j in tr.jobs) == limit


def test_unix_time_submit_times_are_fine_but_a_span_past_ten_years_is_not(tmp_path):
    p = tmp_path / "epoch.csv"
    p.write_text(HEADER + "a,training,1700000000,60,1,0,0,0,0\n"
                          "b,training,1700086400,60,1,0,0,0,0\n")
    assert len(load_trace(p).jobs) == 2
    far = 1_700_000_000 + MAX_SPAN_S + 1
    p.write_text(HEADER + f"a,training,{far},60,1,0,0,0,0\nb,training,1700000000,60,1,0,0,0,0\n")
    with pytest.raises(InputError) as e:
        load_trace(p)
    assert str(e.value).startswith(f"{p}:2: field 'submit_time': ")
    assert "3,650 days" in str(e.value)


def test_openb_times_past_their_bounds(tmp_path):
    head = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase," \
           "creation_time,deletion_time,scheduled_time\n"
    p = tmp_path / "pods.csv"
    p.write_text(head + "p1,1000,1024,1,1000,,BE,Succeeded,0,100,0\n"
                        "p2,1000,1024,1,1000,,BE,Succeeded,0,10000000000,0\n")
    with pytest.raises(InputError) as e:
        load_trace(p)
    assert re.match(rf"{re.escape(str(p))}:3: field 'deletion_time': 1e\+10 is past the "
                    "sanity limit of 31,622,400 s", str(e.value))
    p.write_text(head + "p1,1000,1024,1,1000,,BE,Succeeded,0,100,0\n"
                        "p2,1e308,1024,1,1000,,BE,Succeeded,0,100,0\n")
    with pytest.raises(InputError, match=r":3: field 'cpu_milli': .*sanity limit"):
        load_trace(p)
    p.write_text(head + "p1,inf,1024,1,1000,,BE,Succeeded,0,100,0\n")
    with pytest.raises(InputError, match=r":2: field 'cpu_milli': 'inf' is not a finite"):
        load_trace(p)


def test_gavel_arrival_and_duration_bounds(tmp_path):
    p = tmp_path / "g.trace"
    line = "ResNet-18 (batch size 64)\tcmd\t--num_steps\t1\t{steps}\t{arrival}\t1\n"
    p.write_text(line.format(steps=1000, arrival=0) + line.format(steps=1000, arrival=1e11))
    with pytest.raises(InputError, match=r"g.trace:2: field 'arrival_time': .*sanity limit"):
        read_gavel(p)
    p.write_text(line.format(steps=1000, arrival=0) + line.format(steps=1000, arrival=60)
                 + line.format(steps=10**9, arrival=120))
    with pytest.raises(InputError, match=r"g.trace: field 'total_steps': job 2 .*\(366 days\)"):
        read_gavel(p)


def test_real_traces_are_inside_every_bound(traces_dir):
    for name in ("openb_pod_list_default.csv", "openb_pod_list_gpushare100.csv"):
        assert load_trace(traces_dir / "alibaba-openb" / name).jobs
    assert read_gavel(traces_dir / "gavel-philly" / "ee9e8c.trace").jobs


@pytest.mark.parametrize(("count", "message"), [
    ("eight", "count must be a whole number of nodes, got 'eight'"),
    ("2.5", "count must be a whole number of nodes, got 2.5"),
    ("true", "count must be a whole number of nodes, got True"),
    ("[2]", "count must be a whole number of nodes, got [2]"),
    ("-1", "count -1 is outside 0 to 100,000 nodes"),
    ("1000000", "count 1,000,000 is outside 0 to 100,000 nodes"),
])
def test_cluster_count_must_be_a_sane_whole_number(tmp_path, count, message):
    p = tmp_path / "c.yaml"
    p.write_text(f"nodes:\n  - {{name: a, count: {count}, gpu_count: 8}}\n")
    with pytest.raises(InputError) as e:
        load_cluster(p)
    assert str(e.value) == f"{p}: field 'nodes[0].count': {message}"


def test_cluster_count_as_a_quoted_number_still_works(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("nodes:\n  - {name: a, count: '3', gpu_count: 8}\n")
    assert [n.name for n in load_cluster(p).nodes] == ["a-0", "a-1", "a-2"]


def test_synthetic_spans_stay_readable():
    with pytest.raises(ValueError, match="3,650 days"):
        SyntheticSpec(jobs=20_000_000)
    assert SyntheticSpec(jobs=1_000_000).span_days == 500
