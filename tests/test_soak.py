"""Soak: thousands of mixed requests, a third of the clients walking away mid-request.

The app runs in this process (aiohttp's test server, which cancels a handler when its
client disconnects, as the real server does) so the test can see the engine, the
asyncio tasks and the memory of the process. Afterwards nothing may run or wait, every
sequence must be counted exactly once as stop, length or abort, and neither tasks nor
memory may have piled up.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import random
import resource
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from llmsim.api import create_app
from llmsim.api.http.keys import ENGINE
from llmsim.engine import Engine, GenerationRequest, RequestGroup, Sequence, State
from llmsim.settings.model import Settings

WARMUP_REQUESTS = 200
SOAK_REQUESTS = 5000
CONCURRENCY = 64
ABANDON_RATE = 0.3
STREAM_RATE = 0.5
MAX_TOKENS = 24
MODEL = "llmsim/sim-model"

RUN_TIMEOUT = 90.0
REQUEST_TIMEOUT = 30.0
SUBMIT_TIMEOUT = 10.0
SETTLE_TIMEOUT = 10.0
TASK_MARGIN = 3
RSS_GROWTH_LIMIT = 50 * 1024 * 1024

AiohttpServer = Callable[..., Awaitable[TestServer]]


def soak_settings() -> Settings:
    return Settings(
        mode="random",
        seed=1234,
        max_model_len=512,
        max_running_requests=32,
        max_waiting_queue_length=1000,
        time_to_first_token="5ms",
        inter_token_latency="2ms",
        api_key=None,
        failure_injection_rate=0.0,
        stream_cut_rate=0.0,
        startup_duration=0.0,
    )


def rss_bytes() -> int:
    """Resident memory now (Linux); elsewhere the peak, which can only overstate growth."""
    statm = Path("/proc/self/statm")
    if statm.exists():
        return int(statm.read_text().split()[1]) * resource.getpagesize()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Tally:
    """What the clients saw."""

    issued: int = 0
    completed: int = 0
    abandoned: int = 0
    abandoned_at: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    finish_reasons: Counter[str] = field(default_factory=Counter)
    left: defaultdict[str, list[Sequence]] = field(default_factory=lambda: defaultdict(list))
    """The sequences of unary requests whose client left, by where they were at the time."""


class SubmissionLog:
    """Wraps ``Engine.submit`` so a client can wait until its request is in the engine."""

    def __init__(self, engine: Engine) -> None:
        self.ids: set[str] = set()
        self._watched: dict[str, asyncio.Future[RequestGroup]] = {}
        self._submit = engine.submit

    def submit(self, request: GenerationRequest) -> RequestGroup:
        group = self._submit(request)
        self.ids.add(request.request_id)
        waiter = self._watched.pop(request.request_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(group)
        return group

    def watch(self, request_id: str) -> asyncio.Future[RequestGroup]:
        waiter: asyncio.Future[RequestGroup] = asyncio.get_running_loop().create_future()
        self._watched[request_id] = waiter
        return waiter


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metric(
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    matches = [
        value
        for (sample, sample_labels), value in values.items()
        if sample == name and labels.items() <= dict(sample_labels).items()
    ]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


class Client:
    """Drives one request at a time; decides per request whether to walk away."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        log: SubmissionLog,
        tally: Tally,
        rng: random.Random,
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.log = log
        self.tally = tally
        self.rng = rng

    async def run(self, index: int) -> None:
        rng = self.rng
        chat = rng.random() < 0.5
        stream = rng.random() < STREAM_RATE
        abandon = rng.random() < ABANDON_RATE
        client_id = f"soak-{index}"
        request_id = ("chatcmpl-" if chat else "cmpl-") + client_id
        path = "/v1/chat/completions" if chat else "/v1/completions"
        body: dict[str, object] = {
            "model": MODEL,
            "max_tokens": rng.randint(1, MAX_TOKENS),
            "stream": stream,
            "ignore_eos": rng.random() < 0.3,
        }
        if chat:
            body["messages"] = [{"role": "user", "content": f"Request number {index}, go."}]
        else:
            body["prompt"] = f"Request number {index} says"
        headers = {"X-Request-Id": client_id}
        self.tally.issued += 1
        if stream:
            await self._stream(path, body, headers, abandon)
        elif abandon:
            # Long enough (>= 200 ms) that the disconnect arrives before the answer is done,
            # even when the shared loop lags on a loaded machine.
            body.update(max_tokens=rng.randint(100, 150), ignore_eos=True)
            await self._abandon_unary(path, body, headers, request_id)
        else:
            await self._unary(path, body, headers)

    async def _unary(self, path: str, body: dict[str, object], headers: dict[str, str]) -> None:
        async with self.session.post(self.base_url + path, json=body, headers=headers) as response:
            self.tally.statuses[response.status] += 1
            data = await response.json()
        assert response.status == 200, data
        choice = data["choices"][0]
        assert choice["finish_reason"] in ("stop", "length")
        assert data["usage"]["completion_tokens"] <= body["max_tokens"]  # type: ignore[operator]
        self.tally.finish_reasons[choice["finish_reason"]] += 1
        self.tally.completed += 1

    async def _abandon_unary(
        self, path: str, body: dict[str, object], headers: dict[str, str], request_id: str
    ) -> None:
        """Disconnect once the request is in the engine, queued or running."""
        submitted = self.log.watch(request_id)
        call = asyncio.ensure_future(self._unary(path, body, headers))
        done, _ = await asyncio.wait(
            {call, submitted}, timeout=SUBMIT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        assert done, f"{request_id} neither submitted nor answered"
        if call.done():
            call.result()
            return
        sequence = submitted.result().sequences[0]
        if sequence.state is State.WAITING and self.rng.random() < 0.5:
            await asyncio.wait({sequence.admitted}, timeout=SUBMIT_TIMEOUT)
        if sequence.state is State.RUNNING:
            await asyncio.sleep(self.rng.uniform(0.0, 0.005))
        where = sequence.state.value
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        if call.cancelled():
            self.tally.abandoned += 1
            self.tally.abandoned_at[where] += 1
            self.tally.left[where].append(sequence)

    async def _stream(
        self, path: str, body: dict[str, object], headers: dict[str, str], abandon: bool
    ) -> None:
        keep = self.rng.randint(1, 4) if abandon else None
        events = 0
        async with self.session.post(self.base_url + path, json=body, headers=headers) as response:
            self.tally.statuses[response.status] += 1
            assert response.status == 200
            assert response.content_type == "text/event-stream"
            while True:
                line = await response.content.readline()
                assert line, "stream ended without [DONE]"
                if not line.startswith(b"data: "):
                    continue
                if line == b"data: [DONE]\n":
                    self.tally.completed += 1
                    return
                chunk = json.loads(line[len(b"data: ") :])
                reason = chunk["choices"][0]["finish_reason"]
                if reason is not None:
                    self.tally.finish_reasons[reason] += 1
                events += 1
                if keep is not None and events >= keep:
                    response.close()
                    self.tally.abandoned += 1
                    self.tally.abandoned_at["streaming"] += 1
                    return


async def drive(client: Client, start: int, count: int) -> None:
    """``count`` requests, at most CONCURRENCY at a time."""
    indexes = iter(range(start, start + count))

    async def worker() -> None:
        for index in indexes:
            await client.run(index)

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read LLMSIM_* and VLLM_API_KEY; the soak must not inherit any."""
    for name in list(os.environ):
        if name.startswith("LLMSIM_") or name == "VLLM_API_KEY":
            monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
async def test_soak_with_disconnects_leaks_nothing(
    aiohttp_server: AiohttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: web.Application = create_app(soak_settings())
    engine = app[ENGINE]
    log = SubmissionLog(engine)
    monkeypatch.setattr(engine, "submit", log.submit)
    server = await aiohttp_server(app)
    assert server.runner is not None
    assert server.runner.server is not None
    assert server.runner.server.handler_cancellation is True
    base_url = str(server.make_url(""))
    assert base_url.startswith("http://127.0.0.1:")

    gc.collect()
    idle_tasks = len(asyncio.all_tasks())
    tally = Tally()
    rng = random.Random(20240611)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = Client(session, base_url, log, tally, rng)
        await asyncio.wait_for(drive(client, 0, WARMUP_REQUESTS), RUN_TIMEOUT)
        gc.collect()
        rss_before = rss_bytes()
        await asyncio.wait_for(drive(client, WARMUP_REQUESTS, SOAK_REQUESTS), RUN_TIMEOUT)
        async with session.get(base_url + "/health") as health:
            assert health.status == 200

    scheduler = engine.scheduler
    assert await wait_until(
        lambda: scheduler.num_running == scheduler.num_waiting == 0, SETTLE_TIMEOUT
    )
    assert await wait_until(
        lambda: len(asyncio.all_tasks()) <= idle_tasks + TASK_MARGIN, SETTLE_TIMEOUT
    ), f"{len(asyncio.all_tasks())} tasks alive, {idle_tasks} when idle"

    async with aiohttp.ClientSession() as session, session.get(base_url + "/metrics") as response:
        assert response.status == 200
        values = metric_values(await response.text())
    assert metric(values, "vllm:num_requests_running") == 0
    assert metric(values, "vllm:num_requests_waiting") == 0

    total = WARMUP_REQUESTS + SOAK_REQUESTS
    assert tally.issued == total
    assert len(log.ids) == total, "every request reached the engine"
    assert tally.statuses[200] == tally.statuses.total(), tally.statuses
    assert tally.completed + tally.abandoned == total

    success = "vllm:request_success_total"
    stop = metric(values, success, finished_reason="stop")
    length = metric(values, success, finished_reason="length")
    aborted = metric(values, success, finished_reason="abort")
    assert stop + length + aborted == total, (stop, length, aborted)
    assert metric(values, "vllm:request_params_n_count") == total
    assert 0 < aborted <= tally.abandoned
    assert stop + length >= tally.completed
    assert stop >= tally.finish_reasons["stop"]
    assert length >= tally.finish_reasons["length"]
    assert tally.abandoned >= 0.2 * total
    assert tally.abandoned_at["waiting"] > 0, tally.abandoned_at
    assert tally.abandoned_at["running"] > 0, tally.abandoned_at
    assert tally.abandoned_at["streaming"] > 0, tally.abandoned_at
    assert all(s.state is State.FINISHED for left in tally.left.values() for s in left)
    # A disconnect reaches the server a moment later (longer when the loop is busy); the
    # answers of these clients take 200 ms or more, so most of them must have been cut short.
    waiting, running = tally.left["waiting"], tally.left["running"]
    assert sum(s.finish_reason == "abort" for s in waiting) >= 0.75 * len(waiting)
    assert sum(s.finish_reason == "abort" for s in running) >= 0.75 * len(running)

    gc.collect()
    growth = rss_bytes() - rss_before
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB"
