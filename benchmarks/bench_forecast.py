"""Walk-forward forecast backtest on the real curves: which forecaster to book with.

Series (slot means, 96 slots of 15 min, each scaled by its own maximum so 1.0 is the
busiest slot ever seen):
- the eight ServeGen m-large clients (14 days of request rates);
- the Alibaba GenAI LoRA request trace (23 days; GPU-seconds of requests per slot).
The GenAI GPU duty cycles cover ~22.8 h, one day, so they cannot be backtested day
over day; they are not in this table.

For each series and forecaster, every day from day 6 on is forecast from the days before
it; the booking is the p90 times (1 + the series' own margin), the margin being the p99
relative excess over the three held-back days before it (`packing/forecast.py`).
Reported per series: share of slots whose real load exceeded the booking, mean excess,
mean booking over mean real load (what the booking costs), p50 pinball loss; and each
forecaster's time.

    .venv/bin/python benchmarks/bench_forecast.py
"""

from __future__ import annotations

import csv
import io
import tarfile
import time
from datetime import datetime

import numpy as np

from gsched.scheduler.packing.forecast import (
    BacktestResult,
    Forecaster,
    backtest,
    choose_forecaster,
    daily_matrix,
    decayed_quantile,
    default_forecasters,
)
from gsched.traces.paths import shared_traces_dir
from gsched.traces.servegen import read_servegen


def servegen_series() -> dict[str, np.ndarray]:
    out = {}
    for k in range(8):
        t, r = read_servegen(shared_traces_dir() / "servegen" /
                             f"language-m-large-chunk-{k}-trace.csv")
        _, m = daily_matrix(t, r)
        out[f"servegen-c{k}"] = m / max(float(np.nanmax(m)), 1e-12)
    return out


def lora_series() -> dict[str, np.ndarray]:
    path = shared_traces_dir() / "alibaba-genai" / "lora_request_trace.tar.gz"
    with tarfile.open(path) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith(".csv"))
        f = tf.extractfile(member)
        assert f is not None
        rows = csv.DictReader(io.TextIOWrapper(f))
        ts, work = [], []
        for row in rows:
            when = datetime.fromisoformat(row["gmt_create"].strip())
            ts.append(when.timestamp())
            e = row.get("exec_time_seconds") or ""
            try:
                w = float(e) if e.strip() else 1.0
            except ValueError:
                w = 1.0
            work.append(w if np.isfinite(w) and w > 0 else 1.0)
    t = np.asarray(ts)
    slot_len = 900.0
    cell = np.floor(t / slot_len).astype(np.int64)
    cells, counts = np.unique(cell, return_counts=True)
    gpu_s = np.bincount(cell - cells.min(), weights=np.asarray(work))[cells - cells.min()]
    _, m = daily_matrix(cells * slot_len, gpu_s / slot_len)
    # A slot with no request is a real zero, not a missing sample, inside the span.
    m = np.nan_to_num(m, nan=0.0)
    return {"genai-lora": m / max(float(m.max()), 1e-12)}


def main() -> None:
    series = servegen_series() | lora_series()
    fcs = default_forecasters() + [decayed_quantile(0.99)]
    print(f"{'series':<14}{'forecaster':<18}{'exceeded':>10}{'excess':>9}{'booked/real':>13}"
          f"{'pinball50':>11}{'days':>6}")
    by_fc: dict[str, list] = {}
    timing: dict[str, float] = {}
    base = fcs
    fcs = []
    for fc in base:
        for kind in ("relative", "additive"):
            t0 = time.perf_counter()
            res = backtest(series, [fc], kind=kind)
            name = f"{fc.name}+{kind[:3]}"
            timing[name] = time.perf_counter() - t0
            by_fc[name] = [BacktestResult(r.workload, name, r.days) for r in res]
            fcs.append(Forecaster(name, fc.predict))
    for name in series:
        for fc in fcs:
            r = next(x for x in by_fc[fc.name] if x.workload == name)
            ratio = r.mean("booked") / max(r.mean("actual"), 1e-3)
            print(f"{name:<14}{fc.name:<18}{r.mean('exceeded'):>10.1%}{r.mean('excess'):>9.4f}"
                  f"{ratio:>13.2f}{r.mean('pinball_p50'):>11.4f}{len(r.days):>6}")
    print()
    every = [r for rs in by_fc.values() for r in rs]
    for fc in fcs:
        rs = by_fc[fc.name]
        exc = np.mean([r.mean("exceeded") for r in rs])
        ratio = (sum(r.mean("booked") for r in rs)
                 / max(sum(r.mean("actual") for r in rs), 1e-12))
        print(f"all series  {fc.name:<20} exceeded {exc:6.1%}  booked/real {ratio:5.2f}  "
              f"time {timing[fc.name] * 1000:7.1f} ms for {len(series)} series")
    print("\nchosen (books least with <= 2% of slots exceeded, else exceeds least): "
          f"{choose_forecaster(every)}")


if __name__ == "__main__":
    main()
