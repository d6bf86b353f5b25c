"""Python's cycle collector paused for a replay: CPU the replay need not spend.

Every simulator event allocates short-lived tuples, dicts and records that reference
counting frees the moment they are dropped. The replay makes no garbage cycles worth
collecting, yet the collector keeps scanning its young objects (and, as they age, the
whole trace): 7-9% of a 100k-job replay's CPU. Paused for the replay and restored as it
was afterwards (a cycle made meanwhile is collected then), it changes no figure.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Disable the cycle collector inside the block; re-enable it after if it was on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
