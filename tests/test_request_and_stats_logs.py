"""vLLM's request log and periodic stats line, read from a real server's output.

The servers log JSON lines (``--log-format json``) so that each record is one message."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable

from conftest import RunningServer, post_json

MODEL = "org/m"
STATS = re.compile(
    r"Engine (\d{3}): Avg prompt throughput: [\d.]+ tokens/s, Avg generation throughput: "
    r"[\d.]+ tokens/s, Running: \d+ reqs, Waiting: \d+ reqs, GPU KV cache usage: [\d.]+%, "
    r"Prefix cache hit rate: [\d.]+%"
)
STREAM_COMPLETE = re.compile(r"Generated response chatcmpl-\S+ \(streaming complete\)")
LOG_OUTPUTS = ("--enable-log-requests", "--enable-log-outputs", "--disable-log-stats")


def records(server: RunningServer) -> list[dict[str, str]]:
    lines = server.log().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def messages(server: RunningServer) -> str:
    """Every logged message (not the access log's), one a line, as ``LEVEL message``."""
    return "\n".join(
        f"{record['level'].upper()} {record['message']}"
        for record in records(server)
        if "message" in record
    )


def wait_for(server: RunningServer, pattern: re.Pattern[str], timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = messages(server)
        if pattern.search(log):
            return log
        time.sleep(0.05)
    raise AssertionError(f"{pattern.pattern!r} not logged:\n{server.log()}")


def serve(start: Callable[..., RunningServer], *args: str) -> RunningServer:
    return start(*args, "--log-format", "json")


def complete(server: RunningServer, prompt: str = "hello there, world", **extra: object) -> None:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 3, **extra}
    status, answer = post_json(server, "/v1/completions", body)
    assert status == 200, answer


def stream_chat(server: RunningServer) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "stream": True,
    }
    request = urllib.request.Request(
        server.base_url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        response.read()


def test_requests_and_outputs_are_logged_as_vllm_logs_them_cut_to_max_log_len(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = serve(
        llmsim_server,
        MODEL,
        *LOG_OUTPUTS,
        "--max-log-len",
        "4",
        "--log-stats-interval",
        "100ms",
        "--log-level",
        "debug",
    )
    complete(server, seed=7, temperature=0.5)
    stream_chat(server)
    log = wait_for(server, STREAM_COMPLETE)
    received = re.search(r"Received request (cmpl-\w+): params: SamplingParams\((.*?)\), lora", log)
    assert received is not None, log
    request_id, params = received.groups()
    for field in ("n=1", "temperature=0.5", "seed=7", "max_tokens=3"):
        assert field in params
    details = re.search(
        rf"Request {request_id} details: prompt: '(.*?)', prompt_token_ids: \[(.*?)\]", log
    )
    assert details is not None, log
    assert details.group(1) == "hell"  # --max-log-len 4
    assert len(details.group(2).split(",")) == 4
    output = re.search(
        rf"Generated response {request_id}: output: '(.*?)', output_token_ids: \[(.*?)\], "
        r"finish_reason: length",
        log,
    )
    assert output is not None, log
    assert len(output.group(1)) <= 4
    assert len(output.group(2).split(",")) == 3
    # the stream's two tokens, each logged as it went out, the last with its finish reason
    deltas = re.findall(
        r"Generated response (chatcmpl-\S+) \(streaming delta\): output: '.*?', "
        r"output_token_ids: \[(\d+)\], finish_reason: (\w+)",
        log,
    )
    assert [reason for _, _, reason in deltas] == ["None", "length"], log
    complete_at = log.index(f"Generated response {deltas[0][0]} (streaming complete)")
    assert log.rindex("(streaming delta)") < complete_at
    time.sleep(0.3)  # several stats intervals: none logged with --disable-log-stats
    assert not STATS.search(messages(server))


def test_no_enable_log_deltas_logs_only_the_finished_stream(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = serve(llmsim_server, MODEL, *LOG_OUTPUTS, "--no-enable-log-deltas")
    stream_chat(server)
    log = wait_for(server, STREAM_COMPLETE)
    assert "(streaming delta)" not in log


def test_a_vllm_command_line_logs_stats_and_no_requests_by_default(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = serve(llmsim_server, MODEL, "--log-stats-interval", "200ms")
    complete(server)
    log = wait_for(server, STATS)
    assert "INFO Engine 000: Avg prompt throughput: " in log
    assert "Received request" not in log


def test_every_data_parallel_engine_logs_its_own_line(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    # at debug even idle engines log, so both lines come whatever the balancing
    server = serve(
        llmsim_server, MODEL, "-dp", "2", "--log-stats-interval", "150ms", "--log-level", "debug"
    )
    complete(server)
    log = wait_for(server, re.compile(r"Engine 001: Avg prompt"))
    assert "Engine 000: Avg prompt" in log


def test_llmsims_own_command_line_logs_no_stats_unless_asked(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    quiet = serve(llmsim_server, "--model", MODEL, "--log-stats-interval", "100ms")
    asked = serve(llmsim_server, "--model", MODEL, "--log-stats", "--log-stats-interval", "100ms")
    complete(quiet)
    complete(asked)
    wait_for(asked, STATS)
    time.sleep(0.3)
    assert not STATS.search(messages(quiet))
