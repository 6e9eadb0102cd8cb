"""``llmsim record`` in front of a second llmsim with distinctive timing, then
``llmsim serve --replay`` of that recording: same answers, similar timing."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import STARTUP_TIMEOUT, RunningServer, free_port, run_cli, stop_process

from llmsim.answers import RequestView
from llmsim.answers.recording import RecordingError, body_key, load_replay, view_key
from llmsim.proxy.capture import Capture

TTFT, ITL = 0.35, 0.04
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "one"}], "max_tokens": 12, "stream": True},
    ),
    ("/v1/completions", {"prompt": "two", "max_tokens": 10, "stream": True, "temperature": 0.5}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "three"}], "max_tokens": 6}),
]


def post(
    base: str, path: str, body: dict[str, Any]
) -> tuple[int, bytes, float | None, list[float]]:
    """Status, raw body, time to the first content event and the gaps between events."""
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    started = time.monotonic()
    try:
        response = urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), None, []
    times: list[float] = []
    chunks = []
    with response:
        for line in response:
            chunks.append(line)
            produced = b'"content":"' in line or b'"text":"' in line
            if line.startswith(b"data: {") and produced and b'"content":""' not in line:
                times.append(time.monotonic())
    first = times[0] - started if times else time.monotonic() - started
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    return response.status, b"".join(chunks), first, gaps


def answer_text(raw: bytes) -> str:
    if raw.startswith(b"{"):
        data = json.loads(raw)
        choice = data["choices"][0]
        return str(choice.get("text") or choice["message"]["content"])
    text = ""
    for line in raw.split(b"\n"):
        if line.startswith(b"data: {"):
            choice = json.loads(line[6:])["choices"]
            if choice:
                text += choice[0].get("text") or choice[0].get("delta", {}).get("content") or ""
    return text


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[Callable[[str, Path], str]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(upstream: str, out: Path) -> str:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
        log = (tmp_path / f"record-{port}.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llmsim",
                "record",
                "--upstream",
                upstream,
                "--out",
                str(out),
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(base + "/health", timeout=1):
                    return base
            except urllib.error.HTTPError:
                return base  # the proxy answers (the upstream may not)
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the recorder did not start")

    yield start
    for process in processes:
        stop_process(process)


def test_record_then_replay_round_trip(
    llmsim_server: Callable[..., RunningServer],
    recorder: Callable[[str, Path], str],
    tmp_path: Path,
) -> None:
    upstream = llmsim_server(
        "--time-to-first-token",
        f"{TTFT}s",
        "--inter-token-latency",
        f"{ITL}s",
        "--seed",
        "11",
        "--model",
        "org/recorded",
    )
    out = tmp_path / "recording.jsonl"
    proxy = recorder(upstream.base_url, out)
    recorded = [post(proxy, path, body) for path, body in REQUESTS]
    error = post(
        proxy,
        "/v1/chat/completions",
        {"model": "missing", "messages": [{"role": "user", "content": "x"}]},
    )
    assert error[0] == 404

    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 4
    assert [line["endpoint"] for line in lines] == ["chat", "completions", "chat", "chat"]
    assert lines[0]["request"] == REQUESTS[0][1]
    assert lines[0]["ttft"] == pytest.approx(TTFT, abs=0.25)
    assert statistics.fmean(lines[0]["gaps"]) == pytest.approx(ITL, abs=0.03)
    assert lines[0]["choices"][0]["text"] == answer_text(recorded[0][1])
    assert lines[0]["choices"][0]["finish_reason"] == "length"
    assert lines[2]["usage"]["completion_tokens"] == 6
    assert lines[3]["status"] == 404
    assert lines[3]["error"]["type"] == "NotFoundError"

    replay = llmsim_server("--replay", str(out), "--model", "org/recorded", "--mode", "echo")
    replayed = [post(replay.base_url, path, body) for path, body in REQUESTS]
    for (status, raw, first, gaps), (r_status, r_raw, r_first, r_gaps) in zip(
        recorded, replayed, strict=True
    ):
        assert r_status == status == 200
        assert answer_text(r_raw) == answer_text(raw)
        assert r_first == pytest.approx(first, abs=0.25)
        if gaps:
            assert statistics.fmean(r_gaps) == pytest.approx(statistics.fmean(gaps), abs=0.03)
    missing = post(
        replay.base_url,
        "/v1/chat/completions",
        {"model": "missing", "messages": [{"role": "user", "content": "x"}]},
    )
    assert missing[0] == 404
    unmatched = post(
        replay.base_url,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "never recorded"}]},
    )
    assert answer_text(unmatched[1]) == "never recorded"  # the configured mode

    strict = llmsim_server(
        "--replay", str(out), "--replay-strict", "--replay-speed", "4", "--model", "org/recorded"
    )
    status, raw, _, _ = post(
        strict.base_url,
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "never recorded"}]},
    )
    assert status == 404
    assert json.loads(raw)["error"]["type"] == "NotFoundError"
    fast = post(strict.base_url, *REQUESTS[0])
    assert answer_text(fast[1]) == answer_text(recorded[0][1])
    assert fast[2] is not None
    assert fast[2] < TTFT * 0.75  # four times faster


def test_a_recorder_passes_an_unreachable_upstream_on_as_502(
    recorder: Callable[[str, Path], str], tmp_path: Path
) -> None:
    out = tmp_path / "recording.jsonl"
    dead = f"http://127.0.0.1:{free_port()}"
    proxy = recorder(dead, out)
    status, raw, _, _ = post(proxy, *REQUESTS[2])
    assert status == 502
    assert json.loads(raw)["error"]["code"] == 502
    line = json.loads(out.read_text().splitlines()[-1])
    assert line["status"] == 502


def test_keys_agree_between_the_wire_and_the_parsed_request() -> None:
    body = {
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi  there"}]}],
        "temperature": 1.0,
        "max_tokens": 5,
    }
    view = RequestView(
        "chat",
        "m",
        None,
        "hi there",
        messages=(("user", "hi there"),),
        sampling={"temperature": 1, "max_tokens": 5},
    )
    assert body_key("chat", body) == view_key(view)
    other = RequestView(
        "chat",
        "m",
        None,
        "hi there",
        messages=(("user", "hi there"),),
        sampling={"temperature": 0.5, "max_tokens": 5},
    )
    assert body_key("chat", body) != view_key(other)


def test_capture_reads_streamed_tool_calls_split_across_reads() -> None:
    capture = Capture(started=0.0)
    events = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "function": {"name": "get_weather", "arguments": '{"ci'}}
                        ]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        },
    ]
    stream = b"".join(b"data: " + json.dumps(event).encode() + b"\n\n" for event in events)
    for number, start in enumerate(range(0, len(stream), 17)):
        capture.feed(stream[start : start + 17], now=float(number))
    record = capture.record("chat", {}, 200, True, now=100.0)
    choice = record["choices"][0]
    assert choice["tool_calls"] == [{"name": "get_weather", "arguments": '{"city": "Oslo"}'}]
    assert choice["finish_reason"] == "tool_calls"
    assert record["ttft"] is not None
    assert len(record["gaps"]) == 1


def test_a_broken_recording_stops_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"endpoint": "chat", "request": {}}\n{"endpoint": "embeddings"}\n')
    with pytest.raises(RecordingError, match="line 2: expected 'endpoint'"):
        load_replay(bad)
    result = run_cli("serve", "--replay", str(bad), "--port", "0")
    assert result.returncode == 1
    assert "--replay: line 2" in result.stderr
    strict = run_cli("serve", "--replay-strict", "--port", "0")
    assert strict.returncode == 2
    assert "needs a recording" in strict.stderr


def test_recorded_tool_calls_replay(
    llmsim_server: Callable[..., RunningServer],
    recorder: Callable[[str, Path], str],
    tmp_path: Path,
) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"term": {"type": "string"}},
                "required": ["term"],
            },
        },
    }
    body = {
        "messages": [{"role": "user", "content": "look it up"}],
        "tools": [tool],
        "tool_choice": "required",
        "seed": 3,
    }
    upstream = llmsim_server("--seed", "2")
    out = tmp_path / "tools.jsonl"
    proxy = recorder(upstream.base_url, out)
    status, raw, _, _ = post(proxy, "/v1/chat/completions", body)
    assert status == 200
    recorded = json.loads(raw)["choices"][0]
    line = json.loads(out.read_text().splitlines()[0])
    assert line["choices"][0]["tool_calls"][0]["name"] == "lookup"

    replay = llmsim_server("--replay", str(out), "--replay-strict")
    status, raw, _, _ = post(replay.base_url, "/v1/chat/completions", body)
    assert status == 200
    replayed = json.loads(raw)["choices"][0]
    assert replayed["finish_reason"] == recorded["finish_reason"] == "tool_calls"
    calls = [
        (call["function"]["name"], json.loads(call["function"]["arguments"]))
        for call in replayed["message"]["tool_calls"]
    ]
    assert calls == [
        (call["function"]["name"], json.loads(call["function"]["arguments"]))
        for call in recorded["message"]["tool_calls"]
    ]


def test_each_choice_of_an_n_request_replays_its_own_recording(
    llmsim_server: Callable[..., RunningServer],
    recorder: Callable[[str, Path], str],
    tmp_path: Path,
) -> None:
    body = {"messages": [{"role": "user", "content": "two takes"}], "n": 2, "max_tokens": 12}
    upstream = llmsim_server("--seed", "5")
    out = tmp_path / "two.jsonl"
    proxy = recorder(upstream.base_url, out)
    status, raw, _, _ = post(proxy, "/v1/chat/completions", body)
    assert status == 200
    recorded = [choice["message"]["content"] for choice in json.loads(raw)["choices"]]
    assert len(recorded) == 2
    assert recorded[0] != recorded[1]  # the upstream drew two answers

    replay = llmsim_server("--replay", str(out), "--replay-strict")
    status, raw, _, _ = post(replay.base_url, "/v1/chat/completions", body)
    assert status == 200
    replayed = sorted(json.loads(raw)["choices"], key=lambda choice: choice["index"])
    assert [choice["message"]["content"] for choice in replayed] == recorded
