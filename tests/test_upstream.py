"""``llmsim serve --upstream URL``: forward to a real server, simulate when it fails."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from conftest import RunningServer, free_port
from prometheus_client.parser import text_string_to_metric_families

CHAT = {"messages": [{"role": "user", "content": "who answers?"}], "max_tokens": 5}


def post(server: RunningServer, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        server.api_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def outcomes(server: RunningServer) -> dict[str, float]:
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "llmsim:upstream_requests":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    counts[sample.labels["outcome"]] = sample.value
    return counts


def test_requests_go_upstream_and_fall_back_when_it_fails(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    upstream = llmsim_server("--model", "real/model", "--mode", "echo")
    proxy = llmsim_server(
        "--upstream", upstream.base_url, "--model", "real/model", "--mode", "random", "--seed", "1"
    )
    status, body = post(proxy, CHAT)
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "who answers?"  # the upstream echoes
    status, body = post(proxy, {**CHAT, "model": "unknown"})
    assert status == 404  # the upstream's own client error, passed on unchanged
    assert outcomes(proxy) == {"upstream": 2.0}

    upstream.stop()
    status, body = post(proxy, CHAT)
    assert status == 200
    assert body["choices"][0]["message"]["content"] != "who answers?"  # simulated
    assert outcomes(proxy) == {"upstream": 2.0, "fallback_error": 1.0}


def test_a_slow_upstream_times_out_into_simulation(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    slow = llmsim_server("--time-to-first-token", "5s", "--mode", "echo")
    proxy = llmsim_server("--upstream", slow.base_url, "--upstream-timeout", "300ms")
    status, body = post(proxy, CHAT)
    assert status == 200
    assert body["choices"][0]["message"]["content"] != "who answers?"
    assert outcomes(proxy) == {"fallback_timeout": 1.0}


def test_an_unreachable_upstream_falls_back_from_the_start(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    proxy = llmsim_server("--upstream", f"http://127.0.0.1:{free_port()}", "--mode", "echo")
    status, body = post(proxy, CHAT)
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "who answers?"
    assert outcomes(proxy) == {"fallback_error": 1.0}
