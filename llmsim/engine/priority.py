"""vLLM's ``--scheduling-policy priority``: who waits first, and who is preempted.

A request's ``priority`` (default 0; lower is served first) orders the waiting queues by
``(priority, arrival)``, so equal priorities keep arrival order and a preempted sequence
goes back ahead of the later arrivals of its priority. When a step needs blocks, the running
sequence last in that order is preempted, where ``fcfs`` preempts the one admitted last.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def enqueue(queue: deque[T], item: T, key: Callable[[T], tuple[int, float]]) -> None:
    """Put ``item`` after every queued item whose key is not greater than its own (new
    arrivals nearly always belong at the end: the scan starts there)."""
    mine = key(item)
    index = len(queue)
    while index and key(queue[index - 1]) > mine:
        index -= 1
    if index == len(queue):
        queue.append(item)
    else:
        queue.insert(index, item)


def last_in_order(running: Sequence[T], key: Callable[[T], tuple[int, float]]) -> int:
    """The index of the running item that goes last: the highest priority value, the
    latest arrival among equals."""
    return max(range(len(running)), key=lambda index: key(running[index]))
