"""Process-wide tuning for a long-running Tact process (the daemon, ``tact tick``)."""

from __future__ import annotations

import gc

# Allocations of container objects between two young-generation collections (default 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for the tick's many short-lived objects.

    Everything alive after start-up (settings, campaigns, SQLAlchemy's metadata, compiled
    templates) is frozen out of the collector's scans, and young collections run less often.
    Each tick allocates a few containers per touchpoint; with the defaults the collector's
    full scans took about a quarter of the tick (bench/README.md). Cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 20)
