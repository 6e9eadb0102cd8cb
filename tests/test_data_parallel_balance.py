"""vLLM's internal data-parallel balancing and layouts, without a server."""

from __future__ import annotations

import pytest

from llmsim.engine import Engine
from llmsim.engine.data_parallel import DataParallelEngines, EngineLoad, load_score, pick_engine
from llmsim.settings.data_parallel import data_parallel_layout
from llmsim.settings.model import ConfigError, Settings
from llmsim.settings.sources import load_settings

IDLE = EngineLoad(0, 0, 0.0)


def test_the_shortest_queue_wins() -> None:
    loads = [EngineLoad(0, 3, 0.2), EngineLoad(1, 1, 0.2), EngineLoad(0, 1, 0.2)]
    assert pick_engine(loads, start=0) == 2


def test_ties_go_to_the_first_engine_from_the_start() -> None:
    assert [pick_engine([IDLE, IDLE, IDLE], start) for start in range(4)] == [0, 1, 2, 0]


def test_waiting_on_a_full_kv_cache_weighs_more() -> None:
    full = EngineLoad(waiting=1, running=0, kv_usage=1.0)  # 1 + 1 x 6 x 0.5
    busy = EngineLoad(waiting=0, running=3, kv_usage=1.0)
    assert load_score(full) == pytest.approx(4.0)
    assert pick_engine([full, busy], start=0) == 1
    half = EngineLoad(waiting=1, running=0, kv_usage=0.5)  # no penalty up to half full
    assert load_score(half) == 1.0
    assert pick_engine([half, busy], start=0) == 0


def test_idle_engines_take_turns_and_a_rank_is_found_by_its_label() -> None:
    settings = Settings()
    engines = DataParallelEngines([Engine(settings) for _ in range(2)], [2, 3])
    assert [engines.choose() for _ in range(4)] == [0, 1, 0, 1]
    assert (engines.index_of(3), engines.index_of(0)) == (1, None)


@pytest.mark.parametrize(
    ("flags", "mode", "ranks"),
    [
        ({}, "internal", (0,)),
        ({"data_parallel_size": "3"}, "internal", (0, 1, 2)),
        ({"data_parallel_size": "3", "dp_ports": True}, "ports", (0, 1, 2)),
        ({"data_parallel_size": "4", "data_parallel_rank": "3"}, "external", (3,)),
        ({"data_parallel_size": "4", "data_parallel_size_local": "2"}, "internal", (0, 1, 2, 3)),
        (
            {
                "data_parallel_size": "4",
                "data_parallel_size_local": "2",
                "data_parallel_start_rank": "2",
            },
            "hybrid",
            (2, 3),
        ),
        (
            {
                "data_parallel_size": "4",
                "data_parallel_size_local": "2",
                "data_parallel_hybrid_lb": True,
            },
            "hybrid",
            (0, 1),
        ),
        (  # vLLM turns a one-rank node into external balancing
            {
                "data_parallel_size": "4",
                "data_parallel_size_local": "1",
                "data_parallel_start_rank": "3",
            },
            "external",
            (3,),
        ),
    ],
)
def test_layouts(flags: dict[str, object], mode: str, ranks: tuple[int, ...]) -> None:
    layout = data_parallel_layout(load_settings(flags).settings)
    assert (layout.mode, layout.ranks) == (mode, ranks)


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (
            {"data_parallel_size": "2", "data_parallel_rank": "2"},
            "--data-parallel-rank: must be smaller than data-parallel-size (2)",
        ),
        (
            {"data_parallel_external_lb": True},
            "--data-parallel-external-lb: needs --data-parallel-rank",
        ),
        (
            {"data_parallel_size": "4", "data_parallel_hybrid_lb": True},
            "--data-parallel-hybrid-lb: needs --data-parallel-size-local",
        ),
        (
            {
                "data_parallel_size": "4",
                "data_parallel_size_local": "3",
                "data_parallel_start_rank": "2",
            },
            "--data-parallel-start-rank: ranks 2..4 go past data-parallel-size (4)",
        ),
        (
            {"data_parallel_size": "2", "data_parallel_rank": "1", "dp_ports": True},
            "--dp-ports: serves every rank itself: drop --data-parallel-rank",
        ),
    ],
)
def test_flags_that_make_no_layout_are_refused(flags: dict[str, object], line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(flags)
    assert caught.value.lines == [line]


def test_external_and_hybrid_together_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            {"data_parallel_size": "4", "data_parallel_rank": "1", "data_parallel_start_rank": "0"}
        )
    assert caught.value.lines[0].startswith(
        "--data-parallel-rank: cannot use both external and hybrid data-parallel load balancing"
    )
