"""One entry point for job traces: detect the format by content and read it.

Native CSV (a header naming `id`, `kind`, `submit_time`), an openb pod list (header
starting `name,cpu_milli`) or a Gavel `.trace` (7 tab-separated fields) all become the
same `Trace`. Anything else is an `InputError` naming the file.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from gsched.errors import InputError
from gsched.models import DEFAULT_SLOTS, Trace
from gsched.traces.files import open_text
from gsched.traces.gavel import looks_like_gavel, read_gavel
from gsched.traces.native import REQUIRED, read_native
from gsched.traces.openb import is_openb_header, read_openb_pods


def detect_format(path: Path) -> str:
    """'native', 'openb' or 'gavel', from the first meaningful line of `path`."""
    fname = str(path)
    if path.is_dir():
        raise InputError("is a directory, not a trace file", file=fname)
    try:
        with open_text(path) as f:
            first = ""
            for line in f:
                if line.strip() and not line.lstrip().startswith("#"):
                    first = line
                    break
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"cannot read trace: damaged gzip data ({e})", file=fname) from e
    except OSError as e:
        raise InputError(f"cannot read trace: {e.strerror or e}", file=fname) from e
    if not first:
        raise InputError("empty trace: no header row", file=fname)
    if is_openb_header(first):
        return "openb"
    if looks_like_gavel(first):
        return "gavel"
    cols = {c.strip() for c in first.split(",")}
    if "kind" in cols or "submit_time" in cols or first.replace(" ", "").startswith("id,"):
        return "native"
    raise InputError("unknown trace format: expected gsched's native CSV (header with "
                     f"{', '.join(REQUIRED)}), an openb pod list (header 'name,cpu_milli,...')"
                     " or a Gavel .trace (7 tab-separated fields)", file=fname, line=1)


def load_trace(path: Path | str, profiles: Path | None = None,
               slots: int = DEFAULT_SLOTS) -> Trace:
    """Read any supported trace; `profiles` applies to native CSVs only."""
    path = Path(path)
    if not path.exists():
        raise InputError("trace file not found", file=str(path))
    fmt = detect_format(path)
    if fmt == "openb":
        return read_openb_pods(path, slots=slots)
    if fmt == "gavel":
        return read_gavel(path, slots=slots)
    if profiles is not None and not profiles.exists():
        raise InputError("profiles file not found", file=str(profiles))
    return read_native(path, profiles=profiles, slots=slots)
