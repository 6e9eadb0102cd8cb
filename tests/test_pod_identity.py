"""Pod identity headers (POD_NAME / POD_NAMESPACE from the Downward API) on every answer."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from llmsim.api.http.pod_identity import install_pod_identity

if TYPE_CHECKING:
    from conftest import RunningServer


def _headers(url: str, body: dict[str, object] | None = None) -> dict[str, str]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return {key.lower(): value for key, value in response.headers.items()}
    except urllib.error.HTTPError as exc:
        exc.read()
        return {key.lower(): value for key, value in exc.headers.items()}


def test_every_answer_names_the_pod_namespace_and_port(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(env={"POD_NAME": "llmsim-7d9f-abcde", "POD_NAMESPACE": "gateway-e2e"})
    chat = {"model": "llmsim/sim-model", "messages": [{"role": "user", "content": "hi"}]}
    answers = [
        _headers(server.base_url + "/health"),
        _headers(server.api_url + "/chat/completions", chat),
        _headers(server.api_url + "/chat/completions", {**chat, "stream": True}),
        _headers(server.api_url + "/chat/completions", {**chat, "model": "unknown"}),
        _headers(server.base_url + "/no/such/path"),
    ]
    for headers in answers:
        assert headers["x-inference-pod"] == "llmsim-7d9f-abcde"
        assert headers["x-inference-namespace"] == "gateway-e2e"
        assert headers["x-inference-port"] == str(server.port)


def test_the_namespace_alone_adds_only_its_header(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(env={"POD_NAME": "", "POD_NAMESPACE": "gateway-e2e"})
    headers = _headers(server.base_url + "/health")
    assert headers["x-inference-namespace"] == "gateway-e2e"
    assert not {"x-inference-pod", "x-inference-port"} & set(headers)


def test_without_the_pod_variables_nothing_is_installed() -> None:
    app = web.Application()
    assert not install_pod_identity(app, {"POD_NAME": " ", "HOSTNAME": "pod-1"})
    assert len(app.on_response_prepare) == 0
    assert install_pod_identity(app, {"POD_NAME": "pod-1"})
    assert len(app.on_response_prepare) == 1
