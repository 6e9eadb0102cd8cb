"""Sleep mode as vLLM's development endpoints: /sleep, /wake_up, /is_sleeping."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from conftest import RunningServer
from prometheus_client.parser import text_string_to_metric_families

from llmsim.runtime.sleep import SleepController

DEV = {"VLLM_SERVER_DEV_MODE": "1"}
CHAT = {"model": "llmsim/sim-model", "messages": [{"role": "user", "content": "hi"}]}


def call(server: RunningServer, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.base_url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def sleep_state(server: RunningServer) -> dict[str, float]:
    _, text = call(server, "GET", "/metrics")
    return {
        sample.labels["sleep_state"]: sample.value
        for family in text_string_to_metric_families(text.decode())
        if family.name == "vllm:engine_sleep_state"
        for sample in family.samples
    }


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


def test_sleep_refuse_and_wake(llmsim_server: Callable[..., RunningServer]) -> None:
    server = llmsim_server("--enable-sleep-mode", env=DEV)
    assert sleep_state(server) == {"awake": 1.0, "weights_offloaded": 0.0, "discard_all": 0.0}
    assert call(server, "POST", "/sleep?level=1") == (200, b"")
    assert json.loads(call(server, "GET", "/is_sleeping")[1]) == {"is_sleeping": True}
    assert sleep_state(server) == {"awake": 0.0, "weights_offloaded": 1.0, "discard_all": 0.0}

    status, body = call(server, "POST", "/v1/chat/completions", CHAT)
    assert status == 503
    assert "sleeping" in json.loads(body)["error"]["message"]
    completion = {"model": "llmsim/sim-model", "prompt": "hi"}
    assert call(server, "POST", "/v1/completions", completion)[0] == 503
    embedding = {"model": "llmsim/sim-model", "input": "hi"}
    assert call(server, "POST", "/v1/embeddings", embedding)[0] == 503
    assert call(server, "GET", "/v1/models")[0] == 200  # needs no weights

    # Waking only the weights leaves the KV cache asleep: still sleeping.
    assert call(server, "POST", "/wake_up?tags=weights")[0] == 200
    assert json.loads(call(server, "GET", "/is_sleeping")[1]) == {"is_sleeping": True}
    assert call(server, "POST", "/wake_up?tags=kv_cache")[0] == 200
    assert json.loads(call(server, "GET", "/is_sleeping")[1]) == {"is_sleeping": False}
    assert call(server, "POST", "/v1/chat/completions", CHAT)[0] == 200

    assert call(server, "POST", "/sleep?level=2")[0] == 200
    assert sleep_state(server) == {"awake": 0.0, "weights_offloaded": 0.0, "discard_all": 1.0}
    assert call(server, "POST", "/wake_up")[0] == 200
    assert sleep_state(server)["awake"] == 1.0
    assert call(server, "POST", "/sleep?level=3")[0] == 400
    assert call(server, "POST", "/wake_up?tags=gpu")[0] == 400


class KVCacheEngine:
    """An engine with a KV cache: sleeping must drop it."""

    def __init__(self) -> None:
        self.dropped = 0

    def drop_kv_cache(self) -> None:
        self.dropped += 1


def test_sleep_drops_the_engine_kv_cache() -> None:
    engine = KVCacheEngine()
    controller = SleepController(engine, enabled=True)
    controller.sleep(1)
    assert engine.dropped == 1
    controller.wake_up()
    controller.sleep(2)
    assert engine.dropped == 2
    assert controller.level == 2
