"""Black-box tests of runtime control (``/admin/config``), metric overrides
(``/admin/metrics``, ``--fake-metrics``) and ``llmsim ctl``, against the real CLI."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, free_port, run_cli, start_server
from prometheus_client.parser import text_string_to_metric_families

HTTP_TIMEOUT = 20.0
CHAT = "/v1/chat/completions"
API_KEY = "admin-test-key"
ADJUSTABLE_EXAMPLE = ("time_to_first_token", "mode", "failure_injection_rate")


@dataclass
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    server: RunningServer,
    method: str,
    path: str,
    body: Any = None,
    key: str | None = None,
    raw: bytes | None = None,
) -> Reply:
    """One request on a fresh connection; the whole answer is read."""
    headers = {"Connection": "close", "Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=HTTP_TIMEOUT)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.read())
    finally:
        connection.close()


def ok(reply: Reply) -> Any:
    assert reply.status == 200, reply.body[:500]
    return reply.json()


def error_of(reply: Reply, status: int = 400) -> dict[str, Any]:
    assert reply.status == status, reply.body[:500]
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == status
    return dict(error)


def chat(server: RunningServer, content: str = "hello", max_tokens: int = 1) -> tuple[float, Reply]:
    """(seconds taken, reply) of a non-streaming chat completion."""
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    started = time.monotonic()
    reply = call(server, "POST", CHAT, body)
    return time.monotonic() - started, reply


def answer(reply: Reply) -> str:
    return str(ok(reply)["choices"][0]["message"]["content"])


def config(server: RunningServer, key: str | None = None) -> dict[str, Any]:
    return dict(ok(call(server, "GET", "/admin/config", key=key))["settings"])


def gauges(server: RunningServer) -> dict[str, Any]:
    """Scheduler gauges by short name, and the adapter lists of the newest LoRA info series."""
    text = call(server, "GET", "/metrics").body.decode()
    values: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "vllm:lora_requests_info":
            newest = max(family.samples, key=lambda sample: sample.value)
            values["running_lora_adapters"] = newest.labels["running_lora_adapters"]
            values["waiting_lora_adapters"] = newest.labels["waiting_lora_adapters"]
        elif family.name in (
            "vllm:num_requests_running",
            "vllm:num_requests_waiting",
            "vllm:kv_cache_usage_perc",
        ):
            values[family.name.removeprefix("vllm:")] = family.samples[0].value
        elif family.name == "llmsim:injected_failures":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    values[f"injected_{sample.labels['type']}"] = sample.value
    return values


def wait_for_gauge(
    server: RunningServer, name: str, value: float, timeout: float = 10.0
) -> dict[str, Any]:
    """Scrape until gauge ``name`` reads ``value``; the scrape that did."""
    deadline = time.monotonic() + timeout
    while True:
        values = gauges(server)
        if values[name] == value or time.monotonic() > deadline:
            assert values[name] == value, values
            return values
        time.sleep(0.02)


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Echo mode, no latency; tests that change it put it back."""
    server = start_server(["--mode", "echo", "--seed", "5"], tmp_path_factory.mktemp("admin"))
    yield server
    server.stop()


# -- /admin/config ----------------------------------------------------------------------


def test_get_config_shows_effective_settings_and_what_is_adjustable(
    echo_server: RunningServer,
) -> None:
    body = ok(call(echo_server, "GET", "/admin/config"))
    settings = body["settings"]
    assert settings["mode"] == "echo"
    assert settings["port"] == echo_server.port
    assert settings["time_to_first_token"] == "0ms"
    assert settings["shutdown_timeout"] == "30s"
    assert settings["max_request_body_size"] == "4MiB"
    assert settings["api_key"] is None
    assert settings["fake_metrics"] is None
    for name in ADJUSTABLE_EXAMPLE:
        assert name in body["adjustable"]
    assert "port" not in body["adjustable"]


def test_new_time_to_first_token_applies_to_the_next_requests(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--mode", "echo")
    fast = min(chat(server)[0] for _ in range(3))
    assert fast < 0.2
    body = ok(call(server, "POST", "/admin/config", {"time_to_first_token": "400ms"}))
    assert body["changed"] == ["time_to_first_token"]
    assert body["settings"]["time_to_first_token"] == "400ms"
    slow, reply = chat(server)
    assert reply.status == 200
    assert slow >= 0.25
    ok(call(server, "POST", "/admin/config", {"time_to_first_token": 0}))
    assert min(chat(server)[0] for _ in range(3)) < 0.2


def test_requests_already_running_keep_their_timing(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--time-to-first-token", "900ms")
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(chat, server)
        wait_for_gauge(server, "num_requests_running", 1)
        ok(call(server, "POST", "/admin/config", {"time_to_first_token": "0ms"}))
        new_elapsed, new_reply = chat(server)
        old_elapsed, old_reply = running.result(timeout=30)
    assert new_reply.status == 200
    assert old_reply.status == 200
    assert new_elapsed < 0.5
    assert old_elapsed >= 0.8


def test_mode_switches_between_echo_and_random(echo_server: RunningServer) -> None:
    prompt = "please repeat exactly these eleven words back to me right now"
    assert answer(chat(echo_server, prompt, max_tokens=50)[1]) == prompt
    try:
        ok(call(echo_server, "POST", "/admin/config", {"mode": "random"}))
        assert config(echo_server)["mode"] == "random"
        assert answer(chat(echo_server, prompt, max_tokens=50)[1]) != prompt
    finally:
        ok(call(echo_server, "POST", "/admin/config", {"mode": "echo"}))
    assert answer(chat(echo_server, prompt, max_tokens=50)[1]) == prompt


def test_failure_rate_of_100_fails_every_request_until_reset(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server()
    change = {"failure_injection_rate": 100, "failure_types": "server_error"}
    assert ok(call(server, "POST", "/admin/config", change))["settings"]["failure_types"] == [
        "server_error"
    ]
    for _ in range(10):
        error = error_of(chat(server)[1], 503)
        assert "(injected failure)" in error["message"]
    assert gauges(server)["injected_server_error"] == 10
    ok(call(server, "POST", "/admin/config", {"failure_injection_rate": "0"}))
    assert chat(server)[1].status == 200


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ({"ttft": "500ms"}, "ttft", "Unknown setting 'ttft'"),
        ({"port": 9000}, "port", "cannot be changed at run time"),
        ({"api_key": "x"}, "api_key", "cannot be changed at run time"),
        ({"fake_metrics": {}}, "fake_metrics", "changed at run time with POST /admin/metrics"),
        (
            {"time_to_first_token": "100ms", "time_to_first_token_std_dev": "40ms"},
            "time_to_first_token_std_dev",
            "must be at most 30% of time-to-first-token",
        ),
        ({"inter_token_latency": "soon"}, "inter_token_latency", "invalid duration 'soon'"),
        ({"mode": "loud"}, "mode", "'echo' or 'random'"),
        ({"failure_injection_rate": 101}, "failure_injection_rate", "less than or equal to 100"),
        ({"time_to_first_token": "100ms", "port": 1}, "port", "cannot be changed"),
        ({}, None, "No settings given"),
    ],
)
def test_invalid_updates_get_400_with_the_reason_and_change_nothing(
    echo_server: RunningServer, body: dict[str, Any], param: str | None, fragment: str
) -> None:
    before = config(echo_server)
    error = error_of(call(echo_server, "POST", "/admin/config", body))
    assert error["param"] == param
    assert fragment in error["message"]
    assert error["type"] == "BadRequestError"
    assert config(echo_server) == before


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_malformed_bodies_get_400(echo_server: RunningServer, raw: bytes) -> None:
    for path in ("/admin/config", "/admin/metrics"):
        error_of(call(echo_server, "POST", path, raw=raw))


def test_admin_routes_require_the_api_key_when_one_is_set(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--api-key", API_KEY)
    requests = [
        ("GET", "/admin/config", None),
        ("POST", "/admin/config", {"mode": "echo"}),
        ("GET", "/admin/metrics", None),
        ("POST", "/admin/metrics", {"num_requests_waiting": 3}),
        ("DELETE", "/admin/metrics", None),
    ]
    for method, path, body in requests:
        for key in (None, "wrong"):
            error = error_of(call(server, method, path, body, key=key), 401)
            assert error["type"] == "AuthenticationError"
    assert config(server, API_KEY)["mode"] == "random", "a refused request changed nothing"
    assert gauges(server)["num_requests_waiting"] == 0
    for method, path, body in requests:
        assert call(server, method, path, body, key=API_KEY).status == 200, (method, path)
    reply = call(server, "GET", "/admin/config", key=API_KEY)
    assert ok(reply)["settings"]["api_key"] == "********"
    assert API_KEY.encode() not in reply.body
    assert call(server, "GET", "/metrics").status == 200


# -- metric overrides ---------------------------------------------------------------------


def test_fixed_overrides_replace_the_named_metrics_and_clearing_restores_live_ones(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--time-to-first-token", "3s", "--lora", "real-lora")
    spec = {
        "num_requests_running": 40,
        "kv_cache_usage_perc": 0.5,
        "loras": {"running": ["a", "b"], "waiting": ["c"]},
    }
    body = ok(call(server, "POST", "/admin/metrics", spec))
    assert body["active"] is True
    assert body["overrides"] == spec
    assert body["current"] == {"num_requests_running": 40, "kv_cache_usage_perc": 0.5}
    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(chat, server)
        time.sleep(0.5)
        pinned = gauges(server)
        assert pinned["num_requests_running"] == 40
        assert pinned["kv_cache_usage_perc"] == 0.5
        assert pinned["num_requests_waiting"] == 0, "names left out stay live"
        assert (pinned["running_lora_adapters"], pinned["waiting_lora_adapters"]) == ("a,b", "c")
        assert ok(call(server, "GET", "/admin/metrics"))["overrides"] == spec
        cleared = ok(call(server, "DELETE", "/admin/metrics"))
        assert cleared["active"] is False
        assert cleared["overrides"] is None
        live = wait_for_gauge(server, "num_requests_running", 1)
        assert 0 < live["kv_cache_usage_perc"] < 0.5
        assert (live["running_lora_adapters"], live["waiting_lora_adapters"]) == ("", "")
        assert running.result(timeout=30)[1].status == 200


def test_a_time_function_changes_between_two_scrapes(echo_server: RunningServer) -> None:
    ramp = {"ramp": {"start": 0, "end": 1000, "period": "20s"}}
    ok(call(echo_server, "POST", "/admin/metrics", {"num_requests_waiting": ramp}))
    try:
        first = gauges(echo_server)["num_requests_waiting"]
        time.sleep(0.6)
        second = gauges(echo_server)["num_requests_waiting"]
        assert 0 <= first < second <= 1000
        assert ok(call(echo_server, "GET", "/admin/metrics"))["elapsed_seconds"] >= 0.6
    finally:
        ok(call(echo_server, "DELETE", "/admin/metrics"))
    assert gauges(echo_server)["num_requests_waiting"] == 0


def test_posting_a_spec_replaces_the_previous_one(echo_server: RunningServer) -> None:
    ok(call(echo_server, "POST", "/admin/metrics", {"num_requests_waiting": 5}))
    ok(call(echo_server, "POST", "/admin/metrics", {"num_requests_running": 6}))
    values = gauges(echo_server)
    assert (values["num_requests_waiting"], values["num_requests_running"]) == (0, 6)
    assert ok(call(echo_server, "POST", "/admin/metrics", {}))["active"] is False
    assert gauges(echo_server)["num_requests_running"] == 0


@pytest.mark.parametrize(
    ("spec", "param", "fragment"),
    [
        ({"num_requests_queued": 3}, "num_requests_queued", "unknown key"),
        ({"kv_cache_usage_perc": 1.5}, "kv_cache_usage_perc", "between 0 and 1"),
        (
            {"num_requests_waiting": {"ramp": {"start": 0, "end": 5, "period": "0s"}}},
            "num_requests_waiting.ramp.period",
            "greater than 0",
        ),
        (
            {"num_requests_waiting": {"sawtooth": {"start": 0, "end": 5, "period": "1s"}}},
            "num_requests_waiting",
            "unknown time function",
        ),
    ],
)
def test_invalid_metric_specs_get_400_and_keep_the_previous_overrides(
    echo_server: RunningServer, spec: dict[str, Any], param: str, fragment: str
) -> None:
    ok(call(echo_server, "POST", "/admin/metrics", {"num_requests_waiting": 4}))
    try:
        error = error_of(call(echo_server, "POST", "/admin/metrics", spec))
        assert error["param"] == param
        assert fragment in error["message"]
        assert gauges(echo_server)["num_requests_waiting"] == 4
    finally:
        ok(call(echo_server, "DELETE", "/admin/metrics"))


@pytest.mark.parametrize("form", ["inline", "json-file", "toml-file-from-env"])
def test_fake_metrics_at_start_up(
    llmsim_server: Callable[..., RunningServer], tmp_path: Path, form: str
) -> None:
    spec = {"num_requests_waiting": 12, "loras": {"running": ["x"]}}
    if form == "inline":
        server = llmsim_server("--fake-metrics", json.dumps(spec))
    elif form == "json-file":
        path = tmp_path / "pins.json"
        path.write_text(json.dumps(spec))
        server = llmsim_server("--fake-metrics", str(path))
    else:
        path = tmp_path / "pins.toml"
        path.write_text('num_requests_waiting = 12\n\n[loras]\nrunning = ["x"]\n')
        server = llmsim_server(env={"LLMSIM_FAKE_METRICS": str(path)})
    values = gauges(server)
    assert values["num_requests_waiting"] == 12
    assert values["running_lora_adapters"] == "x"
    assert config(server)["fake_metrics"] == {**spec, "loras": {"running": ["x"], "waiting": []}}
    ok(call(server, "DELETE", "/admin/metrics"))
    assert gauges(server)["num_requests_waiting"] == 0
    assert config(server)["fake_metrics"] is None


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ('{"kv_cache_usage_perc": 3}', "kv_cache_usage_perc: values must be between 0 and 1"),
        ('{"num_requests_waiting": {"ramp": {}}}', "num_requests_waiting.ramp.start"),
        ("/nonexistent/pins.json", "file not found: /nonexistent/pins.json"),
        ("{oops", "invalid JSON"),
    ],
)
def test_invalid_fake_metrics_stop_the_start_with_one_line(value: str, fragment: str) -> None:
    result = run_cli("serve", "--port", "0", "--fake-metrics", value)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: --fake-metrics: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


# -- llmsim ctl ---------------------------------------------------------------------------


def table_row(output: str, name: str) -> str:
    rows = [line for line in output.splitlines() if line.startswith("│") and f" {name} " in line]
    assert len(rows) == 1, output
    return rows[0]


def test_ctl_set_and_get(llmsim_server: Callable[..., RunningServer]) -> None:
    server = llmsim_server()
    url = ("--url", server.base_url)
    result = run_cli("ctl", "set", "time_to_first_token=500ms", "inter-token-latency=5", *url)
    assert result.returncode == 0, result.stderr
    assert "500ms" in table_row(result.stdout, "time_to_first_token")
    assert "changed" in table_row(result.stdout, "time_to_first_token")
    assert config(server)["time_to_first_token"] == "500ms"
    assert config(server)["inter_token_latency"] == "5ms"
    shown = run_cli("ctl", "get", *url)
    assert shown.returncode == 0, shown.stderr
    assert "500ms" in table_row(shown.stdout, "time_to_first_token")
    assert "yes" in table_row(shown.stdout, "time_to_first_token")
    assert "yes" not in table_row(shown.stdout, "port")
    as_json = run_cli("ctl", "get", "--json", env={"LLMSIM_URL": server.base_url})
    assert json.loads(as_json.stdout)["settings"]["time_to_first_token"] == "500ms"
    elapsed, reply = chat(server)
    assert reply.status == 200
    assert elapsed >= 0.35


def test_ctl_reports_refusals_and_bad_input(llmsim_server: Callable[..., RunningServer]) -> None:
    server = llmsim_server()
    url = ("--url", server.base_url)
    refused = run_cli("ctl", "set", "port=9", *url)
    assert refused.returncode == 1
    assert "error: 'port' cannot be changed at run time" in refused.stderr
    assert "(HTTP 400)" in refused.stderr
    too_much_jitter = run_cli("ctl", "set", "time_to_first_token_std_dev=1s", *url)
    assert too_much_jitter.returncode == 1
    assert "must be at most 30%" in too_much_jitter.stderr
    malformed = run_cli("ctl", "set", "mode", *url)
    assert malformed.returncode == 2
    assert "expected KEY=VALUE" in malformed.stderr
    unreachable = run_cli("ctl", "get", "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1
    assert "cannot reach" in unreachable.stderr
    for result in (refused, too_much_jitter, malformed, unreachable):
        assert "Traceback" not in result.stderr + result.stdout


def test_ctl_metrics_and_api_key(
    llmsim_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    server = llmsim_server("--api-key", API_KEY)
    url = ("--url", server.base_url)
    denied = run_cli("ctl", "metrics", "set", '{"num_requests_waiting": 7}', *url)
    assert denied.returncode == 1
    assert "Unauthorized" in denied.stderr
    keyed = {"LLMSIM_API_KEY": API_KEY}
    pinned = run_cli("ctl", "metrics", "set", '{"num_requests_waiting": 7}', *url, env=keyed)
    assert pinned.returncode == 0, pinned.stderr
    assert "7" in table_row(pinned.stdout, "num_requests_waiting")
    assert gauges(server)["num_requests_waiting"] == 7
    spec_file = tmp_path / "pins.toml"
    spec_file.write_text("[num_requests_running.square]\nstart = 2\nend = 2\nperiod = '1s'\n")
    from_file = run_cli("ctl", "metrics", "set", str(spec_file), *url, "--api-key", API_KEY)
    assert from_file.returncode == 0, from_file.stderr
    values = gauges(server)
    assert (values["num_requests_running"], values["num_requests_waiting"]) == (2, 0)
    shown = run_cli("ctl", "metrics", "get", *url, env=keyed)
    assert "square" in table_row(shown.stdout, "num_requests_running")
    cleared = run_cli("ctl", "metrics", "clear", *url, env=keyed)
    assert cleared.returncode == 0, cleared.stderr
    assert gauges(server)["num_requests_running"] == 0
    assert "no metric overrides" in run_cli("ctl", "metrics", "get", *url, env=keyed).stdout
    invalid = run_cli("ctl", "metrics", "set", '{"kv_cache_usage_perc": 9}', *url, env=keyed)
    assert invalid.returncode == 1
    assert "kv_cache_usage_perc: values must be between 0 and 1" in invalid.stderr
