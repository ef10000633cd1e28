"""Process-wide tuning shared by the long-running processes (the worker and the gateway)."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (20_000, 20, 100)
"""The cyclic GC's default first threshold (700 allocations) runs a collection every few messages,
and the older generations, holding the long-lived caches, follow often: measured at ~15% of the
worker's CPU. A batch or a request allocates many short-lived, acyclic objects; collecting every
20,000 keeps memory flat at a fraction of the cost."""


def settle_gc() -> None:
    """Call once start-up has loaded what lives for the whole run."""
    gc.freeze()  # keep the cyclic GC off what exists now
    gc.set_threshold(*GC_THRESHOLDS)
