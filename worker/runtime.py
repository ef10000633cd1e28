"""Process-wide tuning of the cyclic garbage collector: for the long-running processes (the worker
and the gateway) and for the batch tools (replay, simulate)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

GC_THRESHOLDS = (20_000, 20, 100)
"""The cyclic GC's default first threshold (700 allocations) runs a collection every few messages,
and the older generations, holding the long-lived caches, follow often: measured at ~15% of the
worker's CPU. A batch or a request allocates many short-lived, acyclic objects; collecting every
20,000 keeps memory flat at a fraction of the cost."""


def settle_gc() -> None:
    """Call once start-up has loaded what lives for the whole run."""
    gc.freeze()  # keep the cyclic GC off what exists now
    gc.set_threshold(*GC_THRESHOLDS)


@contextmanager
def without_cyclic_gc() -> Iterator[None]:
    """Run a batch job with the cyclic GC off, then collect once.

    Decoding and settling a stream allocates millions of young, acyclic objects (models, events,
    state) and keeps a growing state; the GC rescans them all, again and again: measured at ~15% of
    replay's time and ~20% of simulate's. Nothing these jobs keep forms a reference cycle (plain
    data, freed by reference counting), so they run without it; a collection at the end clears
    whatever a library may have left in a cycle. Nested uses leave the GC as the outer one set it.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
            gc.collect(1)
