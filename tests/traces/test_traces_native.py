"""The native CSV: bad input names file, line and field (in Python and on the CLI)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from gsched.cli import main
from gsched.errors import InputError
from gsched.models import Job, Trace
from gsched.traces.native import read_native, write_native

HEADER = "id,kind,submit_time,duration,num_gpu,gpu_share,profile\n"

BAD = [  # (name, body after the header, line, field or None, words in the message)
    ("malformed number", "a,training,zero,60,1,1,\n", 2, "submit_time", "not a number"),
    ("negative duration", "a,training,0,-5,1,1,\n", 2, "duration", "positive"),
    ("unknown kind", "a,batch,0,60,1,1,\n", 2, "kind", "unknown kind"),
    ("bad profile name", "a,inference,0,,1,0.5,nightly\n", 2, "profile", "not defined"),
    ("wrong field count", "a,training,0,60,1\n", 2, None, "expected 7 fields"),
    ("share with many GPUs", "a,training,0,60,2,0.5,\n", 2, None, "gpu_share"),
    ("training without duration", "a,training,0,,1,1,\n", 2, "duration", "need a duration"),
    ("second row bad", "a,training,0,60,1,1,\nb,training,0,60,1,1.5,\n", 3, "gpu_share", ""),
]


@pytest.mark.parametrize("name, body, line, field, words", BAD, ids=[b[0] for b in BAD])
def test_bad_native_rows_name_file_line_and_field(tmp_path, name, body, line, field, words):
    p = tmp_path / "bad.csv"
    p.write_text(HEADER + body)
    with pytest.raises(InputError) as e:
        read_native(p)
    err = e.value
    assert err.file == str(p) and err.line == line
    if field:
        assert err.field == field
    assert words in str(err)


def test_missing_required_column_is_named(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("id,submit_time\na,0\n")
    with pytest.raises(InputError, match="missing required column.*kind") as e:
        read_native(p)
    assert e.value.line == 1


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["gsched", *args])
    with pytest.raises(SystemExit) as e:
        main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


@pytest.mark.parametrize("name, body, line, field, words", BAD[:5], ids=[b[0] for b in BAD[:5]])
def test_cli_reports_bad_rows_with_exit_2_and_no_traceback(tmp_path, monkeypatch, capsys,
                                                           name, body, line, field, words):
    p = tmp_path / "bad.csv"
    p.write_text(HEADER + body)
    code, _, err = _cli(monkeypatch, capsys, "trace", "inspect", str(p))
    assert code == 2
    assert f"{p}:{line}" in err and (field is None or f"'{field}'" in err)
    assert "Traceback" not in err


def test_cli_subprocess_missing_file_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-c", "from gsched.cli import main; main()",
                        "trace", "inspect", str(tmp_path / "nope.csv")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "not found" in r.stderr and "Traceback" not in r.stderr


def test_write_then_read_round_trips_jobs_and_named_profiles(tmp_path):
    curve = np.linspace(0.1, 0.9, 96)
    jobs = [
        Job(id="svc", kind="inference", submit_time=0, num_gpu=1, gpu_share=0.25,
            gpu_models=("A100", "H100"), profile=curve, profile_name="day"),
        Job(id="svc2", kind="inference", submit_time=5, duration=7200, gpu_share=0.5,
            profile=curve, profile_name="day"),
        Job(id="inline", kind="inference", submit_time=7, profile=np.full(96, 0.5)),
        Job(id="train", kind="training", submit_time=10.5, duration=3600, num_gpu=4,
            preemptible=True, utilization=0.7, cpu_milli=8000, memory_mib=65536),
    ]
    src = Trace(jobs=jobs)
    written = write_native(src, tmp_path / "t.csv")
    assert [p.name for p in written] == ["t.csv", "t.profiles.csv"]
    back = read_native(tmp_path / "t.csv")
    assert [j.id for j in back.jobs] == [j.id for j in jobs]
    for a, b in zip(jobs, back.jobs, strict=True):
        assert a.model_dump(exclude={"profile"}) == b.model_dump(exclude={"profile"})
        assert (a.profile is None) == (b.profile is None)
        if a.profile is not None:
            assert np.allclose(a.profile, b.profile, atol=1e-6)
    # Jobs naming the same profile share one array after reading, too.
    assert back.jobs[0].profile is back.jobs[1].profile
