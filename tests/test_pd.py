"""Disaggregated prefill/decode: a prefill and a decode instance, routed as llm-d's sidecar does."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RunningServer, free_port, free_port_run, port_is_free, run_cli
from prometheus_client.parser import text_string_to_metric_families

MODEL = "llmsim/sim-model"
PREFILL_TTFT = "3s"  # what a local prefill costs on both instances
TRANSFER = "300ms"  # what pulling the KV cache costs the decode instance


def post(server: RunningServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def first_token_time(server: RunningServer, body: dict[str, Any]) -> tuple[float, str]:
    """Seconds to the first content chunk of a stream, and the whole text."""
    request = urllib.request.Request(
        server.base_url + "/v1/chat/completions",
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    started = time.monotonic()
    first: float | None = None
    text = ""
    with urllib.request.urlopen(request, timeout=30) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk["choices"]:
                content = choice["delta"].get("content")
                if content:
                    first = first if first is not None else time.monotonic() - started
                    text += content
    assert first is not None
    return first, text


def success_by_reason(server: RunningServer) -> dict[str, float]:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        sample.labels["finished_reason"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "vllm:request_success"
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def test_pd_pair_routed_like_the_sidecar(llmsim_server: Callable[..., RunningServer]) -> None:
    common = ["--time-to-first-token", PREFILL_TTFT, "--inter-token-latency", "0"]
    prefill = llmsim_server(*common, env={"VLLM_NIXL_SIDE_CHANNEL_PORT": "5700"})
    decode = llmsim_server(*common, "--kv-cache-transfer-latency", TRANSFER)
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me a long story. " * 20}],
        "max_tokens": 20,
        "ignore_eos": True,
    }

    # 1. The sidecar sends a prefill-only copy to the prefill instance.
    prefill_request = {
        **request,
        "stream": False,
        "max_tokens": 1,
        "max_completion_tokens": 1,
        "kv_transfer_params": {
            "do_remote_decode": True,
            "do_remote_prefill": False,
            "remote_engine_id": None,
            "remote_block_ids": None,
            "remote_host": None,
            "remote_port": None,
        },
    }
    started = time.monotonic()
    answer = post(prefill, "/v1/chat/completions", prefill_request)
    assert time.monotonic() - started >= 2.5  # the prefill instance did compute the prompt
    assert answer["usage"]["completion_tokens"] == 1
    assert answer["choices"][0]["finish_reason"] == "length"
    params = answer["kv_transfer_params"]
    assert params["do_remote_prefill"] is True
    assert params["do_remote_decode"] is False
    assert params["remote_host"] == "localhost"
    assert params["remote_port"] == 5700
    assert isinstance(params["remote_engine_id"], str)
    assert params["remote_engine_id"]
    assert params["remote_request_id"] == answer["id"]
    prompt_tokens = answer["usage"]["prompt_tokens"]
    assert len(params["remote_block_ids"]) == -(-prompt_tokens // 16)
    assert min(params["remote_block_ids"]) >= 1  # vLLM's block 0 is its null block
    assert success_by_reason(prefill)["length"] == 1

    # 2. It sends the original request with the prefill's kv_transfer_params to the decoder:
    # the first token comes after the transfer time, not after a prefill.
    ttft, text = first_token_time(decode, {**request, "kv_transfer_params": params})
    assert 0.25 <= ttft < 2.0
    assert text

    # Without kv_transfer_params (or with incomplete ones) the decoder prefills itself.
    incomplete = {"do_remote_prefill": True, "remote_block_ids": [1]}
    ttft_local, _ = first_token_time(decode, {**request, "kv_transfer_params": incomplete})
    assert ttft_local >= 2.5


def test_prefill_side_generates_what_it_is_asked_and_hands_on_length_capped_blocks(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    """vLLM does not force a prefill request to one token (the router sets ``max_tokens``),
    and its NIXL connector returns ``kv_transfer_params`` only for a request that stopped on
    its length."""
    prefill = llmsim_server("--inter-token-latency", "0")
    request = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "ignore_eos": True,
        "kv_transfer_params": {"do_remote_decode": True},
    }
    answer = post(prefill, "/v1/chat/completions", request)
    assert answer["usage"]["completion_tokens"] == 5
    assert answer["kv_transfer_params"]["do_remote_prefill"] is True
    stopped = post(prefill, "/v1/chat/completions", {**request, "max_tokens": 50, "stop": [" "]})
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped.get("kv_transfer_params") is None


def test_kv_transfer_params_must_be_an_object(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server()
    body = {"model": MODEL, "prompt": "hi", "kv_transfer_params": [1]}
    with pytest.raises(urllib.error.HTTPError) as info:
        post(server, "/v1/completions", body)
    assert info.value.code == 400
    assert json.loads(info.value.read())["error"]["param"] == "kv_transfer_params"


def test_events_publisher_per_rank_and_start_error(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    replay = free_port_run(2)
    config = json.dumps(
        {
            "enable_kv_cache_events": True,
            "endpoint": f"tcp://127.0.0.1:{free_port_run(2)}",
            "replay_endpoint": f"tcp://127.0.0.1:{replay}",
        }
    )
    server = llmsim_server("--kv-events-config", config, "-dp", "2")  # two engines, one port
    assert not port_is_free(replay)  # rank 0's replay socket
    assert not port_is_free(replay + 1)  # rank 1's, on port + 1
    # A second instance cannot open the same replay port: a one-line start-up error.
    result = run_cli("serve", "--port", str(free_port()), "--kv-events-config", config)
    assert result.returncode == 1
    assert "KV events: cannot open" in result.stderr
    assert server.stop() == 0
    assert port_is_free(replay)


def test_pd_fleet_example_describes_a_pair() -> None:
    from pathlib import Path

    from llmsim.pool.fleet import load_fleet

    example = Path(__file__).resolve().parent.parent / "examples" / "pd_fleet.toml"
    plan = load_fleet(example)
    prefill, decode = (instance.settings for instance in plan.instances)
    assert decode.kv_cache_transfer_time_per_token > 0
    assert prefill.kv_cache_transfer_time_per_token == 0
    assert prefill.kv_events_config is not None
    assert decode.kv_events_config is not None
    assert prefill.kv_events_config.endpoint != decode.kv_events_config.endpoint
