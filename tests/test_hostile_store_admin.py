"""Hostile clients against the Responses store, the admin settings and the stop signals."""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmsim.api.responses.store import MissingResponse, ResponseStore, stored_response
from llmsim.runtime.adjustable import RUNTIME_FIELDS
from llmsim.server.watchdog import FORCE_EXIT_GRACE
from llmsim.settings import info as settings_info
from tests.conftest import (
    STARTUP_TIMEOUT,
    RunningServer,
    free_port,
    post_json,
    run_cli,
    start_server,
)
from tests.hostile import Watch

# -- the store on its own ----------------------------------------------------------------


def _turn(index: int) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": f"question {index}"},
        {"role": "assistant", "content": f"answer {index}"},
    ]


def _chain(store: ResponseStore, links: int) -> None:
    for index in range(links):
        parent = f"resp_{index - 1}" if index else None
        store.put(f"resp_{index}", stored_response({"id": f"resp_{index}"}, _turn(index), parent))


def test_a_long_chain_takes_memory_linear_in_its_turns() -> None:
    store = ResponseStore(max_entries=1000, max_bytes=10**9)
    _chain(store, 1000)
    first, last = store.get("resp_0"), store.get("resp_999")
    assert first is not None
    assert last is not None
    assert len(last.turn) == 2  # a link keeps only its own turn
    assert store.total_bytes <= 1000 * last.size
    assert last.size <= first.size + 10  # no link grows with the chain before it
    conversation = store.conversation("resp_999")
    assert len(conversation) == 2000
    assert conversation[0]["content"] == "question 0"
    assert conversation[-1]["content"] == "answer 999"


def test_a_chain_four_times_longer_takes_about_four_times_the_memory() -> None:
    def allocated(links: int) -> int:
        tracemalloc.start()
        store = ResponseStore(max_entries=links, max_bytes=10**9)
        _chain(store, links)
        store.conversation(f"resp_{links - 1}")
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return size

    ratio = allocated(1000) / allocated(250)
    assert ratio < 6  # linear: about 4; a copy per link would be about 16


def test_the_store_drops_the_least_recently_used_by_count_and_by_bytes() -> None:
    size = stored_response({"id": "resp_0"}, _turn(0), None).size
    store = ResponseStore(max_entries=3, max_bytes=10**9)
    _chain(store, 4)
    assert len(store) == 3
    assert store.get("resp_0") is None
    by_bytes = ResponseStore(max_entries=100, max_bytes=2 * size + size // 2)
    _chain(by_bytes, 4)
    assert len(by_bytes) == 2
    assert by_bytes.total_bytes <= 2 * size + size // 2
    assert not by_bytes.put("resp_big", stored_response({"x": "y" * 3 * size}, [], None))
    assert len(by_bytes) == 2  # a response larger than the budget is not kept


def test_a_dropped_ancestor_names_itself_and_the_walk_keeps_the_chain_fresh() -> None:
    store = ResponseStore(max_entries=3, max_bytes=10**9)
    _chain(store, 4)  # resp_0 dropped
    with pytest.raises(MissingResponse) as missing:
        store.conversation("resp_3")
    assert missing.value.response_id == "resp_0"
    store.put("other", stored_response({"id": "other"}, [], None))
    assert store.get("resp_1") is None  # the least recently used went
    store = ResponseStore(max_entries=4, max_bytes=10**9)
    _chain(store, 3)
    store.put("other", stored_response({"id": "other"}, [], None))
    store.conversation("resp_2")  # uses the whole chain: "other" is now the oldest
    store.put("next", stored_response({"id": "next"}, [], None))
    assert store.get("other") is None
    assert len(store.conversation("resp_2")) == 6


# -- over HTTP ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(
        [
            "--mode",
            "echo",
            "--responses-store-max-entries",
            "3",
            "--responses-store-max-size",
            "16KiB",
        ],
        tmp_path_factory.mktemp("store"),
    )
    yield server
    server.stop()


def _respond(server: RunningServer, text: str, **fields: Any) -> tuple[int, Any]:
    return post_json(server, "/v1/responses", {"input": text, "max_output_tokens": 8, **fields})


def _retrieve(server: RunningServer, response_id: str) -> int:
    try:
        with urllib.request.urlopen(f"{server.api_url}/responses/{response_id}", timeout=10):
            return 200
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize(
    ("metadata", "param", "words"),
    [
        ({f"k{i}": "v" for i in range(17)}, "metadata", "at most 16"),
        ({"k" * 65: "v"}, "metadata", "at most 64"),
        ({"k": "v" * 513}, "metadata", "at most 512"),
        ({"k": 1}, "metadata.k", "valid string"),
        (["k", "v"], "metadata", "dictionary"),
    ],
)
def test_metadata_beyond_openai_limits_is_a_400_naming_it(
    small_store: RunningServer, metadata: Any, param: str, words: str
) -> None:
    status, body = _respond(small_store, "hi", metadata=metadata)
    assert status == 400
    assert body["error"]["param"] == param
    assert words in body["error"]["message"]
    assert body["error"]["type"] == "BadRequestError"


def test_metadata_at_the_limits_is_stored_and_echoed(small_store: RunningServer) -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    status, body = _respond(small_store, "hi", metadata=metadata)
    assert status == 200
    assert body["metadata"] == metadata


def test_stored_responses_are_bounded_by_count_and_bytes(small_store: RunningServer) -> None:
    ids = [_respond(small_store, f"turn {i}")[1]["id"] for i in range(4)]
    assert [_retrieve(small_store, rid) for rid in ids] == [404, 200, 200, 200]
    big = [_respond(small_store, "x", instructions="i" * 7_000)[1]["id"] for _ in range(3)]
    assert [_retrieve(small_store, rid) for rid in big] == [404, 200, 200]
    status, too_big = _respond(small_store, "x", instructions="i" * 20_000)
    assert status == 200
    assert _retrieve(small_store, too_big["id"]) == 404  # larger than the whole store
    assert _retrieve(small_store, big[2]) == 200  # and it pushed nothing out


def test_a_chain_past_the_store_answers_404_naming_the_dropped_link(
    small_store: RunningServer,
) -> None:
    ids: list[str] = []
    for turn in range(4):
        fields = {"previous_response_id": ids[-1]} if ids else {}
        status, body = _respond(small_store, f"turn {turn}", **fields)
        assert status == 200, body
        ids.append(body["id"])
    status, body = _respond(small_store, "again", previous_response_id=ids[-1])
    assert status == 404
    assert body["error"]["message"] == f"Response with id '{ids[0]}' not found."


def test_a_chain_rebuilds_the_whole_conversation(tmp_path: Path) -> None:
    server = start_server(["--mode", "echo"], tmp_path)
    try:
        previous: dict[str, Any] = {}
        sizes = []
        for turn in range(30):
            status, body = _respond(server, f"turn {turn}", **previous)
            assert status == 200, body
            sizes.append(body["usage"]["input_tokens"])
            previous = {"previous_response_id": body["id"]}
        steps = {later - earlier for earlier, later in itertools.pairwise(sizes[1:])}
        assert len(steps) == 1
        assert steps.pop() > 0
        assert json.dumps(body["output"]).count("turn 29") == 1
    finally:
        server.stop()


def test_a_long_chain_is_counted_off_the_loop(tmp_path: Path) -> None:
    """A small request whose previous_response_id holds megabytes: counted in a thread."""
    server = start_server(["--max-model-len", "2000000"], tmp_path)
    try:
        status, body = _respond(server, "hello " * 400_000)
        assert status == 200, body
        with Watch(server) as watch:
            status, answer = _respond(server, "more", previous_response_id=body["id"])
        watch.assert_responsive()
        assert status == 200, answer
        assert answer["usage"]["input_tokens"] > body["usage"]["input_tokens"] >= 400_000
    finally:
        server.stop()


# -- admin settings are range-checked as the flags are -----------------------------------


@pytest.mark.parametrize("name", RUNTIME_FIELDS)
def test_every_numeric_runtime_setting_has_an_upper_bound(name: str) -> None:
    if settings_info.kind(name) in ("duration", "integer", "number"):
        assert settings_info.bounds(name).upper is not None


@pytest.mark.parametrize(
    ("changes", "param", "words"),
    [
        ({"inter_token_latency": 1e308}, "inter_token_latency", "at most 3600s"),
        ({"time_to_first_token": "2h"}, "time_to_first_token", "invalid duration unit"),
        ({"lora_load_latency": "61m"}, "lora_load_latency", "at most 3600s"),
        ({"prefill_time_per_token": "2s"}, "prefill_time_per_token", "at most 1s"),
        ({"max_num_batched_tokens": 10**12}, "max_num_batched_tokens", "less than or equal"),
        ({"failure_injection_rate": 1e308}, "failure_injection_rate", "less than or equal"),
    ],
)
def test_admin_config_refuses_values_the_flags_refuse(
    small_store: RunningServer, changes: dict[str, Any], param: str, words: str
) -> None:
    status, body = post_json(small_store, "/admin/config", changes)
    assert status == 400
    assert body["error"]["param"] == param
    assert words in body["error"]["message"]
    flag = f"--{param.replace('_', '-')}"
    refused = run_cli("serve", flag, str(next(iter(changes.values()))), "--port", "0")
    assert refused.returncode == 2
    assert param.replace("_", "-") in refused.stderr or param in refused.stderr


def test_admin_config_takes_the_bound_itself_and_ctl_reports_a_refusal(
    small_store: RunningServer,
) -> None:
    status, body = post_json(small_store, "/admin/config", {"lora_load_latency": "60m"})
    assert status == 200, body
    assert body["settings"]["lora_load_latency"] == "3600s"
    post_json(small_store, "/admin/config", {"lora_load_latency": 0})
    url = ("--url", small_store.base_url)
    refused = run_cli("ctl", "set", "inter_token_latency=1e308", *url)
    assert refused.returncode == 1
    assert "at most 3600s" in refused.stderr
    shown = run_cli("ctl", "get", "--json", *url)
    assert json.loads(shown.stdout)["settings"]["inter_token_latency"] == "0ms"


def test_rule_timing_overrides_are_bounded_too(small_store: RunningServer) -> None:
    rule = {"contains": "x", "text": "y", "inter_token_latency": "61m"}
    status, body = post_json(small_store, "/admin/responses", {"rules": [rule]})
    assert status == 400
    assert "at most 3600s" in body["error"]["message"]


# -- stop signals always stop the server -------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_a_held_request_within_the_shutdown_timeout(
    tmp_path: Path, sig: signal.Signals
) -> None:
    server = start_server(["--inter-token-latency", "10s", "--shutdown-timeout", "1s"], tmp_path)
    held = _send(server.port, b'{"prompt": "hi", "max_tokens": 5, "ignore_eos": true}')
    try:
        time.sleep(0.3)  # the request is running: its next token is 10 s away
        signalled = time.monotonic()
        server.process.send_signal(sig)
        assert server.process.wait(1 + FORCE_EXIT_GRACE + 5) == 0
        assert time.monotonic() - signalled < 1 + FORCE_EXIT_GRACE
    finally:
        held.close()
        server.stop(signal.SIGKILL)


BLOCKING_SERVER = textwrap.dedent(
    """
    import asyncio, sys, time
    from aiohttp import web
    from llmsim.server import runner
    from llmsim.settings.model import Settings

    build = runner.create_app

    def busy() -> None:
        while True:
            pass

    def create_app(settings, *args, **kwargs):
        app = build(settings, *args, **kwargs)

        async def block(request):  # a handler that never gives the loop back
            time.sleep(60) if sys.argv[2] == "sleep" else busy()
            return web.Response()

        app.router.add_post("/block", block)
        return app

    runner.create_app = create_app
    if sys.argv[3] == "asyncio":
        runner.loop_factory = lambda: ("asyncio", asyncio.new_event_loop)
    settings = Settings(port=int(sys.argv[1]), shutdown_timeout="1s", access_log=False)
    runner.Server(settings).run()
    """
)


@pytest.mark.parametrize(
    ("how", "sig", "loop"),
    [("sleep", signal.SIGTERM, "default"), ("busy", signal.SIGINT, "asyncio")],
)
def test_a_stop_signal_ends_the_process_even_when_a_handler_blocks_the_loop(
    tmp_path: Path, how: str, sig: signal.Signals, loop: str
) -> None:
    port = free_port()
    log = (tmp_path / "blocked.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", BLOCKING_SERVER, str(port), how, loop], stdout=log, stderr=log
    )
    held: socket.socket | None = None
    try:
        _wait_healthy(port, process)
        held = _send(port, b"{}", path=b"/block")
        time.sleep(0.5)  # the loop is now stuck in the handler
        with pytest.raises(TimeoutError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5)
        signalled = time.monotonic()
        process.send_signal(sig)
        code = process.wait(1 + FORCE_EXIT_GRACE + 10)
        took = time.monotonic() - signalled
    finally:
        if held is not None:
            held.close()
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert code == 1
    assert 1 < took < 1 + FORCE_EXIT_GRACE + 2
    assert "in block" in (tmp_path / "blocked.log").read_text()  # where it hung


def _send(port: int, body: bytes, path: bytes = b"/v1/completions") -> socket.socket:
    """A request left open: the caller closes the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" % path
    sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    return sock


def _wait_healthy(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the blocking server did not start")
