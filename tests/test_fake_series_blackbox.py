"""The real server with a compressed autoscaler scenario: /metrics scraped over a few
seconds reads back the scripted TTFT p90 and request rate; /admin/metrics refuses specs
that do not fit the series."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable

import pytest
from conftest import RunningServer, post_json, run_cli
from promql import Scrape, histogram_quantile, parse, rate

TTFT = "vllm:time_to_first_token_seconds"
SUCCESS = "vllm:request_success_total"
SCENARIO = {
    TTFT: {
        "rate": 400,
        "quantiles": {"p90": {"schedule": [["0s", 0.2], ["2s", 0.2], ["2s", 2.0]]}},
    },
    SUCCESS: {"labels": {"finished_reason": "stop"}, "rate": 50},
}


def scrape(server: RunningServer) -> tuple[float, Scrape]:
    """The scrape and when it was taken: halfway through the request, like Prometheus's
    timestamp close to when the server computed the values."""
    sent = time.monotonic()
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return (sent + time.monotonic()) / 2, parse(text)


def test_a_compressed_scenario_reads_back_through_promql(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        "--fake-metrics", json.dumps(SCENARIO), "--fake-metrics-refresh-interval", "5ms"
    )
    status, _ = post_json(server, "/admin/metrics", SCENARIO)  # restart the scenario's clock
    assert status == 200
    start = time.monotonic()
    windows = []
    for begin, end in ((0.1, 1.8), (2.3, 4.0)):
        time.sleep(max(start + begin - time.monotonic(), 0))
        before_at, before = scrape(server)
        time.sleep(max(start + end - time.monotonic(), 0))
        after_at, after = scrape(server)
        windows.append((after_at - before_at, before, after))
    (_, first_before, first_after), (second_span, second_before, second_after) = windows
    assert histogram_quantile(0.9, first_before, first_after, TTFT) == pytest_approx(0.2)
    assert histogram_quantile(0.9, second_before, second_after, TTFT) == pytest_approx(2.0)
    for span, before, after in windows:
        assert rate(before, after, span, SUCCESS, finished_reason="stop") == pytest_approx(50)
    assert rate(second_before, second_after, second_span, SUCCESS, finished_reason="length") == 0
    cleared = post_json(server, "/admin/metrics", {})[0]
    assert cleared == 200
    _, last = scrape(server)
    assert rate(second_after, last, 1.0, f"{TTFT}_count") >= 0, "no reset after clearing"


def pytest_approx(value: float) -> object:
    """Within the 5 % an autoscaler test allows."""
    return pytest.approx(value, rel=0.05)


def test_admin_fakes_step_mode_series_and_refuses_specs_that_do_not_fit(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("--latency-model", "step")
    for spec, param, fragment in [
        ({"vllm:nope": 1}, "vllm:nope", "no such series"),
        ({SUCCESS: {"labels": {"finished_reason": "stop"}, "value": 3}}, SUCCESS, "is a counter"),
        ({"vllm:num_requests_waiting": {"rate": 3}}, "vllm:num_requests_waiting", "is a gauge"),
        ({TTFT: {"rate": "fast"}}, f"{TTFT}.rate", "expected a number"),
    ]:
        status, body = post_json(server, "/admin/metrics", spec)
        assert status == 400, spec
        assert body["error"]["param"] == param
        assert fragment in body["error"]["message"]
    cache = {
        "vllm:prefix_cache_queries_total": {"rate": 1000},
        "vllm:prefix_cache_hits_total": {"rate": 250},
    }
    assert post_json(server, "/admin/metrics", cache)[0] == 200
    _, before = scrape(server)
    time.sleep(0.5)
    _, after = scrape(server)
    hits = rate(before, after, 1.0, "vllm:prefix_cache_hits_total")
    queries = rate(before, after, 1.0, "vllm:prefix_cache_queries_total")
    assert hits / queries == pytest.approx(0.25, rel=0.05), "the hit rate an autoscaler reads"
    histogram = {TTFT: {"rate": 1000, "lognormal": {"p50": 0.1, "p99": 1}}}
    assert post_json(server, "/admin/metrics", histogram)[0] == 200
    time.sleep(0.3)
    shown = run_cli("ctl", "metrics", "get", "--url", server.base_url)
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if TTFT in line)
    count = int(row.split("count ")[1].split(",")[0])
    assert count >= 200, row


def test_a_start_up_spec_naming_no_series_stops_the_start() -> None:
    result = run_cli("serve", "--port", "0", "--fake-metrics", '{"vllm:nope": {"rate": 1}}')
    assert result.returncode == 2, "a refused setting, like the other --fake-metrics errors"
    assert result.stderr.startswith("error: --fake-metrics: vllm:nope: no such series; known: ")
    assert "Traceback" not in result.stderr
