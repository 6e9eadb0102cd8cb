"""The cyclic garbage collector of a serving process: out of the steps' way.

A collector pass stops the event loop, and with it the steps of every instance on it.
Start-up's objects (the imports, every instance's app and engines) live as long as the
process, so they are frozen out of the passes. What a loaded server makes afterwards is
mostly requests in flight: a few hundred milliseconds each, about 65 tracked objects,
hundreds of requests at once. Each outlives a young-generation pass (every 700 new
objects, a few times a second) and is promoted; with CPython's default thresholds the
middle generation was then scanned every ten young passes, taking 10-20 ms with 640
requests in flight per process, and the requests still running were promoted again, into
the old generation, whose growth set off full passes of 40-120 ms. Measured in a worker
holding 32 step-model instances with 20 requests each: 0.5 s of collector stalls per
5 s, and each instance's mean step 1-2 ms late.

So, once serving, the young generation keeps its threshold (its passes stay a
millisecond or two: what they scan is the last few milliseconds' objects) and the
middle one is scanned a hundred times less often. Cyclic garbage is still collected:
young cycles at the next young pass, older ones at the next middle pass.
"""

from __future__ import annotations

import gc

MIDDLE_THRESHOLD = 1000
"""Young passes between two passes over the middle generation (CPython's default: 10)."""


def settle_for_serving() -> None:
    """Freeze start-up's objects and scan the middle generation rarely (module docstring)."""
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if young:  # 0: the collector is off, leave it so
        gc.set_threshold(young, max(middle, MIDDLE_THRESHOLD), old)
