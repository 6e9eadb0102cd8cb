"""``--kv-transfer-config`` as vLLM reads it: a connector's role decides what P/D does.

Each instance is asked both P/D questions: a prefill request (``do_remote_decode``: does the
answer carry ``kv_transfer_params``?) and a decode request (``do_remote_prefill``: are the
prompt's tokens received, ``vllm:prompt_tokens_by_source{source="external_kv_transfer"}``,
instead of computed?).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from conftest import RunningServer, post_json, run_cli
from prometheus_client.parser import text_string_to_metric_families

MODEL = "org/m"
PROMPT = "Tell me about Rome. " * 8
REMOTE = {
    "do_remote_prefill": True,
    "do_remote_decode": False,
    "remote_engine_id": "prefill-engine",
    "remote_request_id": "cmpl-1",
    "remote_block_ids": [1, 2, 3],
    "remote_host": "localhost",
    "remote_port": 5600,
    "tp_size": 1,
}


def prefill_answer(server: RunningServer) -> Any:
    """What a prefill request (one token, ``do_remote_decode``) returns as kv_transfer_params."""
    body = {
        "model": MODEL,
        "prompt": PROMPT,
        "max_tokens": 1,
        "kv_transfer_params": {"do_remote_decode": True},
    }
    status, answer = post_json(server, "/v1/completions", body)
    assert status == 200, answer
    return answer.get("kv_transfer_params")


def metric_samples(server: RunningServer, name: str) -> list[Any]:
    """The samples of the ``/metrics`` family ``name``."""
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return [
        sample
        for family in text_string_to_metric_families(text)
        if family.name == name
        for sample in family.samples
    ]


def received_tokens(server: RunningServer) -> float:
    """Prompt tokens received from a prefill instance after one decode request."""
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2, "kv_transfer_params": REMOTE}
    status, answer = post_json(server, "/v1/completions", body)
    assert status == 200, answer
    return sum(
        sample.value
        for sample in metric_samples(server, "vllm:prompt_tokens_by_source")
        if sample.labels.get("source") == "external_kv_transfer" and sample.name.endswith("_total")
    )


def config(role: str, **extra: str) -> str:
    return json.dumps({"kv_connector": "NixlConnector", "kv_role": role, **extra})


def test_llmsims_own_command_line_honours_both_directions(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--model", MODEL)
    assert prefill_answer(server)["do_remote_prefill"] is True
    assert received_tokens(server) > 0


def test_a_vllm_command_line_without_a_connector_ignores_kv_transfer_params(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(MODEL, "--max-num-seqs", "8")
    assert prefill_answer(server) is None
    assert received_tokens(server) == 0


def test_a_producer_hands_blocks_on_under_its_engine_id_and_prefills_itself(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(MODEL, "--kv-transfer-config", config("kv_producer", engine_id="p-0"))
    params = prefill_answer(server)
    assert params["remote_engine_id"] == "p-0"
    assert params["remote_block_ids"]
    assert received_tokens(server) == 0


def test_a_consumer_pulls_blocks_and_hands_none_on(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    # dotted sub-keys, as manifests write them, on llmsim's own command line
    server = llmsim_server(
        "--model",
        MODEL,
        "--kv-transfer-config.kv_connector",
        "NixlConnector",
        "--kv-transfer-config.kv_role=kv_consumer",
    )
    assert prefill_answer(server) is None
    assert received_tokens(server) > 0


def test_kv_both_on_data_parallel_engines_names_each_engine(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        MODEL, "-dp", "2", "--kv-transfer-config", config("kv_both", engine_id="e")
    )
    ids = {prefill_answer(server)["remote_engine_id"] for _ in range(6)}
    assert ids
    assert ids <= {"e_dp0", "e_dp1"}
    assert received_tokens(server) > 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"kv_connector": "NixlConnector"}', "specify kv_disagg_role when kv_connector is set"),
        ('{"kv_connector": "NixlConnector", "kv_role": "kv_prefill"}', "kv_role"),
    ],
)
def test_a_connector_needs_a_known_role(value: str, message: str) -> None:
    result = run_cli("serve", "org/m", "--kv-transfer-config", value)
    assert result.returncode == 2
    assert message in result.stderr


def _fetch_stages(server: RunningServer) -> dict[str, float]:
    samples = metric_samples(server, "vllm:num_requests_kv_fetch_by_stage")
    return {sample.labels["stage"]: sample.value for sample in samples}


@pytest.mark.parametrize("model", ["constant", "step"])
def test_a_consumer_reports_its_kv_fetches_by_stage(
    llmsim_server: Callable[..., RunningServer], model: str
) -> None:
    """vLLM's gauge on a KV consumer: a decode request counts ``in_progress`` while its
    prompt's KV is on the way, and nowhere once it arrived."""
    idle = {"waiting_to_start": 0.0, "in_progress": 0.0, "completed_waiting": 0.0}
    server = llmsim_server(
        MODEL,
        "--kv-transfer-config",
        config("kv_consumer"),
        "--kv-cache-transfer-latency",
        "1s",
        "--latency-model",
        model,
    )
    assert _fetch_stages(server) == idle
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 2, "kv_transfer_params": REMOTE}
    done: list[int] = []
    thread = threading.Thread(
        target=lambda: done.append(post_json(server, "/v1/completions", body)[0])
    )
    thread.start()
    try:
        deadline = time.monotonic() + 0.8
        seen = _fetch_stages(server)
        while seen["in_progress"] != 1.0 and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = _fetch_stages(server)
        assert seen == {**idle, "in_progress": 1.0}
    finally:
        thread.join(10)
    assert done == [200]
    assert _fetch_stages(server) == idle
    if model == "constant":
        plain = llmsim_server(MODEL, "--kv-transfer-config", config("kv_producer"))
        assert _fetch_stages(plain) == {}  # vLLM registers it on a consumer only
