"""The table of vLLM's routes: the app has exactly the routes it says are served, each of them
answers (no 404) on a server started as it needs, and docs/api.md shows the current table."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningServer, start_server

from llmsim.api.http.app import create_app
from llmsim.api.http.route_inventory import LLMSIM_ROUTES, VLLM_ROUTES, Route, expected_routes
from llmsim.settings.model import Settings

ROOT = Path(__file__).resolve().parent.parent
DEV_ENV = {"VLLM_SERVER_DEV_MODE": "1"}


def app_routes(
    monkeypatch: pytest.MonkeyPatch, *, pooling: bool, dev: bool
) -> set[tuple[str, str]]:
    if dev:
        monkeypatch.setenv("VLLM_SERVER_DEV_MODE", "1")
    else:
        monkeypatch.delenv("VLLM_SERVER_DEV_MODE", raising=False)
    settings = Settings(runner="pooling") if pooling else Settings()
    app = create_app(settings)
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method not in ("HEAD", "*") and route.resource is not None
    }


@pytest.mark.parametrize("pooling", [False, True], ids=["generate", "pooling"])
@pytest.mark.parametrize("dev", [False, True], ids=["plain", "dev"])
def test_the_app_has_exactly_the_routes_the_table_serves(
    monkeypatch: pytest.MonkeyPatch, pooling: bool, dev: bool
) -> None:
    actual = app_routes(monkeypatch, pooling=pooling, dev=dev)
    expected = expected_routes(pooling=pooling, dev=dev)
    assert expected - actual == set(), "marked served, but the app has no such route"
    assert actual - expected == set(), "routed, but missing from llmsim/api/http/route_inventory.py"


def test_every_route_is_listed_once_and_unserved_ones_say_why() -> None:
    keys = [(method, r.path) for r in VLLM_ROUTES + LLMSIM_ROUTES for method in r.methods]
    assert len(keys) == len(set(keys))
    for route in VLLM_ROUTES:
        assert route.vllm, route.path
        if route.served == "no":
            assert route.note, f"{route.path}: a route not served needs its reason"


def test_docs_show_the_current_table() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_route_table.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def generate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server([], tmp_path_factory.mktemp("routes-generate"), env=DEV_ENV)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def pooling_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(["--runner", "pooling"], tmp_path_factory.mktemp("routes-pooling"))
    yield running
    running.stop()


def probe(server: RunningServer, method: str, path: str) -> tuple[int, str]:
    """Send ``method path`` (an empty JSON object as the body of a POST): status and message."""
    concrete = path.replace("{response_id}", "resp_unknown")
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(
        server.base_url + concrete,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return exc.code, body.decode(errors="replace")


def assert_routed(server: RunningServer, routes: list[Route]) -> None:
    for route in routes:
        for method in route.methods:
            if (method, route.path) == ("POST", "/sleep"):
                continue  # would pause the server for the probes after it; routed: see above
            status, message = probe(server, method, route.path)
            unrouted = status == 404 and message.startswith("Not Found: /")
            assert not unrouted, f"{method} {route.path} is marked served but answers 404"


def test_served_routes_answer_on_a_generation_model(generate_server: RunningServer) -> None:
    served = [r for r in VLLM_ROUTES if r.served in ("always", "generate", "dev")]
    assert_routed(generate_server, served)


def test_pooling_routes_answer_on_a_pooling_model(pooling_server: RunningServer) -> None:
    assert_routed(pooling_server, [r for r in VLLM_ROUTES if r.served == "pooling"])


def test_a_route_not_served_answers_404(generate_server: RunningServer) -> None:
    for route in VLLM_ROUTES:
        if route.served == "no" and "{" not in route.path:
            status, _ = probe(generate_server, route.methods[0], route.path)
            assert status == 404, route.path
