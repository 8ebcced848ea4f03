"""The cyclic garbage collector, tuned for a consumer loop.

Every record becomes a few dozen short-lived containers (the decoded event, its feature
dict, its result), and the per-entity state holds millions of long-lived ones. At
CPython's default thresholds (700, 10, 10) a young collection runs every 700 allocations
and the older ones walk ever more of that state: a 100k-record replay spent a quarter of
its time in the collector (`vigil replay`, 33k records/s; 43k at the thresholds below, 44k
with the collector off). Nothing on the hot path forms reference cycles, so collecting
rarely costs little memory; the collector stays on for the cycles libraries make.

What is alive at start and a restored partition state are frozen (``gc.freeze``, as
Instagram's services do): long-lived by construction, they need no walking. It is cheap
insurance more than a gain: the columnar restore leaves few tracked objects (unpickling
``stream.bench_state.build_extractor(1_000_000, 1_000_000)`` left 19k, a full collection
of 51 ms; collecting the young ones and freezing took 2 ms).
"""

from __future__ import annotations

import gc

# A young collection every 50,000 net allocations (about a batch of events), the middle
# generation every 50 of those, the full one every 100 middle ones (and, by CPython's own
# rule, only once the survivors since the last one are a quarter of the old generation).
THRESHOLDS = (50_000, 50, 100)


def tune_collector() -> None:
    """Collect rarely: set the thresholds above (process-wide)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_long_lived() -> None:
    """Move every object alive now out of the collector's reach, after collecting the
    young garbage (cheap: the old generation is not walked)."""
    gc.collect(1)
    gc.freeze()
