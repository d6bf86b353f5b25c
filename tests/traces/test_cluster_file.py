"""Cluster descriptions: YAML/JSON, the openb node list, and sizing to a trace."""

from __future__ import annotations

import pytest

from gsched.errors import InputError
from gsched.models import Job, Trace
from gsched.traces.cluster import load_cluster, peak_concurrent_request, size_cluster


def test_yaml_with_counts_prices_and_default_gpu_memory(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("prices: {A100: 3.0}\nnodes:\n"
                 "  - {name: big, count: 2, gpus: 8, gpu_model: A100}\n"
                 "  - {name: small, gpu_count: 1, gpu_model: T4, cpu_milli: 8000}\n")
    c = load_cluster(p)
    assert [n.name for n in c.nodes] == ["big-0", "big-1", "small"]
    assert c.total_gpus == 17
    assert c.nodes[0].gpu_memory_mib == 81_920 and c.nodes[2].gpu_memory_mib == 16_384
    assert c.price_of("A100") == 3.0 and c.price_of("T4") == 0.5


def test_openb_gpu_node_list_is_read_as_is(traces_dir):
    c = load_cluster(traces_dir / "alibaba-openb" / "openb_node_list_gpu_node.csv")
    assert len(c.nodes) == 1213 and c.total_gpus == 6212
    assert {n.gpu_model for n in c.nodes} >= {"V100M16", "T4", "P100", "G2"}


@pytest.mark.parametrize("text, field", [
    ("nodes: [{name: a, gpus: -1}]", "nodes[0].gpu_count"),
    ("nodes: [{name: a, gpus: 2, gpu_modle: A100}]", "nodes[0].gpu_modle"),
    ("nodes: 3", "nodes"),
    ("nodes: [{name: a, gpus: 1}, {name: a, gpus: 1}]", "nodes"),
])
def test_bad_cluster_files_name_the_field(tmp_path, text, field):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(InputError) as e:
        load_cluster(p)
    assert e.value.file == str(p) and e.value.field == field


def test_invalid_yaml_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("nodes:\n  - name: a\n   gpus: [\n")
    with pytest.raises(InputError) as e:
        load_cluster(p)
    assert e.value.line is not None and "bad.yaml" in str(e.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="cannot read cluster file"):
        load_cluster(tmp_path / "nope.yaml")


def test_sized_cluster_holds_three_quarters_of_the_peak_request():
    jobs = [Job(id=str(i), kind="training", submit_time=i, duration=100, num_gpu=4)
            for i in range(10)]  # all ten overlap: peak request 40 GPUs
    tr = Trace(jobs=jobs)
    assert peak_concurrent_request(tr) == 40
    c = size_cluster(tr)
    assert c.total_gpus == 32 and all(n.gpu_count == 8 for n in c.nodes)
