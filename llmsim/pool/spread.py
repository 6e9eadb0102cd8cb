"""How the ``workers`` backend shares instances among its worker processes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def worker_count(wanted: int | None, instances: int) -> int:
    """Worker processes to start: ``wanted`` (default one per core), at most one per instance."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(wanted or cores or 1, instances))


def spread(items: Sequence[T], workers: int) -> list[list[T]]:
    """``items`` in ``workers`` consecutive groups whose sizes differ by at most one.

    Consecutive, so that a worker holds neighbouring ports (a fleet's ``dp_ports`` ranks
    stay together); the larger groups come first. No group is empty.
    """
    if workers < 1:
        raise ValueError("at least one worker")
    count = min(workers, len(items))
    size, extra = divmod(len(items), count) if count else (0, 0)
    groups: list[list[T]] = []
    start = 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        groups.append(list(items[start:end]))
        start = end
    return groups
