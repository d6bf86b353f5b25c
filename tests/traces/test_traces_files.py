"""User files: gzipped traces and spreadsheet BOMs read like plain CSV; outputs get the
umask's permissions, not mkstemp's 0600; a bad output path fails before any work."""

from __future__ import annotations

import gzip
import os
import stat
from pathlib import Path

import pytest

from gsched.errors import InputError
from gsched.traces.files import atomic_write_text, check_output, read_text
from gsched.traces.load import load_trace

TRACE = """id,kind,submit_time,duration,num_gpu,profile
svc,inference,0,,1,day
t1,training,60,3600,2,
"""
PROFILES = "name,s0,s1,s2,s3\nday,0.1,0.9,0.9,0.1\n"


def test_csv_gz_trace_reads_like_the_plain_one(tmp_path):
    (tmp_path / "t.csv").write_text(TRACE)
    (tmp_path / "t.profiles.csv").write_text(PROFILES)
    (tmp_path / "z.csv.gz").write_bytes(gzip.compress(TRACE.encode()))
    (tmp_path / "z.profiles.csv.gz").write_bytes(gzip.compress(PROFILES.encode()))
    plain, zipped = load_trace(tmp_path / "t.csv"), load_trace(tmp_path / "z.csv.gz")
    assert [j.id for j in zipped.jobs] == [j.id for j in plain.jobs] == ["svc", "t1"]
    assert zipped.jobs[0].profile_name == "day"
    assert list(zipped.jobs[0].profile) == list(plain.jobs[0].profile)


def test_csv_gz_finds_plain_profiles_beside_it(tmp_path):
    (tmp_path / "z.csv.gz").write_bytes(gzip.compress(TRACE.encode()))
    (tmp_path / "z.profiles.csv").write_text(PROFILES)
    assert load_trace(tmp_path / "z.csv.gz").jobs[0].profile_name == "day"


def test_gzipped_openb_pod_list_is_detected(tmp_path, traces_dir):
    src = traces_dir / "alibaba-openb" / "openb_pod_list_gpushare100.csv"
    (tmp_path / "pods.csv.gz").write_bytes(gzip.compress(src.read_bytes()))
    assert len(load_trace(tmp_path / "pods.csv.gz").jobs) == len(load_trace(src).jobs)


def test_damaged_gzip_is_one_clear_error(tmp_path):
    p = tmp_path / "bad.csv.gz"
    p.write_bytes(gzip.compress(TRACE.encode())[:30])
    with pytest.raises(InputError, match=r"bad.csv.gz: cannot read trace: damaged gzip data"):
        load_trace(p)
    with pytest.raises(InputError, match="damaged gzip data"):
        read_text(p, "trace")


def test_utf8_bom_in_the_header_is_accepted(tmp_path):
    (tmp_path / "t.profiles.csv").write_bytes(b"\xef\xbb\xbf" + PROFILES.encode())
    (tmp_path / "t.csv").write_bytes(b"\xef\xbb\xbf" + TRACE.replace("\n", "\r\n").encode())
    tr = load_trace(tmp_path / "t.csv")
    assert [j.id for j in tr.jobs] == ["svc", "t1"] and tr.jobs[0].profile_name == "day"
    cluster = tmp_path / "c.yaml"
    cluster.write_bytes(b"\xef\xbb\xbfnodes:\n  - {name: a, count: 2, gpu_count: 8}\n")
    from gsched.traces.cluster import load_cluster

    assert len(load_cluster(cluster).nodes) == 2


@pytest.fixture
def umask():
    def set_(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_
    os.umask(old)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_new_output_files_honour_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    p = tmp_path / "out" / "plan.json"
    atomic_write_text(p, "{}\n")
    assert stat.S_IMODE(p.stat().st_mode) == mode
    assert p.read_text() == "{}\n"
    assert [q.name for q in p.parent.iterdir()] == ["plan.json"]  # no temp file left


def test_a_replaced_file_keeps_its_mode(tmp_path, umask):
    umask(0o077)
    p = tmp_path / "shared.json"
    p.write_text("old")
    p.chmod(0o664)
    atomic_write_text(p, "new")
    assert (p.read_text(), stat.S_IMODE(p.stat().st_mode)) == ("new", 0o664)


def test_bad_output_paths_fail_before_any_work(tmp_path):
    with pytest.raises(InputError, match="field '--json': is a directory"):
        check_output(tmp_path, "--json")
    with pytest.raises(InputError, match="field '--plot': --plot writes .png"):
        check_output(tmp_path / "p.txt", "--plot", (".png", ".pdf"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot create its directory"):
        check_output(blocker / "sub" / "o.json", "--json")
    check_output(tmp_path / "new" / "o.json", "--json")
    assert (tmp_path / "new").is_dir()


def test_readers_and_writers_round_trip_through_files(tmp_path: Path):
    p = tmp_path / "x.txt"
    atomic_write_text(p, "héllo\n")
    assert read_text(p, "file") == "héllo\n"
