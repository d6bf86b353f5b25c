"""`gsched trace build|generate|inspect`: make and check traces (docs/trace-format.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import ValidationError
from rich.console import Console

from gsched.errors import InputError
from gsched.progress import ProgressLog
from gsched.traces.files import check_output

if TYPE_CHECKING:
    from gsched.models import Trace

trace_app = typer.Typer(help="Build, generate and inspect traces.")

CURVE_SOURCES = ("servegen", "genai", "lora")


def _spec_error(e: ValidationError) -> InputError:
    err = e.errors()[0]
    fld = "--" + str(err["loc"][0]).replace("_", "-") if err["loc"] else None
    return InputError(err["msg"].removeprefix("Value error, "), field=fld)


def _existing(path: Path, flag: str) -> Path:
    if not path.exists():
        raise InputError(f"file not found (set GSCHED_TRACES or pass {flag})",
                         file=str(path), field=flag)
    if path.is_dir():
        raise InputError("is a directory, expected a file", file=str(path), field=flag)
    return path


def _write(trace: Trace, out: Path, inline_profiles: bool) -> list[Path]:
    """Write a trace atomically, turning file-system refusals into a user error."""
    from gsched.traces.native import write_native

    try:
        return write_native(trace, out, inline_profiles=inline_profiles)
    except OSError as e:
        raise InputError(f"cannot write: {e.strerror}", file=str(out), field="--out") from e


def _report_written(console: Console, written: list[Path], jobs: int, secs: float) -> None:
    console.print(f"wrote {jobs:,} jobs to {written[0]} in {secs:.1f} s")
    for p in written[1:]:
        console.print(f"wrote named profiles to {p}")


@trace_app.command("build")
def build_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Native CSV to write (named "
                                      "profiles go to <stem>.profiles.csv beside it).")],
    servegen: Annotated[list[Path] | None, typer.Option(
        help="ServeGen trace CSV (repeatable). Default: every chunk under "
             "<traces>/servegen.")] = None,
    genai: Annotated[Path | None, typer.Option(
        help="GenAI pod_gpu_duty_cycle_anon.tar.gz. Default: <traces>/alibaba-genai.")]
    = None,
    lora: Annotated[Path | None, typer.Option(
        help="GenAI lora_request_trace.tar.gz. Default: <traces>/alibaba-genai.")] = None,
    gavel: Annotated[Path | None, typer.Option(
        help="Gavel .trace for training arrivals. Default: <traces>/gavel-philly.")] = None,
    curves: Annotated[str, typer.Option(
        help="Comma-separated sources of inference curves: servegen,genai,lora.")]
    = "servegen,genai,lora",
    days: Annotated[float, typer.Option(help="Span of the trace in days.")] = 2.0,
    inference_services: Annotated[int, typer.Option(help="Inference services to create.")]
    = 40,
    training_jobs: Annotated[int, typer.Option(help="Consecutive Gavel jobs to take.")] = 150,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    max_gpus: Annotated[int | None, typer.Option(
        help="Clamp training jobs to this many GPUs (Gavel has 16-32 GPU jobs).")] = None,
    median_hours: Annotated[float, typer.Option(
        help="Median training duration per Gavel job type, hours (docs/trace-format.md).")]
    = 1.0,
    peak: Annotated[float, typer.Option(
        help="Utilisation of a request-rate curve's busiest slot (ServeGen, LoRA).")] = 0.9,
    slots: Annotated[int, typer.Option(help="Profile slots per day.")] = 96,
    inline_profiles: Annotated[bool, typer.Option(
        "--inline-profiles", help="Write profiles inline (a;b;c) instead of by name.")]
    = False,
    prometheus: Annotated[str | None, typer.Option(
        help="Instead: your own cluster's history from this Prometheus (dcgm-exporter's "
             "DCGM_FI_DEV_GPU_UTIL per pod), one job per pod.")] = None,
    since: Annotated[str, typer.Option(help="With --prometheus: how much history.")]
    = "14d",
    until: Annotated[float | None, typer.Option(
        help="With --prometheus: end of the history, epoch seconds (default: now).")]
    = None,
) -> None:
    """Compose a native trace: real inference curves plus real Gavel training arrivals
    (or, with --prometheus, what ran on your cluster)."""
    check_output(out, "--out")
    if prometheus is not None:
        from gsched.traces.prometheus import build_from_prometheus

        t0 = time.perf_counter()
        trace = build_from_prometheus(prometheus, since, until=until, slots=slots)
        written = _write(trace, out, inline_profiles)
        _report_written(Console(), written, len(trace.jobs), time.perf_counter() - t0)
        return
    from gsched.traces.build import BuildSpec, build
    from gsched.traces.paths import shared_traces_dir

    chosen = [c.strip() for c in curves.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CURVE_SOURCES]
    if unknown:
        raise InputError(f"unknown curve source(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(CURVE_SOURCES)}", field="--curves")
    base = shared_traces_dir()
    if not inference_services:
        chosen = []
    sg: list[Path] = []
    if "servegen" in chosen:
        sg = list(servegen or sorted((base / "servegen").glob("*-trace.csv")))
        if not sg:
            raise InputError("no ServeGen traces found (set GSCHED_TRACES or pass "
                             "--servegen)", file=str(base / "servegen"), field="--servegen")
        sg = [_existing(p, "--servegen") for p in sg]
    gen = (_existing(genai or base / "alibaba-genai" / "pod_gpu_duty_cycle_anon.tar.gz",
                     "--genai") if "genai" in chosen else None)
    lo = (_existing(lora or base / "alibaba-genai" / "lora_request_trace.tar.gz", "--lora")
          if "lora" in chosen else None)
    gv = (_existing(gavel or base / "gavel-philly" / "ee9e8c.trace", "--gavel")
          if training_jobs else None)
    try:
        spec = BuildSpec(servegen=sg, genai=gen, lora=lo, gavel=gv, days=days,
                         inference_services=inference_services, training_jobs=training_jobs,
                         seed=seed, slots=slots, max_gpus=max_gpus, median_hours=median_hours,
                         peak=peak)
    except ValidationError as e:
        raise _spec_error(e) from None
    console = Console()
    t0 = time.perf_counter()
    with ProgressLog("trace build") as log:
        trace = build(spec, on_phase=log.phase)
        log.phase(f"writing {out}")
        written = _write(trace, out, inline_profiles)
    _report_written(console, written, len(trace.jobs), time.perf_counter() - t0)
    for w in trace.warnings:
        Console(stderr=True).print(f"[yellow]warning:[/] {w}")


@trace_app.command("generate")
def generate_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Native CSV to write.")],
    jobs: Annotated[int, typer.Option(help="Jobs to generate.")] = 10_000,
    days: Annotated[float | None, typer.Option(
        help="Span in days. Default: jobs / 2000 (2,000 arrivals per day).")] = None,
    inference_fraction: Annotated[float, typer.Option(
        help="Share of jobs that are inference services.")] = 0.2,
    train_median_hours: Annotated[float, typer.Option(
        help="Median training duration, hours (lognormal).")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same trace.")] = 0,
    slots: Annotated[int, typer.Option(help="Profile slots per day.")] = 96,
    inline_profiles: Annotated[bool, typer.Option(
        "--inline-profiles", help="Write profiles inline (a;b;c) instead of by name.")]
    = False,
) -> None:
    """Generate a seeded synthetic trace: tidal inference plus Philly-like training."""
    check_output(out, "--out")
    from gsched.traces.synthetic import SyntheticSpec, generate

    try:
        spec = SyntheticSpec(jobs=jobs, days=days, inference_fraction=inference_fraction,
                             train_median_hours=train_median_hours, seed=seed, slots=slots)
    except ValidationError as e:
        raise _spec_error(e) from None
    t0 = time.perf_counter()
    with ProgressLog("trace generate") as log:
        log.phase(f"generating {jobs:,} jobs")
        trace = generate(spec)
        log.phase(f"writing {out}")
        written = _write(trace, out, inline_profiles)
    _report_written(Console(), written, len(trace.jobs), time.perf_counter() - t0)


@trace_app.command("inspect")
def inspect_cmd(
    trace: Annotated[Path, typer.Argument(help="Trace file: native CSV, openb pod list or "
                                               "Gavel .trace.")],
    profiles: Annotated[Path | None, typer.Option(
        help="Profiles file for named profiles (default: <trace>.profiles.csv).")] = None,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="Write the summary as JSON to this file ('-' for stdout).")] = None,
    slots: Annotated[int, typer.Option(min=1, max=1440, help="Profile slots per day.")] = 96,
) -> None:
    """Summarise a trace: jobs by kind, GPU demand, span, peak request, daily shape."""
    if json_out is not None and str(json_out) != "-":
        check_output(json_out, "--json")
    from gsched.traces.files import atomic_write_text
    from gsched.traces.inspect import print_summary, summarize
    from gsched.traces.load import load_trace

    summary = summarize(load_trace(trace, profiles=profiles, slots=slots))
    if json_out is not None:
        text = json.dumps(summary.model_dump(mode="json"), indent=2) + "\n"
        if str(json_out) == "-":
            typer.echo(text, nl=False)
            return
        try:
            atomic_write_text(json_out, text)
        except OSError as e:
            raise InputError(f"cannot write: {e.strerror}", file=str(json_out),
                             field="--json") from e
    print_summary(Console(), summary)
    if json_out is not None:
        Console().print(f"wrote {json_out}")


def register(app: typer.Typer) -> None:
    app.add_typer(trace_app, name="trace")
