"""The synthetic generator, `trace build` from real sources, and `trace inspect`."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from gsched.cli import main
from gsched.traces.build import BuildSpec, build
from gsched.traces.inspect import summarize
from gsched.traces.native import read_native, write_native
from gsched.traces.synthetic import SyntheticSpec, diurnal_profile, generate


def test_generator_is_deterministic_for_a_seed_and_differs_across_seeds():
    a = generate(SyntheticSpec(jobs=2000, seed=7))
    b = generate(SyntheticSpec(jobs=2000, seed=7))
    c = generate(SyntheticSpec(jobs=2000, seed=8))
    key = [(j.id, j.kind, j.submit_time, j.duration, j.num_gpu, j.gpu_share, j.profile_name)
           for j in a.jobs]
    assert key == [(j.id, j.kind, j.submit_time, j.duration, j.num_gpu, j.gpu_share,
                    j.profile_name) for j in b.jobs]
    assert key != [(j.id, j.kind, j.submit_time, j.duration, j.num_gpu, j.gpu_share,
                    j.profile_name) for j in c.jobs]


def test_generated_trace_has_the_promised_shape():
    tr = generate(SyntheticSpec(jobs=5000, seed=0, days=2))
    assert tr.counts() == {"inference": 1000, "training": 4000}
    train = [j for j in tr.jobs if j.kind == "training"]
    assert {j.num_gpu for j in train} == {1, 2, 4, 8}
    assert np.mean([j.num_gpu == 1 for j in train]) == pytest.approx(0.7, abs=0.05)
    inf = [j for j in tr.jobs if j.kind == "inference"]
    assert {j.gpu_share for j in inf if j.num_gpu == 1} == {0.25, 0.5, 1.0}
    assert any(j.duration > 2 * 86400 for j in inf)  # some services run for days
    # Services sharing a named profile share one array.
    by_name = {}
    for j in inf:
        assert by_name.setdefault(j.profile_name, j.profile) is j.profile
    assert max(j.submit_time for j in tr.jobs) < 2 * 86400
    assert all(t.submit_time <= u.submit_time for t, u in zip(tr.jobs, tr.jobs[1:], strict=False))


def test_generated_trace_is_valid_native_csv(tmp_path):
    tr = generate(SyntheticSpec(jobs=300, seed=1))
    write_native(tr, tmp_path / "s.csv")
    back = read_native(tmp_path / "s.csv")  # full validation of every generated job
    assert [j.id for j in back.jobs] == [j.id for j in tr.jobs]


def test_diurnal_profile_peaks_at_its_hour():
    p = diurnal_profile(21, slots=96)
    assert p.argmax() // 4 in (20, 21) and p.max() == pytest.approx(0.9, abs=0.01)
    assert p.min() == pytest.approx(0.1, abs=0.01)


@pytest.fixture(scope="module")
def real_spec(traces_dir):
    return BuildSpec(
        servegen=sorted((traces_dir / "servegen").glob("*-trace.csv")),
        genai=traces_dir / "alibaba-genai" / "pod_gpu_duty_cycle_anon.tar.gz",
        lora=traces_dir / "alibaba-genai" / "lora_request_trace.tar.gz",
        gavel=traces_dir / "gavel-philly" / "ee9e8c.trace",
        days=2, inference_services=30, training_jobs=60, seed=3, max_gpus=8)


def test_build_mixes_real_curves_with_gavel_arrivals(real_spec):
    tr = build(real_spec)
    assert tr.counts() == {"inference": 30, "training": 60}
    inf = [j for j in tr.jobs if j.kind == "inference"]
    assert all(j.profile is not None and j.profile_name for j in inf)
    assert {j.profile_name.split("-")[0] for j in inf} >= {"servegen", "genai"}
    train = [j for j in tr.jobs if j.kind == "training"]
    assert all(j.id.startswith("gavel-") and j.num_gpu <= 8 for j in train)
    assert max(j.submit_time for j in train) < 2 * 86400
    again = build(real_spec)  # same seed, same trace
    assert [j.model_dump(exclude={"profile"}) for j in again.jobs] == \
        [j.model_dump(exclude={"profile"}) for j in tr.jobs]


def test_build_writes_a_trace_inspect_reads_back(real_spec, tmp_path):
    written = write_native(build(real_spec), tmp_path / "mix.csv")
    assert written[1].name == "mix.profiles.csv"
    s = summarize(read_native(tmp_path / "mix.csv"))
    assert s.jobs == 90 and s.kinds["inference"].with_profile == 30
    assert s.inference_profile is not None and s.inference_profile.peak > s.inference_profile.valley
    assert s.peak_concurrent_request_gpus > 0


def _cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["gsched", *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_generate_then_inspect_json(tmp_path, monkeypatch, capsys):
    out = tmp_path / "g.csv"
    code, text, err = _cli(monkeypatch, capsys, "trace", "generate", "--jobs", "500",
                           "--seed", "2", "--out", str(out))
    assert code == 0, err
    assert out.exists() and (tmp_path / "g.profiles.csv").exists()
    code, text, err = _cli(monkeypatch, capsys, "trace", "inspect", str(out), "--json", "-")
    assert code == 0, err
    data = json.loads(text)
    assert data["jobs"] == 500 and data["kinds"]["inference"]["jobs"] == 100
    assert set(data["gpu_demand"]) <= {"<1 (shared)", "1", "2", "4", "8"}


@pytest.mark.parametrize("args, words", [
    (["trace", "build", "--out", "x.csv", "--curves", "sun"], "unknown curve source"),
    (["trace", "build", "--out", "x.csv", "--gavel", "nope.trace"], "not found"),
    (["trace", "build", "--out", "x.csv", "--days", "-1"], "--days"),
    (["trace", "build", "--out", "x.csv", "--training-jobs", "5000"], "has 2000"),
    (["trace", "generate", "--out", "x.csv", "--jobs", "0"], "--jobs"),
    (["trace", "generate", "--out", ".", "--jobs", "10"], "is a directory"),
    (["trace", "build", "--out", "x.csv", "--max-gpus", "0"], "--max-gpus"),
])
def test_cli_trace_mistakes_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(monkeypatch, capsys, *args)
    assert code == 2 and words in err and "Traceback" not in err
    assert not (tmp_path / "x.csv").exists()
