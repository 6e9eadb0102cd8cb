"""Spreading a fleet's instances over the ``workers`` backend's processes."""

from __future__ import annotations

import os

import pytest

from llmsim.pool.spread import spread, worker_count


@pytest.mark.parametrize(
    ("count", "workers", "sizes"),
    [
        (64, 2, [32, 32]),
        (7, 2, [4, 3]),
        (10, 4, [3, 3, 2, 2]),
        (5, 5, [1, 1, 1, 1, 1]),
        (3, 8, [1, 1, 1]),  # never an empty worker
        (1, 1, [1]),
    ],
)
def test_instances_are_spread_evenly_larger_groups_first(
    count: int, workers: int, sizes: list[int]
) -> None:
    groups = spread(list(range(count)), workers)
    assert [len(group) for group in groups] == sizes


def test_each_worker_holds_neighbouring_instances_in_order() -> None:
    groups = spread(["a", "b", "c", "d", "e"], 2)
    assert groups == [["a", "b", "c"], ["d", "e"]]
    assert [item for group in groups for item in group] == ["a", "b", "c", "d", "e"]


def test_no_instances_make_no_workers() -> None:
    assert spread([], 4) == []


def test_at_least_one_worker_is_needed() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        spread([1, 2], 0)


def test_the_default_is_one_worker_per_usable_core() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert worker_count(None, 1000) == cores
    assert worker_count(None, 1) == 1  # never more workers than instances


def test_an_asked_for_count_is_capped_by_the_instances() -> None:
    assert worker_count(3, 64) == 3
    assert worker_count(8, 5) == 5
    assert worker_count(1, 64) == 1
