"""vLLM's development endpoints (VLLM_SERVER_DEV_MODE=1) on real servers: cache resets,
pause and resume, aborting requests by id, server information; 404 without dev mode."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conftest import RunningServer, free_port
from test_kv_events import AllBlocksCleared, Subscriber
from test_kv_events_e2e import events_after, history

MODEL = "llmsim/sim-model"
DEV = {"VLLM_SERVER_DEV_MODE": "1"}
SLOW = ("--inter-token-latency", "40ms")
"""Forty tokens take 1.6 s: a stream is surely in flight when the test acts on it."""
DEV_PATHS = [
    ("POST", "/reset_prefix_cache"),
    ("POST", "/reset_mm_cache"),
    ("POST", "/reset_encoder_cache"),
    ("POST", "/pause"),
    ("POST", "/resume"),
    ("GET", "/is_paused"),
    ("POST", "/abort_requests"),
    ("GET", "/server_info"),
    ("POST", "/sleep"),
    ("GET", "/is_sleeping"),
]


def call(
    server: RunningServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        server.base_url + path, data=data, method=method, headers=headers or {}
    )
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None


def chat(server: RunningServer, tokens: int, request_id: str | None = None) -> dict[str, Any]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": tokens,
        "ignore_eos": True,
    }
    headers = {"X-Request-Id": request_id} if request_id else None
    status, answer = call(server, "POST", "/v1/chat/completions", body, headers)
    assert status == 200, answer
    result: dict[str, Any] = answer
    return result


def cached_tokens(server: RunningServer, prompt: str) -> int:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 1}
    status, answer = call(server, "POST", "/v1/completions", body)
    assert status == 200, answer
    details = answer["usage"].get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens", 0))


def test_without_dev_mode_the_endpoints_are_unknown(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(env={"VLLM_SERVER_DEV_MODE": "0"})
    for method, path in DEV_PATHS:
        status, answer = call(server, method, path)
        assert status == 404, (method, path, answer)


def test_reset_prefix_cache_empties_the_cache_and_publishes_all_blocks_cleared(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    port, replay = free_port(), free_port()
    subscriber = Subscriber(port)
    try:
        config = {
            "enable_kv_cache_events": True,
            "endpoint": f"tcp://127.0.0.1:{port}",
            "replay_endpoint": f"tcp://127.0.0.1:{replay}",
        }
        server = llmsim_server(
            *("--latency-model", "step", "--enable-prompt-tokens-details", *SLOW),
            *("--kv-events-config", json.dumps(config)),
            env=DEV,
        )
        prompt = " ".join(f"w{k}" for k in range(80))
        cached_tokens(server, prompt)
        assert cached_tokens(server, prompt) > 0, "the second time the prefix is cached"

        # Running sequences hold blocks: as in vLLM the reset does nothing (still 200) ...
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(chat, server, 40)
            time.sleep(0.3)
            seen = len(history(replay))
            assert call(server, "POST", "/reset_prefix_cache") == (200, None)
            time.sleep(0.3)
            events = [event for _, batch in history(replay)[seen:] for event in batch.events]
            assert not any(isinstance(event, AllBlocksCleared) for event in events)
            # ... unless it may preempt them; they then finish normally.
            status, _ = call(server, "POST", "/reset_prefix_cache?reset_running_requests=true")
            assert status == 200
            events = events_after(
                replay, seen, lambda found: any(isinstance(e, AllBlocksCleared) for e in found)
            )
            assert any(isinstance(event, AllBlocksCleared) for event in events)
            answer = running.result(timeout=20)
        assert answer["choices"][0]["finish_reason"] == "length"
        assert answer["usage"]["completion_tokens"] == 40
        assert cached_tokens(server, prompt) == 0, "the cache was emptied"
        assert call(server, "POST", "/reset_prefix_cache?reset_running_requests=maybe")[0] == 400
    finally:
        subscriber.close()


def test_pause_resume_and_abort_requests_as_vllm(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(*SLOW, env=DEV)
    assert call(server, "GET", "/is_paused") == (200, {"is_paused": False})
    with ThreadPoolExecutor(2) as pool:
        target = pool.submit(chat, server, 40, "abort-me")
        other = pool.submit(chat, server, 10, "leave-me")
        time.sleep(0.2)
        status, answer = call(
            server, "POST", "/abort_requests", {"request_ids": ["chatcmpl-abort-me"]}
        )
        assert (status, answer) == (200, {"status": "aborted", "aborted": 1})
        aborted = target.result(timeout=5)
        assert aborted["choices"][0]["finish_reason"] == "abort"
        assert aborted["usage"]["completion_tokens"] < 40
        assert other.result(timeout=10)["choices"][0]["finish_reason"] == "length"

        assert call(server, "POST", "/pause?mode=keep") == (200, {"status": "paused"})
        assert call(server, "GET", "/is_paused") == (200, {"is_paused": True})
        held = pool.submit(chat, server, 3)
        time.sleep(0.4)
        assert not held.done(), "a paused engine starts nothing"
        assert call(server, "POST", "/resume") == (200, {"status": "resumed"})
        assert held.result(timeout=10)["choices"][0]["finish_reason"] == "length"
    assert call(server, "GET", "/is_paused") == (200, {"is_paused": False})
    status, answer = call(server, "POST", "/pause?mode=sometimes")
    assert status == 400
    assert "Invalid pause mode" in answer["error"]["message"]
    assert call(server, "POST", "/abort_requests", {"request_ids": "x"})[0] == 400
    assert call(server, "POST", "/abort_requests", {}) == (
        200,
        {"status": "aborted", "aborted": 0},
    )


def test_server_info_and_the_caches_a_simulator_does_not_keep(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    env = {**DEV, "VLLM_USE_V1": "1", "VLLM_SECRET_KEY_FILE": "/etc/key"}
    server = llmsim_server("--max-model-len", "2048", "--api-key", "hidden", env=env)
    assert call(server, "POST", "/reset_mm_cache") == (200, None)
    assert call(server, "POST", "/reset_encoder_cache") == (200, None)
    status, info = call(server, "GET", "/server_info?config_format=json")
    assert status == 200
    config = info["vllm_config"]
    assert config["model_config"]["max_model_len"] == 2048
    assert config["scheduler_config"]["max_num_seqs"] == 256
    assert "api_key" not in config["llmsim"]
    assert info["vllm_env"]["VLLM_USE_V1"] == "1"
    assert "VLLM_SECRET_KEY_FILE" not in info["vllm_env"]
    assert "hidden" not in json.dumps(info)
    status, text = call(server, "GET", "/server_info")
    assert status == 200
    assert "max_seq_len=2048" in text["vllm_config"]
    assert call(server, "GET", "/server_info?config_format=yaml")[0] == 400
