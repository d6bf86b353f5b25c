"""Reading and writing user files: one place for the errors users see.

Every reader gets its text through `read_text`, so a missing file, a directory or a
binary file is the same clear `InputError` naming the file, whatever the format (and a
gzipped file or a byte-order mark makes no difference). Every
writer goes through `atomic_write_text`, so a failure never leaves half a file.
"""

from __future__ import annotations

import gzip
import os
import stat
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from gsched.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"


def read_text(path: Path | str, what: str) -> str:
    """The text of `path`; `what` names the kind of file in the error ("trace", ...).

    Gzipped files (`.csv.gz`) are decompressed, and a UTF-8 byte-order mark (spreadsheet
    exports) is dropped, so readers only ever see plain text.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
        return raw.decode("utf-8-sig")
    except IsADirectoryError as e:
        raise InputError(f"cannot read {what}: it is a directory", file=str(path)) from e
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise InputError(f"cannot read {what}: damaged gzip data ({e})", file=str(path)) from e
    except OSError as e:
        raise InputError(f"cannot read {what}: {e.strerror or e}", file=str(path)) from e
    except UnicodeDecodeError as e:
        raise InputError(f"cannot read {what}: not a text file (byte {e.start} is not UTF-8)",
                         file=str(path)) from e


def open_text(path: Path) -> TextIO:
    """A text stream over `path` (gzipped or not, BOM dropped) for a look at its start."""
    with path.open("rb") as f:
        gz = f.read(2) == GZIP_MAGIC
    if gz:
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace")
    return path.open(encoding="utf-8-sig", errors="replace")


def _umask() -> int:
    """The process umask (reading it means setting it; put it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode_for(path: Path) -> int:
    """What `open(path, "w")` would give: an existing file's mode, else 0666 less umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so a failure never leaves half a file.

    The temp file is created 0600; it gets the mode a plain write would have given (the
    umask's, or the replaced file's) before it takes the file's place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_output(path: Path, flag: str, suffixes: tuple[str, ...] | None = None) -> None:
    """Refuse an output path that cannot work before any work is done (`flag` names it)."""
    if path.is_dir():
        raise InputError(f"is a directory; {flag} needs a file name", file=str(path),
                         field=flag)
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"{flag} writes {', '.join(suffixes)} files; name one of those",
                         file=str(path), field=flag)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create its directory: {e.strerror or e}", file=str(path),
                         field=flag) from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent}: permission denied", file=str(path),
                         field=flag)


@contextmanager
def output_errors(path: Path, flag: str) -> Iterator[None]:
    """Turn a file system's refusal to write `path` into the usual one-line error."""
    try:
        yield
    except OSError as e:
        raise InputError(f"cannot write: {e.strerror or e}", file=str(path),
                         field=flag) from None
