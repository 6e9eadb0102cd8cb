"""vLLM's ``--reasoning-parser`` and ``--enable-auto-tool-choice`` from outside: a server
started from a vLLM command line, talked to over HTTP in each API's shape."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import RunningServer, post_json, run_cli, start_server, stream_events

MODEL = "org/thinker"
TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
AUTO_REFUSED = (
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A vLLM command line: the model positional, a reasoning parser, no tool flags."""
    running = start_server(
        [MODEL, "--reasoning-parser", "qwen3", "--max-model-len", "512", "--seed", "1"],
        tmp_path_factory.mktemp("reasoning"),
    )
    yield running
    running.stop()


def chat(server: RunningServer, **fields: Any) -> tuple[int, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Why?"}], **fields}
    return post_json(server, "/v1/chat/completions", {"max_tokens": 60, **body})


def test_chat_answers_carry_the_thought_before_the_answer(server: RunningServer) -> None:
    status, body = chat(server, seed=5)
    assert status == 200
    message = body["choices"][0]["message"]
    assert message["reasoning"]
    assert message["content"]
    assert message["content"] not in message["reasoning"]
    # The thought is tokens like any other: counted in the completion.
    _, plain = chat(server, seed=5, include_reasoning=False)
    assert plain["usage"]["completion_tokens"] == body["usage"]["completion_tokens"]
    assert plain["choices"][0]["message"]["reasoning"] is None
    assert plain["choices"][0]["message"]["content"] == message["content"]

    chunks = stream_events(
        server,
        "/v1/chat/completions",
        {
            "model": MODEL,
            "seed": 5,
            "max_tokens": 60,
            "messages": [{"role": "user", "content": "Why?"}],
        },
    )
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    kinds = [next(k for k in ("reasoning", "content") if k in d) for d in deltas[1:] if len(d) == 1]
    assert kinds == sorted(kinds, reverse=True)  # every reasoning delta before any content
    assert "".join(d.get("reasoning", "") for d in deltas) == message["reasoning"]
    assert "".join(d.get("content") or "" for d in deltas) == message["content"]


def test_enable_thinking_false_turns_the_thought_off(server: RunningServer) -> None:
    _, body = chat(server, chat_template_kwargs={"enable_thinking": False})
    assert body["choices"][0]["message"]["reasoning"] is None
    assert body["choices"][0]["message"]["content"]


def test_a_small_max_tokens_cuts_the_thought_and_leaves_no_answer(server: RunningServer) -> None:
    _, body = chat(server, max_tokens=2)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None
    assert choice["message"]["reasoning"]


def test_responses_and_messages_show_the_thought_as_vllm_does(server: RunningServer) -> None:
    _, response = post_json(server, "/v1/responses", {"model": MODEL, "input": "Why?", "seed": 2})
    reasoning = response["output"][0]
    assert reasoning["type"] == "reasoning"
    assert reasoning["id"].startswith("rs_")
    assert reasoning["content"][0]["type"] == "reasoning_text"
    assert reasoning["content"][0]["text"]
    assert response["output"][1]["type"] == "message"

    streamed = stream_events(server, "/v1/responses", {"model": MODEL, "input": "Why?"})
    kinds = [event["type"] for event in streamed]
    assert kinds.index("response.reasoning_text.delta") < kinds.index("response.output_text.delta")
    done = [e["item"] for e in streamed if e["type"] == "response.output_item.done"]
    assert done[0]["type"] == "reasoning"
    assert done[0]["status"] == "completed"

    message = {"model": MODEL, "max_tokens": 60, "messages": [{"role": "user", "content": "Hi"}]}
    _, anthropic = post_json(server, "/v1/messages", message)
    thinking = anthropic["content"][0]
    assert thinking["type"] == "thinking"
    assert thinking["thinking"]
    assert thinking["signature"]
    blocks = stream_events(server, "/v1/messages", message)
    starts = [e["content_block"]["type"] for e in blocks if e["type"] == "content_block_start"]
    assert starts[0] == "thinking"
    deltas = [e["delta"]["type"] for e in blocks if e["type"] == "content_block_delta"]
    assert "thinking_delta" in deltas
    assert "signature_delta" in deltas


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tools": TOOLS}, AUTO_REFUSED),
        ({"tools": TOOLS, "tool_choice": "auto"}, AUTO_REFUSED),
        ({"tools": TOOLS, "tool_choice": "required"}, "requires --tool-call-parser to be set"),
    ],
)
def test_a_vllm_command_line_without_the_flags_refuses_tool_choice(
    server: RunningServer, fields: dict[str, Any], message: str
) -> None:
    status, body = chat(server, **fields)
    assert status == 400
    assert message in body["error"]["message"]
    status, _ = chat(server, tools=TOOLS, tool_choice="none")
    assert status == 200


def test_the_flags_allow_auto_and_llmsim_alone_allows_it_anyway(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    for args in (
        [MODEL, "--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
        ["--model", MODEL],  # llmsim's own flags: its default stands
    ):
        running = llmsim_server(*args)
        status, body = chat(running, tools=TOOLS, tool_choice="auto")
        assert status == 200, body
        assert "reasoning" not in body["choices"][0]["message"]  # no parser, no field


def test_default_chat_template_kwargs_and_unused_tools_as_vllm_serves_them(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    """A Qwen3 deployment started without thinking: the request's own kwargs still win, and
    the server's kwargs reach the template the prompt is counted on."""
    running = llmsim_server(
        MODEL,
        "--reasoning-parser",
        "qwen3",
        "--default-chat-template-kwargs",
        '{"enable_thinking": false}',
        "--exclude-tools-when-tool-choice-none",
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
    )
    _, body = chat(running)
    assert body["choices"][0]["message"]["reasoning"] is None
    assert body["choices"][0]["message"]["content"]
    _, asked = chat(running, chat_template_kwargs={"enable_thinking": True})
    assert asked["choices"][0]["message"]["reasoning"]
    message = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}
    _, anthropic = post_json(running, "/v1/messages", message)
    assert [block["type"] for block in anthropic["content"]] == ["text"]

    # Tools the model may not call are left out of the prompt; any other choice renders them.
    _, bare = chat(running)
    _, unused = chat(running, tools=TOOLS, tool_choice="none")
    _, offered = chat(running, tools=TOOLS, tool_choice="auto")
    assert unused["usage"]["prompt_tokens"] == bare["usage"]["prompt_tokens"]
    assert offered["usage"]["prompt_tokens"] > bare["usage"]["prompt_tokens"]


def test_reasoning_effort_turns_thinking_on_or_off(server: RunningServer) -> None:
    """As vLLM's renderer: any effort but none asks for thinking, unless the request's own
    chat template kwargs say otherwise; an effort vLLM does not know is a 400."""
    _, off = chat(server, reasoning_effort="none")
    assert off["choices"][0]["message"]["reasoning"] is None
    _, on = chat(server, reasoning_effort="high")
    assert on["choices"][0]["message"]["reasoning"]
    _, own = chat(server, reasoning_effort="high", chat_template_kwargs={"enable_thinking": False})
    assert own["choices"][0]["message"]["reasoning"] is None
    status, refused = chat(server, reasoning_effort="huge")
    assert status == 400
    assert "reasoning_effort" in refused["error"]["message"]
    body = {"model": MODEL, "input": "Why?", "reasoning": {"effort": "none"}}
    _, response = post_json(server, "/v1/responses", body)
    assert [item["type"] for item in response["output"]] == ["message"]


def test_reasoning_effort_map_rewrites_the_effort(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    running = llmsim_server(
        MODEL, "--reasoning-parser", "qwen3", "--reasoning-effort-map", '{"low": "none"}'
    )
    _, low = chat(running, reasoning_effort="low")
    assert low["choices"][0]["message"]["reasoning"] is None
    _, medium = chat(running, reasoning_effort="medium")
    assert medium["choices"][0]["message"]["reasoning"]
    result = run_cli("serve", MODEL, "--reasoning-effort-map", '{"huge": "max"}')
    assert result.returncode == 2
    assert "unknown efforts ['huge']" in result.stderr
