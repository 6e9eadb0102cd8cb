"""vLLM's front-end queue limits (``--max-num-queued-reqs``, ``--max-num-queued-tokens``):
the engine decisions without HTTP, the refusal and its metric over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable

import pytest
from conftest import RunningServer
from test_scheduler_unit import RecordingObserver, generation, make_settings

from llmsim.engine import AdmissionError, Engine
from llmsim.engine.data_parallel import DataParallelEngines
from llmsim.observability.metrics import Metrics


async def test_queued_requests_count_every_engine_and_every_choice() -> None:
    settings = make_settings(max_num_queued_reqs=4, max_running_requests=1)
    observer = RecordingObserver()
    first, second = Engine(settings, observer), Engine(settings, observer)
    DataParallelEngines([first, second], [0, 1])
    held = [first.submit(generation("a", n=2)), second.submit(generation("b"))]  # 3 in flight
    with pytest.raises(AdmissionError) as refused:
        first.submit(generation("c", n=2))  # 3 + 2 > 4
    assert refused.value.reason == "max_num_queued_reqs"
    assert refused.value.message.startswith("The engine is currently busy")
    assert observer.rejected == ["max_num_queued_reqs"]
    assert observer.submitted == [2, 1]  # nothing of the refused request entered
    held.append(second.submit(generation("d")))  # 3 + 1: at the limit, allowed
    held.pop(0).abort()
    held.append(first.submit(generation("e", n=2)))  # 2 + 2
    for group in held:
        group.abort()


async def test_queued_tokens_count_prompts_until_their_first_token() -> None:
    settings = make_settings(max_num_queued_tokens=100, max_running_requests=8)
    observer = RecordingObserver()
    engine = Engine(settings, observer)
    big = engine.submit(generation("big", prompt_tokens=60))
    small = engine.submit(generation("small", prompt_tokens=50))  # backlog 60 < 100
    with pytest.raises(AdmissionError) as refused:
        engine.submit(generation("late", prompt_tokens=1))  # backlog 110 >= 100
    assert refused.value.reason == "max_num_queued_tokens"
    big.sequences[0].first_token_at = 1.0  # out of prefill: its prompt no longer counts
    engine.submit(generation("next", prompt_tokens=30)).abort()
    assert observer.rejected == ["max_num_queued_tokens"]
    big.abort()
    small.abort()


async def test_rejections_and_preemptions_are_in_vllms_series() -> None:
    settings = make_settings(max_num_queued_reqs=0)
    metrics = Metrics(settings)
    engine = Engine(settings, metrics)
    with pytest.raises(AdmissionError):
        engine.submit(generation("r"))
    text = metrics.exposition().decode()
    model = settings.model_label
    assert (
        f'vllm:admission_rejections_total{{model_name="{model}",reason="max_num_queued_reqs"}} 1.0'
        in text
    )
    assert (
        f'vllm:admission_rejections_total{{model_name="{model}",reason="max_num_queued_tokens"}} 0.0'
        in text
    )
    assert 'vllm:prompt_tokens_cached_by_source_total{engine="0",model_name="' in text


def test_a_full_server_answers_503_and_counts_it(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    """A vLLM command line: one request streaming, the limit at one, the next one refused."""
    server = llmsim_server(
        "acme/model", "--max-num-queued-reqs", "1", "--inter-token-latency", "200ms"
    )
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 20, "stream": True}
    stream = urllib.request.urlopen(
        urllib.request.Request(
            server.base_url + "/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        ),
        timeout=20,
    )
    try:
        stream.readline()  # the first chunk is out: the request is in flight
        plain = json.dumps({**body, "stream": False}).encode()
        refused = urllib.request.Request(
            server.base_url + "/v1/chat/completions",
            data=plain,
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(refused, timeout=20)
        assert caught.value.code == 503
        error = json.loads(caught.value.read())["error"]
        assert error["type"] == "Service Unavailable"
        assert error["message"].startswith("The engine is currently busy")
    finally:
        stream.close()
    with urllib.request.urlopen(server.base_url + "/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'reason="max_num_queued_reqs"} 1.0' in metrics
    assert "503 beyond 1 requests in flight" in server.log()  # the start-up panel says so
