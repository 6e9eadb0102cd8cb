"""The scheduler seen from outside: waves of running requests, the bounded FIFO queue, LoRA
slots and the CPU cache, disconnects, dynamic adapters, the load factor and ``n`` > 1, all
observed over HTTP against a real ``llmsim serve`` process (SPEC sections 1, 4, 5 and 6;
docs/scheduling.md, docs/metrics.md).

Timing assertions are orderings, groupings and ratios with wide margins: simulated delays are
sleeps, so they are lower bounds, and a loaded machine only adds to them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from conftest import RunningServer
from prometheus_client.parser import text_string_to_metric_families

MODEL = "llmsim/sim-model"
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HI = [{"role": "user", "content": "hi"}]
STEP_TIMEOUT = 15.0  # bound on any single await in these tests
SPEC_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 429: "RateLimitError"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
StartServer = Callable[..., RunningServer]


# -- helpers ------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    sent_at: float = 0.0
    ended_at: float = 0.0

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def elapsed(self) -> float:
        return self.ended_at - self.sent_at


def client_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=30),
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
    )


async def call(
    session: aiohttp.ClientSession,
    server: RunningServer,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> Reply:
    """One request; the whole answer is read and its send and end times are recorded."""
    sent_at = time.monotonic()
    async with session.request(method, server.base_url + path, json=body) as response:
        payload = await response.read()
        headers = {k.lower(): v for k, v in response.headers.items()}
        return Reply(response.status, headers, payload, sent_at, time.monotonic())


def assert_error(reply: Reply, status: int) -> dict[str, Any]:
    """The reply is an error with ``status`` in the exact shape of SPEC section 6."""
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers.get("content-type", "").startswith("application/json")
    payload = reply.json()
    assert isinstance(payload, dict)
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["type"] == SPEC_ERROR_TYPES[status]
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] == status
    return error  # type: ignore[no-any-return]


def parse_metrics(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(value for (key, have), value in samples.items() if key == name and wanted <= have)


def running(samples: Samples) -> float:
    return metric(samples, "vllm:num_requests_running")


def waiting(samples: Samples) -> float:
    return metric(samples, "vllm:num_requests_waiting")


def successes(samples: Samples, reason: str) -> float:
    return metric(samples, "vllm:request_success_total", finished_reason=reason)


def lora_info(samples: Samples) -> dict[str, str]:
    """Labels of the current ``vllm:lora_requests_info`` series: the one with the largest value."""
    series = [
        (value, dict(labels))
        for (name, labels), value in samples.items()
        if name == "vllm:lora_requests_info"
    ]
    assert series, "no vllm:lora_requests_info series"
    return max(series, key=lambda item: item[0])[1]


async def scrape(session: aiohttp.ClientSession, server: RunningServer) -> Samples:
    reply = await asyncio.wait_for(call(session, server, "GET", "/metrics"), STEP_TIMEOUT)
    assert reply.status == 200
    return parse_metrics(reply.body.decode())


async def wait_metrics(
    session: aiohttp.ClientSession,
    server: RunningServer,
    predicate: Callable[[Samples], bool],
    what: str,
    timeout: float = 10.0,
) -> Samples:
    """Scrape until ``predicate`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(session, server)
        if predicate(samples):
            return samples
        assert time.monotonic() < deadline, (
            f"never saw {what}: running={running(samples)} waiting={waiting(samples)}"
            f" lora={lora_info(samples)}"
        )
        await asyncio.sleep(0.02)


async def wait_counts(
    session: aiohttp.ClientSession,
    server: RunningServer,
    run: int,
    wait: int,
    timeout: float = 10.0,
) -> Samples:
    return await wait_metrics(
        session,
        server,
        lambda s: running(s) == run and waiting(s) == wait,
        f"running={run} waiting={wait}",
        timeout,
    )


@dataclass
class Stream:
    """What a streaming client saw, with the arrival time of every event."""

    status: int
    sent_at: float
    events: list[Any] = field(default_factory=list)
    content_times: list[float] = field(default_factory=list)
    done: bool = False
    closed_early: bool = False
    ended_at: float = 0.0

    def content(self) -> list[str]:
        texts = []
        for event in self.events:
            for choice in event.get("choices", []):
                text = choice.get("delta", {}).get("content") or choice.get("text")
                if text:
                    texts.append(text)
        return texts

    def finish_reasons(self) -> list[str]:
        return [
            choice["finish_reason"]
            for event in self.events
            for choice in event.get("choices", [])
            if choice.get("finish_reason")
        ]


async def stream(
    session: aiohttp.ClientSession,
    server: RunningServer,
    path: str,
    body: dict[str, Any],
    *,
    started: asyncio.Event | None = None,
    close_after: int | None = None,
    close_when: asyncio.Event | None = None,
) -> Stream:
    """POST a streaming request and read its SSE events.

    ``started`` is set at the first content token; with ``close_after`` the client closes the
    connection once it has read that many content tokens, with ``close_when`` at the first
    token after the event is set.
    """
    sent_at = time.monotonic()
    async with session.post(server.base_url + path, json={**body, "stream": True}) as response:
        result = Stream(response.status, sent_at)
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            data = line[len(b"data: ") :].strip()
            if data == b"[DONE]":
                result.done = True
                continue
            event = json.loads(data)
            result.events.append(event)
            choices = event.get("choices", [])
            if any(c.get("delta", {}).get("content") or c.get("text") for c in choices):
                result.content_times.append(time.monotonic())
                if started is not None:
                    started.set()
                if (close_after is not None and len(result.content_times) >= close_after) or (
                    close_when is not None and close_when.is_set()
                ):
                    result.closed_early = True
                    response.close()
                    break
        result.ended_at = time.monotonic()
        return result


async def started_stream(
    session: aiohttp.ClientSession,
    server: RunningServer,
    path: str,
    body: dict[str, Any],
    **kwargs: Any,
) -> asyncio.Task[Stream]:
    """Start a stream in a task and return once its first content token has arrived."""
    started = asyncio.Event()
    task = asyncio.create_task(stream(session, server, path, body, started=started, **kwargs))
    await asyncio.wait_for(started.wait(), STEP_TIMEOUT)
    return task


async def settle(*awaitables: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.wait_for(asyncio.gather(*awaitables), 30))


def chat(max_tokens: int, **extra: Any) -> dict[str, Any]:
    return {"messages": HI, "max_tokens": max_tokens, "ignore_eos": True, **extra}


def cards(reply: Reply) -> dict[str, dict[str, Any]]:
    assert reply.status == 200, reply.body[:300]
    payload = reply.json()
    assert payload["object"] == "list"
    return {card["id"]: card for card in payload["data"]}


# -- 1. waves of max-running-requests -------------------------------------------------


async def test_requests_finish_in_waves_of_max_running_requests(
    llmsim_server: StartServer,
) -> None:
    server = llmsim_server("--max-running-requests", "2", "--inter-token-latency", "100ms")
    tokens = 8
    wave = 0.1 * (tokens - 1)  # TTFT 0 + 7 gaps of 100 ms
    async with client_session() as session:
        start = time.monotonic()
        replies = await settle(
            *(call(session, server, "POST", CHAT, chat(tokens)) for _ in range(6))
        )
        after = await wait_counts(session, server, 0, 0)
    for reply in replies:
        assert reply.status == 200, reply.body[:300]
        assert reply.json()["usage"]["completion_tokens"] == tokens
        assert reply.json()["choices"][0]["finish_reason"] == "length"
    ends = sorted(reply.ended_at - start for reply in replies)
    within = [ends[1] - ends[0], ends[3] - ends[2], ends[5] - ends[4]]
    between = [ends[2] - ends[1], ends[4] - ends[3]]
    # Three waves: two finish together, then the next two a whole wave later, and so on.
    assert ends[0] >= 0.9 * wave, ends
    assert min(between) >= 0.5 * wave, ends
    assert min(between) > 2 * max(within), ends
    assert ends[2] / ends[1] > 1.5, ends
    assert ends[4] / ends[3] > 1.25, ends
    assert ends[5] >= 0.9 * 3 * wave, ends
    # Queue time is reported and adds to the time to first token: two requests waited about
    # one wave, two about two waves.
    assert metric(after, "vllm:request_queue_time_seconds_count") == 6
    queued = metric(after, "vllm:request_queue_time_seconds_sum")
    assert queued >= 0.8 * 6 * wave, queued
    assert metric(after, "vllm:time_to_first_token_seconds_sum") >= queued
    assert metric(after, "vllm:e2e_request_latency_seconds_sum") >= 0.8 * 12 * wave


# -- 2. scheduler gauges and lora_requests_info ---------------------------------------


async def test_metrics_show_running_waiting_and_lora_state_mid_run(
    llmsim_server: StartServer,
) -> None:
    server = llmsim_server(
        "--max-running-requests",
        "2",
        "--inter-token-latency",
        "50ms",
        "--lora",
        "a,b",
        "--max-loras",
        "2",
    )
    async with client_session() as session:
        idle = await scrape(session, server)
        assert (running(idle), waiting(idle)) == (0, 0)
        assert lora_info(idle) == {
            "max_lora": "2",
            "running_lora_adapters": "",
            "waiting_lora_adapters": "",
        }
        for sample_name, labels in idle:
            if sample_name == "vllm:lora_requests_info":
                assert "model_name" not in dict(labels)
        before = sum(successes(idle, r) for r in ("stop", "length", "abort"))

        long_a = asyncio.create_task(call(session, server, "POST", CHAT, chat(80, model="a")))
        await wait_counts(session, server, 1, 0)
        long_b = asyncio.create_task(call(session, server, "POST", CHAT, chat(80, model="b")))
        await wait_counts(session, server, 2, 0)
        short_a = asyncio.create_task(call(session, server, "POST", CHAT, chat(4, model="a")))
        await wait_counts(session, server, 2, 1)
        base = asyncio.create_task(call(session, server, "POST", CHAT, chat(4)))
        busy = await wait_counts(session, server, 2, 2)
        assert not long_a.done()
        assert not long_b.done()
        assert lora_info(busy) == {
            "max_lora": "2",
            "running_lora_adapters": "a,b",
            "waiting_lora_adapters": "a",
        }
        assert 0 < metric(busy, "vllm:kv_cache_usage_perc") <= 1

        replies = await settle(long_a, long_b, short_a, base)
        assert [r.status for r in replies] == [200, 200, 200, 200]
        # The two queued requests could only start when the long ones ended.
        assert (
            min(replies[2].ended_at, replies[3].ended_at)
            > max(replies[0].ended_at, replies[1].ended_at) - 0.1
        )

        after = await wait_counts(session, server, 0, 0)
        assert lora_info(after) == {
            "max_lora": "2",
            "running_lora_adapters": "",
            "waiting_lora_adapters": "",
        }
        assert metric(after, "vllm:kv_cache_usage_perc") == 0
        assert sum(successes(after, r) for r in ("stop", "length", "abort")) - before == 4
        assert successes(after, "length") == 4


# -- 3. LoRA slot contention ----------------------------------------------------------


async def test_waiting_adapter_request_is_overtaken_by_a_base_model_request(
    llmsim_server: StartServer,
) -> None:
    server = llmsim_server(
        "--lora",
        "a,b",
        "--max-loras",
        "1",
        "--max-running-requests",
        "4",
        "--time-to-first-token",
        "200ms",
        "--inter-token-latency",
        "50ms",
    )
    async with client_session() as session:
        on_a = await started_stream(session, server, CHAT, chat(60, model="a"))
        on_b = asyncio.create_task(stream(session, server, CHAT, chat(4, model="b")))
        blocked = await wait_counts(session, server, 1, 1)
        # Three running slots are free, but b cannot get the only LoRA slot.
        assert lora_info(blocked) == {
            "max_lora": "1",
            "running_lora_adapters": "a",
            "waiting_lora_adapters": "b",
        }
        by_reason = "vllm:num_requests_waiting_by_reason"
        assert metric(blocked, by_reason, reason="deferred") == 1  # held by its adapter's slot
        assert metric(blocked, by_reason, reason="capacity") == 0
        base = await asyncio.wait_for(
            call(session, server, "POST", CHAT, chat(4, model=MODEL)), STEP_TIMEOUT
        )
        assert base.status == 200, base.body[:300]
        assert not on_a.done(), "the base request should not have waited for adapter a"
        assert not on_b.done(), "the base request should have overtaken the b request"
        still = await scrape(session, server)
        assert (running(still), waiting(still)) == (1, 1)
        a_result, b_result = await settle(on_a, on_b)

    assert a_result.status == b_result.status == 200
    assert a_result.done
    assert b_result.done
    assert len(a_result.content()) == 60
    assert len(b_result.content()) == 4
    # b's first token came one TTFT (200 ms) after a's last one: it ran once a finished.
    assert b_result.content_times[0] - a_result.content_times[-1] >= 0.1
    assert base.ended_at < b_result.content_times[0]
    assert base.ended_at < a_result.content_times[-1]


async def test_a_skipped_adapter_request_keeps_its_place_in_the_queue(
    llmsim_server: StartServer,
) -> None:
    """Requests for the adapter in the slot pass a blocked one; when the slot frees up, the
    blocked request goes before base-model requests that queued after it (FIFO)."""
    server = llmsim_server(
        "--lora",
        "a,b",
        "--max-loras",
        "1",
        "--max-running-requests",
        "2",
        "--inter-token-latency",
        "50ms",
    )
    async with client_session() as session:
        on_a = await started_stream(session, server, CHAT, chat(50, model="a"))
        on_b = asyncio.create_task(stream(session, server, CHAT, chat(4, model="b")))
        await wait_counts(session, server, 1, 1)
        # Another request for a, sent after b, shares a's slot and runs at once.
        more_a = await asyncio.wait_for(
            stream(session, server, CHAT, chat(4, model="a")), STEP_TIMEOUT
        )
        assert more_a.done
        assert not on_a.done()
        assert not on_b.done()
        # Fill the second running slot with a base request, then queue another one behind b.
        long_base = await started_stream(session, server, CHAT, chat(60))
        late_base = asyncio.create_task(stream(session, server, CHAT, chat(4)))
        queued = await wait_counts(session, server, 2, 2)
        assert lora_info(queued) == {
            "max_lora": "1",
            "running_lora_adapters": "a",
            "waiting_lora_adapters": "b",
        }
        a_result, b_result, long_result, late_result = await settle(
            on_a, on_b, long_base, late_base
        )

    for result in (a_result, b_result, long_result, late_result):
        assert result.status == 200
        assert result.done
    assert b_result.content_times[0] > a_result.content_times[-1] - 0.05
    assert b_result.content_times[0] < late_result.content_times[0], "b lost its place"
    assert more_a.ended_at < a_result.content_times[-1]


async def test_disconnects_release_lora_use(llmsim_server: StartServer) -> None:
    server = llmsim_server(
        "--lora",
        "a,b",
        "--max-loras",
        "1",
        "--inter-token-latency",
        "100ms",
    )
    async with client_session() as session:
        before = await scrape(session, server)
        started, leave = asyncio.Event(), asyncio.Event()
        on_a = asyncio.create_task(
            stream(session, server, CHAT, chat(100, model="a"), started=started, close_when=leave)
        )
        await asyncio.wait_for(started.wait(), STEP_TIMEOUT)
        # A waiting b request whose client leaves: b no longer shows as waiting.
        gives_up = asyncio.create_task(stream(session, server, CHAT, chat(3, model="b")))
        await wait_counts(session, server, 1, 1)
        gives_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gives_up
        left = await wait_counts(session, server, 1, 0, timeout=5.0)
        assert lora_info(left)["waiting_lora_adapters"] == ""
        assert lora_info(left)["running_lora_adapters"] == "a"
        # Another b request waits; when a's client leaves, the slot goes to b at once.
        on_b = asyncio.create_task(call(session, server, "POST", CHAT, chat(3, model="b")))
        await wait_counts(session, server, 1, 1)
        leave.set()
        a_result = await asyncio.wait_for(on_a, STEP_TIMEOUT)
        assert a_result.closed_early
        b_reply = await asyncio.wait_for(on_b, STEP_TIMEOUT)
        assert b_reply.status == 200, b_reply.body[:300]
        # a had about 9.7 s left; b (0.2 s of tokens) did not wait for that.
        assert b_reply.ended_at - a_result.ended_at < 3.0
        after = await wait_counts(session, server, 0, 0)
    assert successes(after, "abort") - successes(before, "abort") == 2
    assert successes(after, "length") - successes(before, "length") == 1
    assert lora_info(after) == {
        "max_lora": "1",
        "running_lora_adapters": "",
        "waiting_lora_adapters": "",
    }


# -- 4. queue overflow ----------------------------------------------------------------


async def test_a_full_queue_answers_429_at_once(llmsim_server: StartServer) -> None:
    server = llmsim_server(
        "--max-running-requests",
        "1",
        "--max-waiting-queue-length",
        "1",
        "--inter-token-latency",
        "50ms",
    )
    async with client_session() as session:
        before = await scrape(session, server)
        first = asyncio.create_task(call(session, server, "POST", CHAT, chat(60)))
        await wait_counts(session, server, 1, 0)
        queued = {"prompt": "hi", "max_tokens": 4, "ignore_eos": True}
        second = asyncio.create_task(call(session, server, "POST", COMPLETIONS, queued))
        await wait_counts(session, server, 1, 1)

        third = await asyncio.wait_for(call(session, server, "POST", CHAT, chat(4)), STEP_TIMEOUT)
        error = assert_error(third, 429)
        assert "waiting queue is full" in error["message"], error
        assert third.elapsed < 1.0
        assert not first.done()
        # The rejected request left no trace in the scheduler.
        full = await scrape(session, server)
        assert (running(full), waiting(full)) == (1, 1)

        replies = await settle(first, second)
        assert [r.status for r in replies] == [200, 200]
        assert replies[1].ended_at > replies[0].ended_at - 0.1  # FIFO: it waited for the first
        after = await wait_counts(session, server, 0, 0)
        finished = sum(
            successes(after, r) - successes(before, r) for r in ("stop", "length", "abort")
        )
        assert finished == 2
        # Once the queue has room again, requests are accepted.
        again = await asyncio.wait_for(call(session, server, "POST", CHAT, chat(2)), STEP_TIMEOUT)
        assert again.status == 200


# -- 5. disconnects -------------------------------------------------------------------


def disconnect_server(llmsim_server: StartServer) -> RunningServer:
    return llmsim_server("--max-running-requests", "1", "--inter-token-latency", "100ms")


async def test_disconnect_mid_stream_frees_the_slot_and_counts_as_abort(
    llmsim_server: StartServer,
) -> None:
    server = disconnect_server(llmsim_server)
    async with client_session() as session:
        before = await scrape(session, server)
        cut = await asyncio.wait_for(
            stream(session, server, CHAT, chat(100), close_after=2), STEP_TIMEOUT
        )
        assert cut.status == 200
        assert cut.closed_early
        assert not cut.done
        # 98 more tokens (about 10 s) were left; the next request gets the only slot at once.
        follower = await asyncio.wait_for(
            call(session, server, "POST", CHAT, chat(3)), STEP_TIMEOUT
        )
        assert follower.status == 200, follower.body[:300]
        assert follower.ended_at - cut.ended_at < 3.0
        after = await wait_metrics(
            session,
            server,
            lambda s: successes(s, "abort") - successes(before, "abort") >= 1,
            "the abort counted",
        )
        assert successes(after, "abort") - successes(before, "abort") == 1
        assert successes(after, "stop") == successes(before, "stop")
        assert successes(after, "length") - successes(before, "length") == 1  # the follower
        assert (running(after), waiting(after)) == (0, 0)


@pytest.mark.parametrize("streaming", [False, True], ids=["plain", "stream"])
async def test_disconnect_while_waiting_leaves_the_queue(
    llmsim_server: StartServer, streaming: bool
) -> None:
    server = disconnect_server(llmsim_server)
    async with client_session() as session:
        before = await scrape(session, server)
        holder = await started_stream(session, server, CHAT, chat(100))
        if streaming:
            queued: asyncio.Task[Any] = asyncio.create_task(stream(session, server, CHAT, chat(3)))
        else:
            queued = asyncio.create_task(call(session, server, "POST", CHAT, chat(3)))
        await wait_counts(session, server, 1, 1)

        queued.cancel()  # the client gives up: its connection is closed
        with pytest.raises(asyncio.CancelledError):
            await queued
        left = await wait_counts(session, server, 1, 0, timeout=5.0)
        assert successes(left, "abort") - successes(before, "abort") == 1
        assert not holder.done()

        # The queue slot is free again, and the running stream is unaffected.
        follower = asyncio.create_task(call(session, server, "POST", CHAT, chat(2)))
        await wait_counts(session, server, 1, 1)
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        reply = await asyncio.wait_for(follower, STEP_TIMEOUT)
        assert reply.status == 200
        after = await wait_counts(session, server, 0, 0)
        assert successes(after, "abort") - successes(before, "abort") == 2
        assert successes(after, "length") - successes(before, "length") == 1
        assert successes(after, "stop") == successes(before, "stop")


# -- 6. dynamic adapters --------------------------------------------------------------


async def test_load_use_and_unload_an_adapter_at_run_time(llmsim_server: StartServer) -> None:
    server = llmsim_server("--inter-token-latency", "5ms")
    name, path = "dyn-lora", "/adapters/dyn-lora"
    async with client_session() as session:
        assert name not in cards(await call(session, server, "GET", "/v1/models"))
        unknown = await call(session, server, "POST", CHAT, chat(3, model=name))
        assert_error(unknown, 404)

        loaded = await call(
            session, server, "POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}
        )
        assert loaded.status == 200, loaded.body[:300]
        assert loaded.headers.get("content-type", "").startswith("text/plain")
        assert loaded.body.decode() == f"Success: LoRA adapter '{name}' added successfully."

        listed = cards(await call(session, server, "GET", "/v1/models"))
        assert listed[name]["root"] == path
        assert listed[name]["parent"] == MODEL
        assert listed[name]["object"] == "model"
        assert MODEL in listed

        used = await call(session, server, "POST", CHAT, chat(3, model=name))
        assert used.status == 200, used.body[:300]
        assert used.json()["model"] == name
        assert used.json()["usage"]["completion_tokens"] == 3
        streamed = await stream(session, server, COMPLETIONS, {"prompt": "hi", "model": name})
        assert streamed.status == 200
        assert streamed.done

        again = await call(
            session, server, "POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}
        )
        assert "already been loaded" in assert_error(again, 400)["message"]
        missing_path = await call(
            session, server, "POST", "/v1/load_lora_adapter", {"lora_name": "other"}
        )
        assert_error(missing_path, 400)

        unloaded = await call(
            session, server, "POST", "/v1/unload_lora_adapter", {"lora_name": name}
        )
        assert unloaded.status == 200, unloaded.body[:300]
        assert unloaded.headers.get("content-type", "").startswith("text/plain")
        assert unloaded.body.decode() == f"Success: LoRA adapter '{name}' removed successfully."

        gone = await call(session, server, "POST", CHAT, chat(3, model=name))
        error = assert_error(gone, 404)
        assert error["message"] == f"The model `{name}` does not exist."
        assert name not in cards(await call(session, server, "GET", "/v1/models"))

        twice = await call(session, server, "POST", "/v1/unload_lora_adapter", {"lora_name": name})
        assert_error(twice, 404)
        never = await call(
            session, server, "POST", "/v1/unload_lora_adapter", {"lora_name": "never-loaded"}
        )
        assert_error(never, 404)


async def test_unloading_an_adapter_lets_its_running_request_finish(
    llmsim_server: StartServer,
) -> None:
    server = llmsim_server("--lora", "a", "--max-loras", "1", "--inter-token-latency", "50ms")
    name = "short-lived"
    async with client_session() as session:
        before = await scrape(session, server)
        loaded = await call(
            session, server, "POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": "/x"}
        )
        assert loaded.status == 200, loaded.body[:300]
        in_flight = await started_stream(session, server, CHAT, chat(30, model=name))
        busy = await scrape(session, server)
        assert lora_info(busy)["running_lora_adapters"] == name

        unloaded = await call(
            session, server, "POST", "/v1/unload_lora_adapter", {"lora_name": name}
        )
        assert unloaded.status == 200, unloaded.body[:300]
        assert not in_flight.done()
        assert_error(await call(session, server, "POST", CHAT, chat(2, model=name)), 404)

        result = await asyncio.wait_for(in_flight, STEP_TIMEOUT)
        assert result.status == 200
        assert result.done
        assert len(result.content()) == 30
        assert result.finish_reasons() == ["length"]
        after = await wait_counts(session, server, 0, 0)
        assert successes(after, "length") - successes(before, "length") == 1
        assert successes(after, "abort") == successes(before, "abort")
        assert lora_info(after)["running_lora_adapters"] == ""

        # A request waiting for an adapter (the only slot is busy) still runs after an unload.
        loaded = await call(
            session,
            server,
            "POST",
            "/v1/load_lora_adapter",
            {"lora_name": "later", "lora_path": "/y"},
        )
        assert loaded.status == 200, loaded.body[:300]
        on_a = await started_stream(session, server, CHAT, chat(40, model="a"))
        parked = asyncio.create_task(call(session, server, "POST", CHAT, chat(3, model="later")))
        blocked = await wait_counts(session, server, 1, 1)
        assert lora_info(blocked)["waiting_lora_adapters"] == "later"
        unloaded = await call(
            session, server, "POST", "/v1/unload_lora_adapter", {"lora_name": "later"}
        )
        assert unloaded.status == 200, unloaded.body[:300]
        assert_error(await call(session, server, "POST", CHAT, chat(2, model="later")), 404)
        a_result, parked_reply = await settle(on_a, parked)
        assert a_result.done
        assert parked_reply.status == 200, parked_reply.body[:300]
        assert parked_reply.json()["usage"]["completion_tokens"] == 3
        assert parked_reply.json()["model"] == "later"
        assert parked_reply.ended_at > a_result.content_times[-1] - 0.05
        final = await wait_counts(session, server, 0, 0)
        assert successes(final, "abort") == successes(before, "abort")


# -- 7. LoRA load latency and the CPU cache -------------------------------------------


async def test_cold_adapters_pay_the_load_latency_and_warm_ones_do_not(
    llmsim_server: StartServer,
) -> None:
    # Three adapters, one LoRA slot, two warm in the CPU cache: a is registered first and is
    # evicted from the cache at start-up (LRU), so it is cold; b and c are warm.
    server = llmsim_server(
        "--lora",
        "a,b,c",
        "--max-loras",
        "1",
        "--max-cpu-loras",
        "2",
        "--lora-load-latency",
        "500ms",
    )

    async def timed(session: aiohttp.ClientSession, model: str) -> float:
        reply = await asyncio.wait_for(
            call(session, server, "POST", CHAT, chat(2, model=model)), STEP_TIMEOUT
        )
        assert reply.status == 200, reply.body[:300]
        return reply.elapsed

    async with client_session() as session:
        cold_a = await timed(session, "a")  # load a into the cache (evicts b, the LRU)
        warm_a = await timed(session, "a")  # a is in the slot already
        warm_c = await timed(session, "c")  # warm since start-up; takes the idle slot
        back_a = await timed(session, "a")  # out of the slot but still in the CPU cache
        cold_b = await timed(session, "b")  # evicted from the cache when a was loaded
        base = await timed(session, MODEL)
        # Registering d puts it in the cache (warm) and evicts the LRU adapter, a.
        loaded = await call(
            session, server, "POST", "/v1/load_lora_adapter", {"lora_name": "d", "lora_path": "/d"}
        )
        assert loaded.status == 200, loaded.body[:300]
        warm_d = await timed(session, "d")
        # Two requests for the now cold a at once share one load.
        shared = await settle(timed(session, "a"), timed(session, "a"))

    timings = {"cold_a": cold_a, "warm_a": warm_a, "warm_c": warm_c, "back_a": back_a}
    timings |= {"cold_b": cold_b, "base": base, "warm_d": warm_d, "shared": shared}
    assert cold_a >= 0.45, timings
    assert cold_b >= 0.45, timings
    for warm in (warm_a, warm_c, back_a, base, warm_d):
        assert warm < 0.5 * min(cold_a, cold_b), timings
    assert min(shared) >= 0.45, timings  # neither ran before the load ended
    assert max(shared) < 1.6 * min(shared), timings  # and the load was not paid twice


# -- 8. load factor -------------------------------------------------------------------


async def test_time_factor_under_load_slows_tokens_when_the_running_set_is_full(
    llmsim_server: StartServer,
) -> None:
    server = llmsim_server(
        "--time-factor-under-load",
        "3",
        "--max-running-requests",
        "4",
        "--inter-token-latency",
        "50ms",
    )
    tokens = 12

    def median_gap(result: Stream) -> float:
        times = result.content_times
        assert len(times) == tokens
        return statistics.median(b - a for a, b in itertools.pairwise(times))

    async with client_session() as session:
        alone = await asyncio.wait_for(stream(session, server, CHAT, chat(tokens)), STEP_TIMEOUT)
        loaded = await settle(*(stream(session, server, CHAT, chat(tokens)) for _ in range(4)))
        await wait_metrics(session, server, lambda s: successes(s, "length") == 5, "5 finished")
    single = median_gap(alone)
    under_load = [median_gap(result) for result in loaded]
    # Alone: factor 1 (50 ms); four running out of four: factor 3 (150 ms).
    assert single >= 0.045, single
    assert min(under_load) > 1.8 * single, (single, under_load)


# -- 9. n > 1 counts per sequence -----------------------------------------------------


async def test_n_counts_against_the_limits_per_sequence(llmsim_server: StartServer) -> None:
    server = llmsim_server(
        "--max-running-requests",
        "4",
        "--max-waiting-queue-length",
        "2",
        "--inter-token-latency",
        "50ms",
    )
    async with client_session() as session:
        before = await scrape(session, server)
        # On an idle server n=7 cannot be accepted: 4 could start, 3 would wait, the queue holds
        # 2. The request is rejected whole and nothing of it runs or waits.
        too_many = await call(session, server, "POST", CHAT, chat(30, n=7))
        assert "waiting queue is full" in assert_error(too_many, 429)["message"]
        idle = await scrape(session, server)
        assert (running(idle), waiting(idle)) == (0, 0)

        three = asyncio.create_task(call(session, server, "POST", CHAT, chat(150, n=3)))
        await wait_counts(session, server, 3, 0)
        # Two prompts are two sequences: one runs, one waits.
        # (long enough that the second still waits while the next checks run on a busy machine)
        two_prompts = {"prompt": ["one", "two"], "max_tokens": 20, "ignore_eos": True}
        prompts = asyncio.create_task(call(session, server, "POST", COMPLETIONS, two_prompts))
        await wait_counts(session, server, 4, 1)
        # n=2 would need two queue places; only one is left: 429, and the queue is unchanged.
        rejected = await call(session, server, "POST", CHAT, chat(4, n=2))
        assert_error(rejected, 429)
        same = await scrape(session, server)
        assert (running(same), waiting(same)) == (4, 1)
        # n=1 fits in the last queue place.
        single = asyncio.create_task(call(session, server, "POST", CHAT, chat(4)))
        await wait_counts(session, server, 4, 2)

        replies = await settle(three, prompts, single)
        assert [r.status for r in replies] == [200, 200, 200]
        assert [c["index"] for c in replies[0].json()["choices"]] == [0, 1, 2]
        assert [c["index"] for c in replies[1].json()["choices"]] == [0, 1]
        after = await wait_counts(session, server, 0, 0)

    # Sequences are counted in request_success_total, requests in request_params_n.
    assert successes(after, "length") - successes(before, "length") == 6
    params_n = metric(after, "vllm:request_params_n_count") - metric(
        before, "vllm:request_params_n_count"
    )
    assert params_n == 3
