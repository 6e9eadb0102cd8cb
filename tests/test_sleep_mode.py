"""Sleep mode as vLLM's development endpoints: /sleep, /wake_up, /is_sleeping.

Real servers on loopback. Sleeping pauses the scheduler as vLLM ≥ 0.17 does: requests
sent while asleep queue until wake-up, and what is in flight is aborted (the default),
run to completion (``mode=wait``) or frozen (``mode=keep``).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import RunningServer
from prometheus_client.parser import text_string_to_metric_families

from llmsim.runtime.sleep import SleepController

DEV = {"VLLM_SERVER_DEV_MODE": "1"}
MODEL = "llmsim/sim-model"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
SLOW = ("--time-to-first-token", "0", "--inter-token-latency", "50ms")
"""Fifty tokens take 2.5 s: a stream is surely in flight when the test acts on it."""
MODELS = {"constant": (), "step": ("--latency-model", "step")}


def call(server: RunningServer, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.base_url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples(server: RunningServer, name: str) -> dict[str, float]:
    """``name``'s samples by their most telling label value (or ``""``)."""
    _, text = call(server, "GET", "/metrics")
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name:
                labels = sample.labels
                key = labels.get("sleep_state") or labels.get("finished_reason") or ""
                found[key] = sample.value
    return found


def sleep_state(server: RunningServer) -> dict[str, float]:
    return samples(server, "vllm:engine_sleep_state")


def sleeping(server: RunningServer) -> bool:
    answer: bool = json.loads(call(server, "GET", "/is_sleeping")[1])["is_sleeping"]
    return answer


class Stream(threading.Thread):
    """A streamed chat request read in the background: token times and how it ended."""

    def __init__(self, server: RunningServer, max_tokens: int) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.body = {
            **CHAT,
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        self.times: list[float] = []
        self.finish_reason: str | None = None
        self.completion_tokens: int | None = None
        self.start()

    def run(self) -> None:
        request = urllib.request.Request(
            self.server.base_url + "/v1/chat/completions",
            data=json.dumps(self.body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            for line in response:
                if not line.startswith(b"data: {"):
                    continue
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    self.completion_tokens = chunk["usage"]["completion_tokens"]
                for choice in chunk["choices"]:
                    if choice["delta"].get("content"):
                        self.times.append(time.monotonic())
                    if choice["finish_reason"] is not None:
                        self.finish_reason = choice["finish_reason"]

    def wait_for_tokens(self, count: int) -> None:
        deadline = time.monotonic() + 5
        while len(self.times) < count:
            assert time.monotonic() < deadline, "the stream did not start"
            time.sleep(0.01)

    def result(self) -> tuple[str | None, int | None]:
        self.join(10)
        assert not self.is_alive(), "the stream did not end"
        return self.finish_reason, self.completion_tokens


def test_without_dev_mode_the_endpoints_do_not_exist(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--enable-sleep-mode")
    assert call(server, "POST", "/sleep")[0] == 404
    assert call(server, "POST", "/wake_up")[0] == 404
    assert call(server, "GET", "/is_sleeping")[0] == 404


def test_dev_mode_without_sleep_mode(llmsim_server: Callable[..., RunningServer]) -> None:
    server = llmsim_server(env=DEV)
    status, body = call(server, "GET", "/is_sleeping")
    assert status == 200
    assert json.loads(body) == {"is_sleeping": False}
    status, body = call(server, "POST", "/sleep?level=1")
    assert status == 500
    assert "Sleep mode is not enabled" in json.loads(body)["error"]["message"]
    assert call(server, "POST", "/v1/chat/completions", CHAT)[0] == 200
    assert sleep_state(server) == {}  # vLLM registers the gauge only with sleep mode


def test_requests_sent_while_asleep_queue_until_wake_up(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--enable-sleep-mode", "--max-model-len", "512", env=DEV)
    assert sleep_state(server) == {"awake": 1.0, "weights_offloaded": 0.0, "discard_all": 0.0}
    assert call(server, "POST", "/sleep?level=1") == (200, b"")
    assert sleeping(server)
    assert sleep_state(server) == {"awake": 0.0, "weights_offloaded": 1.0, "discard_all": 0.0}
    assert call(server, "GET", "/v1/models")[0] == 200  # needs no engine

    embedding = {"model": MODEL, "input": "hi"}
    completion = {"model": MODEL, "prompt": "hi", "max_tokens": 3}
    with ThreadPoolExecutor(3) as pool:
        pending = [
            pool.submit(call, server, "POST", "/v1/chat/completions", {**CHAT, "max_tokens": 3}),
            pool.submit(call, server, "POST", "/v1/completions", completion),
            pool.submit(call, server, "POST", "/v1/embeddings", embedding),
        ]
        time.sleep(0.5)
        assert not any(future.done() for future in pending)  # accepted, not refused
        assert samples(server, "vllm:num_requests_waiting")[""] == 3
        assert samples(server, "vllm:num_requests_running")[""] == 0
        assert call(server, "POST", "/wake_up")[0] == 200
        answers = [future.result(timeout=10) for future in pending]
    assert [status for status, _ in answers] == [200, 200, 200]
    chat = json.loads(answers[0][1])
    assert chat["choices"][0]["finish_reason"] == "length"
    assert chat["usage"]["completion_tokens"] == 3
    assert len(json.loads(answers[2][1])["data"][0]["embedding"]) > 0
    assert not sleeping(server)
    assert sleep_state(server)["awake"] == 1.0


def test_waking_the_weights_lets_requests_flow_while_the_kv_cache_sleeps(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--enable-sleep-mode", env=DEV)
    assert call(server, "POST", "/sleep?level=1")[0] == 200
    assert call(server, "POST", "/wake_up?tags=weights")[0] == 200
    assert call(server, "POST", "/v1/chat/completions", CHAT)[0] == 200  # scheduling resumed
    assert sleeping(server)  # the KV cache is still asleep
    assert sleep_state(server) == {"awake": 0.0, "weights_offloaded": 1.0, "discard_all": 0.0}
    assert call(server, "POST", "/wake_up?tags=kv_cache")[0] == 200
    assert not sleeping(server)
    assert sleep_state(server) == {"awake": 1.0, "weights_offloaded": 0.0, "discard_all": 0.0}

    assert call(server, "POST", "/sleep?level=2")[0] == 200
    assert sleep_state(server) == {"awake": 0.0, "weights_offloaded": 0.0, "discard_all": 1.0}
    assert call(server, "POST", "/wake_up")[0] == 200
    assert sleep_state(server)["awake"] == 1.0

    # Level 0 pauses scheduling only; the virtual "scheduling" tag wakes it.
    assert call(server, "POST", "/sleep?level=0&mode=keep")[0] == 200
    assert sleeping(server)
    assert sleep_state(server) == {"awake": 0.0, "weights_offloaded": 0.0, "discard_all": 0.0}
    assert call(server, "POST", "/wake_up?tags=scheduling")[0] == 200
    assert not sleeping(server)
    assert sleep_state(server)["awake"] == 1.0


def test_invalid_level_mode_or_tag_is_a_bad_request(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--enable-sleep-mode", env=DEV)
    for query, param in [
        ("level=3", "level"),
        ("level=-1", "level"),
        ("level=one", "level"),
        ("mode=pause", "mode"),
        ("level=0&mode=", "mode"),
    ]:
        status, body = call(server, "POST", f"/sleep?{query}")
        assert status == 400, query
        error = json.loads(body)["error"]
        assert error["param"] == param, query
        assert error["type"] == "BadRequestError"
    assert (
        "Invalid pause mode: pause"
        in json.loads(call(server, "POST", "/sleep?mode=pause")[1])["error"]["message"]
    )
    assert not sleeping(server)  # nothing was paused
    assert call(server, "POST", "/wake_up?tags=gpu")[0] == 400


@pytest.mark.parametrize("model", MODELS)
def test_abort_ends_streams_in_flight_with_their_tokens(
    llmsim_server: Callable[..., RunningServer], model: str
) -> None:
    server = llmsim_server("--enable-sleep-mode", *SLOW, *MODELS[model], env=DEV)
    stream = Stream(server, max_tokens=200)
    stream.wait_for_tokens(3)
    asked = time.monotonic()
    assert call(server, "POST", "/sleep") == (200, b"")  # level 1, mode abort
    finish_reason, tokens = stream.result()
    assert time.monotonic() - asked < 1.0
    assert finish_reason == "abort"
    assert tokens is not None
    assert 3 <= tokens < 200
    assert tokens == len(stream.times)  # the answer keeps exactly what was streamed
    assert samples(server, "vllm:request_success_total")["abort"] == 1
    assert samples(server, "vllm:num_requests_running")[""] == 0

    # A non-streamed request in flight gets its partial answer the same way.
    assert call(server, "POST", "/wake_up")[0] == 200
    body = {**CHAT, "max_tokens": 200, "ignore_eos": True}
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(call, server, "POST", "/v1/chat/completions", body)
        time.sleep(0.3)
        assert call(server, "POST", "/sleep?level=0&mode=abort")[0] == 200
        status, raw = pending.result(timeout=5)
    assert status == 200
    choice = json.loads(raw)["choices"][0]
    assert choice["finish_reason"] == "abort"
    assert len(choice["message"]["content"]) > 0
    assert choice["stop_reason"] is None


def test_wait_returns_once_the_requests_in_flight_finished(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--enable-sleep-mode", *SLOW, env=DEV)
    stream = Stream(server, max_tokens=12)
    stream.wait_for_tokens(2)
    asked = time.monotonic()
    assert call(server, "POST", "/sleep?mode=wait")[0] == 200
    assert time.monotonic() - asked >= 0.3  # about 9 more tokens at 50 ms
    assert samples(server, "vllm:num_requests_running")[""] == 0
    assert samples(server, "vllm:request_success_total")["length"] == 1
    assert stream.result() == ("length", 12)
    assert sleeping(server)
    assert call(server, "POST", "/wake_up")[0] == 200


@pytest.mark.parametrize("model", MODELS)
def test_keep_freezes_streams_until_wake_up(
    llmsim_server: Callable[..., RunningServer], model: str
) -> None:
    server = llmsim_server("--enable-sleep-mode", *SLOW, *MODELS[model], "--no-dashboard", env=DEV)
    stream = Stream(server, max_tokens=12)
    stream.wait_for_tokens(2)
    assert call(server, "POST", "/sleep?mode=keep")[0] == 200  # level 1: KV cache dropped
    asleep = time.monotonic()
    time.sleep(0.6)
    woken = time.monotonic()
    frozen = [t for t in stream.times if asleep + 0.02 < t < woken]
    assert frozen == []  # not a token while asleep
    assert len(stream.times) < 12
    assert samples(server, "vllm:request_success_total").get("abort", 0) == 0
    if model == "step":
        assert samples(server, "vllm:kv_cache_usage_perc")[""] == 0.0  # its blocks went too
    assert call(server, "POST", "/wake_up")[0] == 200
    assert stream.result() == ("length", 12)
    gaps = [b - a for a, b in zip(stream.times, stream.times[1:], strict=False)]
    assert max(gaps) >= 0.5  # the pause shows in the stream, no token was dropped


def test_level_0_keeps_the_prefix_cache_and_level_1_drops_it(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        *("--enable-sleep-mode", "--latency-model", "step", "--block-size", "16"),
        *("--enable-prompt-tokens-details", "--max-model-len", "512"),
        env=DEV,
    )
    prompt = " ".join(f"w{k}" for k in range(80))
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 1}

    def cached() -> int:
        status, raw = call(server, "POST", "/v1/completions", body)
        assert status == 200
        details = json.loads(raw)["usage"].get("prompt_tokens_details") or {}
        return int(details.get("cached_tokens", 0))

    assert cached() == 0
    assert cached() > 0
    assert call(server, "POST", "/sleep?level=0")[0] == 200
    assert call(server, "POST", "/wake_up")[0] == 200
    assert cached() > 0  # level 0 leaves the memory alone
    assert call(server, "POST", "/sleep?level=1")[0] == 200
    assert call(server, "POST", "/wake_up")[0] == 200
    assert cached() == 0  # level 1 discarded the KV cache


class PausableEngine:
    """An engine with a KV cache and a scheduler: sleeping pauses, then drops the cache."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def pause(self, mode: str) -> None:
        self.calls.append(f"pause {mode}")

    def resume(self) -> None:
        self.calls.append("resume")

    def drop_kv_cache(self) -> None:
        self.calls.append("drop")


async def test_the_controller_pauses_drops_and_resumes() -> None:
    engine = PausableEngine()
    controller = SleepController(engine, enabled=True)
    await controller.sleep(0, "keep")
    assert engine.calls == ["pause keep"]
    assert controller.is_sleeping
    assert controller.level == 0
    controller.wake_up(["scheduling"])
    assert not controller.is_sleeping
    await controller.sleep(2)
    assert engine.calls[1:] == ["resume", "pause abort", "drop"]
    assert controller.level == 2
    controller.wake_up(["kv_cache"])
    assert controller.is_sleeping
    assert controller.level == 2
    controller.wake_up()
    assert not controller.is_sleeping
    assert controller.level == 0
