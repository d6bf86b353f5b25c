"""Sanity limits on the numbers in traces: values past them are typos, not data.

A duration of 1e10 s (milliseconds typed as seconds) is finite and positive, so it passed
every check and then ran the simulator for minutes in 8.7 GB; 1e308 overflowed into a
traceback. Each limit sits far above anything real (the largest in the public traces: a
145-day openb pod, a 149-day span), so only mistakes hit it, and the error states the
limit.
"""

from __future__ import annotations

from gsched.errors import InputError

DAY_S = 86_400

#: field -> (largest sane value, how the limit reads in the error).
LIMITS: dict[str, tuple[float, str]] = {
    "submit_time": (1e10, "10,000,000,000 s (the year 2286 as a Unix time)"),
    "duration": (366 * DAY_S, f"{366 * DAY_S:,} s (366 days)"),
    "gpu_mem_mib": (1 << 20, f"{1 << 20:,} MiB (1 TiB per GPU)"),
    "cpu_milli": (10_000_000, "10,000,000 (10,000 cores)"),
    "memory_mib": (1 << 30, f"{1 << 30:,} MiB (1 PiB)"),
    "priority": (2**31 - 1, f"{2**31 - 1:,} in size (a Kubernetes priority is 32-bit)"),
}

#: Time from a trace's first arrival to its last (ten years): the replay clock steps
#: through every 15-minute slot of it, so a 30-year span ran for most of a minute.
MAX_SPAN_S = 3650 * DAY_S


def check_limit(value: float, field: str, where: dict, limit_of: str | None = None) -> None:
    """Raise the usual file:line:field error when `value` is past `field`'s limit.

    `limit_of` names the limit to apply when the field is spelled differently in a format
    (openb's `creation_time` is a `submit_time`).
    """
    limit, text = LIMITS[limit_of or field]
    if abs(value) > limit:
        hint = "; was it in milliseconds?" if (limit_of or field) == "duration" else ""
        raise InputError(f"{value:g} is past the sanity limit of {text}{hint}", field=field,
                         **where)


def check_span(starts: list[tuple[float, int]], field: str, file: str) -> None:
    """Reject a trace whose arrivals (value, line) spread over more than `MAX_SPAN_S`."""
    if not starts:
        return
    first = min(v for v, _ in starts)
    for value, line in starts:
        if value - first > MAX_SPAN_S:
            raise InputError(f"{value:g} is {(value - first) / DAY_S:,.0f} days after the "
                             f"first arrival ({first:g}); a trace may span at most "
                             f"{MAX_SPAN_S:,} s ({MAX_SPAN_S // DAY_S} days)", field=field,
                             file=file, line=line)
