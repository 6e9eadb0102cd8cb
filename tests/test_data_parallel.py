"""vLLM's data parallelism, as a user runs it: ``llmsim serve -dp N`` is one port in front of
N engines, balanced as vLLM's API server balances them, every engine on the one /metrics."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RunningServer, listening_ports
from prometheus_client.parser import text_string_to_metric_families

MODEL = "llmsim/sim-model"
SLOW = ["--max-num-seqs", "1", "--inter-token-latency", "100ms", "--no-access-log"]


def by_engine(server: RunningServer, name: str, **labels: str) -> dict[str, float]:
    """``name``'s value per ``engine`` label, over the samples that carry ``labels``."""
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                values[sample.labels["engine"]] = sample.value
    return values


def send(
    server: RunningServer, path: str, body: dict[str, Any], rank: int | None = None
) -> tuple[int, str]:
    """POST ``body``; with ``rank``, to that engine (vLLM's header). The status and text."""
    headers = {"Content-Type": "application/json"}
    if rank is not None:
        headers["X-data-parallel-rank"] = str(rank)
    request = urllib.request.Request(server.base_url + path, json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def complete(server: RunningServer, tokens: int, rank: int | None = None) -> dict[str, Any]:
    """A completion of ``tokens`` tokens (on engine ``rank`` if given)."""
    body = {"model": MODEL, "prompt": "hi", "max_tokens": tokens, "ignore_eos": True}
    status, text = send(server, "/v1/completions", body, rank)
    assert status == 200, text
    answer: dict[str, Any] = json.loads(text)
    return answer


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_two_engines_behind_one_port_run_two_requests_at_once(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("-dp", "2", *SLOW)
    if sys.platform == "linux":  # one API server, one port
        assert listening_ports(server.process.pid) == {server.port}
    lora = {"lora_name": "a", "lora_path": "a"}
    assert send(server, "/v1/load_lora_adapter", lora)[0] == 200  # every engine loads it
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        replies = [pool.submit(complete, server, 5) for _ in range(2)]
        # One running on each engine: side by side, though each engine runs one at a time.
        wait_for(lambda: by_engine(server, "vllm:num_requests_running") == {"0": 1.0, "1": 1.0})
        for reply in replies:
            assert reply.result(timeout=20)["usage"]["completion_tokens"] == 5
    success = by_engine(server, "vllm:request_success_total", finished_reason="length")
    assert success == {"0": 1.0, "1": 1.0}
    status, text = send(server, "/v1/completions", {"model": "a", "prompt": "hi"}, rank=1)
    assert (status, json.loads(text)["model"]) == (200, "a")


def test_a_request_goes_to_the_less_loaded_engine(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("-dp", "2", *SLOW)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        pinned = [pool.submit(complete, server, 8, 0) for _ in range(2)]  # engine 0: 1 + 1 queued
        wait_for(lambda: by_engine(server, "vllm:num_requests_waiting") == {"0": 1.0, "1": 0.0})
        free = pool.submit(complete, server, 1)  # round-robin would pick engine 0 next
        free.result(timeout=20)
        assert by_engine(server, "vllm:request_success_total", finished_reason="length") == {
            "0": 0.0,
            "1": 1.0,
        }
        for reply in pinned:
            reply.result(timeout=20)
    status, text = send(server, "/v1/completions", {"model": MODEL, "prompt": "x"}, rank=2)
    assert status == 400
    assert "data_parallel_rank 2 is out of range [0, 2)" in text


@pytest.mark.parametrize(
    ("args", "engines"),
    [
        (["--data-parallel-size", "4", "--data-parallel-rank", "3"], ["3"]),
        (["-dp", "4", "-dpl", "2", "-dpr", "2"], ["2", "3"]),  # hybrid: this node's ranks
    ],
)
def test_ranks_label_the_engines(
    llmsim_server: Callable[..., RunningServer], args: list[str], engines: list[str]
) -> None:
    server = llmsim_server(*args)
    complete(server, 1)
    assert sorted(by_engine(server, "vllm:num_requests_running")) == engines
    success = by_engine(server, "vllm:request_success_total", finished_reason="length")
    assert sum(success.values()) == 1.0
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    for family in ("vllm:num_requests_running gauge", "vllm:time_to_first_token_seconds histogram"):
        assert text.count(f"# TYPE {family}") == 1  # one family, a series per engine


def test_sleep_puts_every_engine_to_sleep(llmsim_server: Callable[..., RunningServer]) -> None:
    server = llmsim_server("-dp", "2", "--enable-sleep-mode", env={"VLLM_SERVER_DEV_MODE": "1"})
    assert send(server, "/sleep?level=1", {})[0] == 200
    assert by_engine(server, "vllm:engine_sleep_state", sleep_state="awake") == {"0": 0, "1": 0}
    assert send(server, "/wake_up", {})[0] == 200
    assert by_engine(server, "vllm:engine_sleep_state", sleep_state="awake") == {"0": 1, "1": 1}
