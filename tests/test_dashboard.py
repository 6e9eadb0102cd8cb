"""The dashboard's frames, rendered to text from a real engine and synthetic events."""

from __future__ import annotations

import asyncio
import io

import pytest
from rich.console import Console

from llmsim.console.dashboard import TITLE, Dashboard, format_latency
from llmsim.engine import Engine, GenerationRequest, PromptInput, RequestGroup, Target
from llmsim.observability.live_stats import LiveStats, bin_index, bin_value
from llmsim.settings.model import Settings

URL = "http://127.0.0.1:8000"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("LLMSIM_"):
            monkeypatch.delenv(key)


def settings() -> Settings:
    return Settings(
        lora=["sql-lora", "chat-lora", "tools-lora"],
        max_loras=2,
        max_cpu_loras=3,
        max_running_requests=4,
        kv_cache_size=1000,
    )


def submit(engine: Engine, adapter: str | None, index: int) -> RequestGroup:
    target = Target(adapter or engine.settings.served_names[0], adapter)
    request = GenerationRequest(
        request_id=f"req-{index}",
        target=target,
        prompts=[PromptInput(token_count=50, echo_text="hi")],
        max_tokens=10,
    )
    return engine.submit(request)


def render_text(dashboard: Dashboard, width: int = 160) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(dashboard.render())
    return console.export_text()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0"), (0.00085, "850us"), (0.0123, "12.3ms"), (0.25, "250ms"), (1.25, "1.25s")],
)
def test_latencies_are_shown_with_three_digits_and_a_unit(seconds: float, text: str) -> None:
    assert format_latency(seconds) == text


async def test_a_frame_shows_load_lora_slots_rates_latency_and_errors() -> None:
    stats = LiveStats()
    engine = Engine(settings(), observer=stats)
    groups = [
        submit(engine, "sql-lora", 0),
        submit(engine, "chat-lora", 1),
        submit(engine, "tools-lora", 2),  # both slots are busy: it waits
        submit(engine, None, 3),
    ]
    try:
        for index in range(20):
            stats.first_token(groups[0].sequences[0], 0.040 + index * 0.001)
        stats.next_tokens(groups[0].sequences[0], 0.015, 0)
        stats.record_error(
            429,
            "RateLimitError",
            "The server is overloaded: the waiting queue is full (1000 sequences).",
            "POST",
            "/v1/chat/completions",
        )
        stats.record_error(404, "NotFoundError", "Not Found: /v2/nothing", "GET", "/v2/nothing")
        text = render_text(Dashboard(settings(), engine, stats, URL, Console()))
    finally:
        for group in groups:
            group.abort()
    assert TITLE in text
    assert URL in text
    assert "running 3 / 4" in text
    assert "waiting 1 / 1000" in text
    assert "KV cache 15.0% (150 / 1,000 tokens)" in text
    assert "2 / 2 used: sql-lora (1 running), chat-lora (1 running)" in text
    assert "LoRA waiting  tools-lora" in text
    assert "tools-lora, sql-lora, chat-lora  (CPU cache 3 / 3, least recently used first)" in text
    assert "requests 4   tokens 21   errors 2" in text
    ttft = next(line for line in text.splitlines() if "TTFT" in line)
    # 40 ms .. 59 ms: nearest-rank p50 49 ms, p90 57 ms, p99 59 ms, each shown as its bin.
    expected = [format_latency(bin_value(bin_index(ms / 1000))) for ms in (49, 57, 59)]
    assert ttft.split()[2:6] == [*expected, "20"], ttft
    itl = next(line for line in text.splitlines() if " ITL " in line)
    assert itl.split()[-2] == "1"
    assert "429 RateLimitError  POST /v1/chat/completions  The server is overloaded" in text
    assert "404 NotFoundError  GET /v2/nothing  Not Found: /v2/nothing" in text
    # The newest error comes first.
    assert text.index("404 NotFoundError") < text.index("429 RateLimitError")


async def test_an_idle_frame_says_so_and_long_lines_are_cut_to_the_width() -> None:
    stats = LiveStats()
    stats.record_error(400, "BadRequestError", "x" * 500, "POST", "/v1/completions")
    engine = Engine(settings(), observer=stats)
    text = render_text(Dashboard(settings(), engine, stats, URL, Console()), width=100)
    assert "0 / 2 used" in text
    assert all(len(line) <= 100 for line in text.splitlines())
    assert "…" in text
    assert text.count("-") >= 6  # no percentiles yet


async def test_frames_are_drawn_at_least_twice_a_second_on_a_terminal() -> None:
    stats = LiveStats()
    engine = Engine(settings(), observer=stats)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    dashboard = Dashboard(settings(), engine, stats, URL, console)
    dashboard.start()
    await asyncio.sleep(2.0)
    drawn = out.getvalue().count(TITLE)
    await dashboard.stop()
    assert drawn >= 4, f"{drawn} frames in 2 s"


async def test_off_a_terminal_only_the_last_frame_is_printed() -> None:
    stats = LiveStats()
    engine = Engine(settings(), observer=stats)
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    dashboard = Dashboard(settings(), engine, stats, URL, console)
    dashboard.start()
    await asyncio.sleep(0.6)
    assert out.getvalue() == ""
    stats.request_submitted(1)
    await dashboard.stop()
    text = out.getvalue()
    assert text.count(TITLE) == 1
    assert "requests 1 " in text
    assert "\x1b[" not in text


async def test_names_and_messages_are_shown_literally_on_one_line() -> None:
    stats = LiveStats()
    stats.record_error(400, "BadRequestError", "first line\nsecond [bold]line[/bold]", "POST", "/x")
    odd = Settings(model="org/[beta]-model")
    text = render_text(Dashboard(odd, Engine(odd, observer=stats), stats, URL, Console()))
    assert "org/[beta]-model" in text
    assert "first line second [bold]line[/bold]" in text


async def test_step_mode_shows_kv_blocks_prefix_hits_and_preemptions() -> None:
    step = Settings(
        latency_model="step",
        kv_cache_size=4096,
        max_model_len=1024,
        inter_token_latency="20ms",
    )
    stats = LiveStats()
    engine = Engine(step, observer=stats)
    ids = list(range(64))
    request = GenerationRequest(
        request_id="req-step",
        target=Target(step.served_names[0], None),
        prompts=[PromptInput(64, "hi", ids)],
        n=2,
        max_tokens=50,
        ignore_eos=True,
    )
    with engine.submit(request) as group:
        task = asyncio.ensure_future(group.run())
        await asyncio.sleep(0.1)
        text = render_text(Dashboard(step, engine, stats, URL, Console()), width=200)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert "running 2 / 256" in text
    assert "waiting 0 / 1000" in text
    # 64 prompt tokens in 4 blocks and a fifth for output; the sibling shares the first 3
    # (one prompt token is always computed, so it fills a copy of the 4th, cached beside the
    # first as vLLM does not de-duplicate blocks) and adds its own
    assert "KV cache 2.7% (7 / 256 blocks, 5 cached)" in text
    assert "prefix hits 37.5%" in text  # 48 of 128 tokens looked up
    assert "preemptions 0" in text
