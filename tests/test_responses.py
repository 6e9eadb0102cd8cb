"""Response rules: start-up checks, every matcher and action, the HTTP path and run-time
replacement (``POST /admin/responses``, ``llmsim ctl responses``)."""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, post_json, run_cli

from llmsim.answers import RequestView
from llmsim.answers.rules import RuleMatcher
from llmsim.answers.schema_check import schema_problem
from llmsim.api.http.app import create_app
from llmsim.engine import TimingOverride
from llmsim.engine.timing import LatencyModel, LatencyProfile
from llmsim.settings.model import Settings
from llmsim.settings.responses import ResponsesError, load_rules, parse_rules
from llmsim.settings.sources import load_settings

ROOT = Path(__file__).resolve().parent.parent
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def rules(*raw: dict[str, Any], **top: Any) -> RuleMatcher:
    return RuleMatcher(parse_rules({"rules": list(raw), **top}), random.Random(1))


def view(text: str = "hello", **fields: Any) -> RequestView:
    fields.setdefault("endpoint", "chat")
    fields.setdefault("model", "llmsim/sim-model")
    fields.setdefault("adapter", None)
    return RequestView(text=text, **fields)


# -- start-up checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"name": "r", "regex": "(oops", "text": "x"}, "rule 'r' (#1), key 'regex': invalid"),
        ({"name": "r", "text": "x", "colour": "red"}, "key 'colour': unknown key"),
        ({"name": "r", "contains": "x"}, "key 'text': a rule needs exactly one of"),
        ({"name": "r", "text": "a", "json": {}}, "key 'json': a rule needs exactly one of"),
        ({"name": "r", "text": "a", "nth": 1, "every": 2}, "key 'every': cannot be combined"),
        ({"name": "r", "regex": "(a)", "text": "{2}"}, "key 'text': refers to capture {2}"),
        ({"name": "r", "text": "{1}"}, "key 'text': uses a capture"),
        (
            {"name": "r", "tools": False, "tool_call": {"name": "f"}},
            "key 'tool_call': cannot call a tool",
        ),
        (
            {"name": "r", "endpoint": "completions", "tool_call": {"name": "f"}},
            "key 'tool_call': the completions endpoint has no tools",
        ),
        (
            {"name": "r", "endpoint": "completions", "system": "x", "text": "a"},
            "key 'system': the completions endpoint has no system prompt",
        ),
        (
            {"name": "r", "error": {"status": 500}, "max_tokens": 3},
            "key 'max_tokens': an error answer",
        ),
        ({"name": "r", "text": "a", "finish_reason": "tool_calls"}, "key 'finish_reason'"),
        ({"name": "r", "error": {"status": 200}}, "key 'error.status'"),
        ({"name": "r", "text": "a", "endpoint": "embeddings"}, "key 'endpoint': unknown value"),
        ({"name": "r", "text": "a", "nth": 0}, "key 'nth': expected a whole number"),
        ({"name": "r", "text": "a", "time_to_first_token": "soon"}, "'time_to_first_token'"),
        ({"text": "a", "tools": "yes"}, "rule #1, key 'tools'"),
    ],
)
def test_a_bad_rule_is_one_line_naming_the_rule_and_the_key(
    rule: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ResponsesError) as caught:
        parse_rules({"rules": [rule]})
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_top_level_keys_and_builtins_are_refused() -> None:
    with pytest.raises(ResponsesError, match="unknown key 'rule'"):
        parse_rules({"rule": []})
    with pytest.raises(ResponsesError, match="unknown built-in rule set 'chores'"):
        load_rules("builtin:chores")


def test_serve_exits_2_with_the_rule_and_key_named(tmp_path: Path) -> None:
    bad = tmp_path / "rules.toml"
    bad.write_text('[[rules]]\nname = "weather"\nregex = "(unclosed"\ntext = "x"\n')
    result = run_cli("serve", "--responses", str(bad), "--port", "0")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "--responses: rule 'weather' (#1), key 'regex': invalid regular expression" in lines[0]


@pytest.mark.usefixtures("clean_env")
def test_a_profile_can_hold_a_responses_table(tmp_path: Path) -> None:
    config = tmp_path / "llmsim.toml"
    config.write_text(
        '[profiles.demo.responses]\nbuiltin = "tasks"\n'
        '[[profiles.demo.responses.rules]]\nname = "hi"\ncontains = "hi"\ntext = "hello"\n'
    )
    settings = load_settings({"config": str(config), "profile": "demo"}).settings
    assert settings.responses is not None
    assert [rule.name for rule in settings.responses.rules] == ["hi"]
    assert settings.responses.builtin == "tasks"


@pytest.mark.usefixtures("clean_env")
def test_the_example_rules_file_loads() -> None:
    rules = load_rules(str(ROOT / "examples" / "responses.toml"))
    assert len(rules.rules) >= 5
    assert rules.builtin == "tasks"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("LLMSIM_", "VLLM_")):
            monkeypatch.delenv(name)


# -- matchers -------------------------------------------------------------------------


def test_model_and_adapter_matchers() -> None:
    matcher = rules({"model": ["sql-lora"], "text": "adapter"}, {"model": "base", "text": "base"})
    assert matcher.choose(view(model="sql-lora", adapter="sql-lora")).answer.text == "adapter"
    assert matcher.choose(view(model="base")).answer.text == "base"
    assert matcher.choose(view(model="other")) is None


def test_endpoint_contains_and_system_matchers() -> None:
    matcher = rules(
        {"endpoint": "completions", "text": "completion"},
        {"contains": "WEATHER", "text": "contains"},
        {"system": "pirate", "text": "arr"},
    )
    assert matcher.choose(view("x", endpoint="completions")).answer.text == "completion"
    assert matcher.choose(view("the weather today")).answer.text == "contains"
    assert matcher.choose(view("x", system="You are a Pirate.")).answer.text == "arr"
    assert matcher.choose(view("x")) is None


def test_regex_captures_fill_text_json_and_tool_arguments() -> None:
    matcher = rules(
        {
            "regex": r"weather in (\w+)",
            "tool_call": {"name": "get_weather", "arguments": {"city": "{1}"}},
        },
        {"regex": r"weather in (\w+)", "text": "Sunny in {1} ({0})."},
        {"regex": r"order (\d+)", "json": {"order": "{1}", "items": ["{1}"]}},
    )
    tools = {"get_weather": WEATHER_TOOL["function"]["parameters"]}
    call = matcher.choose(view("weather in Oslo", tools=tools)).answer.tool_calls[0]
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Oslo"})
    assert matcher.choose(view("weather in Oslo")).answer.text == "Sunny in Oslo (weather in Oslo)."
    assert json.loads(matcher.choose(view("order 42")).answer.text) == {
        "order": "42",
        "items": ["42"],
    }


def test_tools_matcher() -> None:
    matcher = rules({"tools": True, "text": "with"}, {"tools": False, "text": "without"})
    assert matcher.choose(view(tools={"f": {}})).answer.text == "with"
    assert matcher.choose(view()).answer.text == "without"


def test_nth_and_every_count_the_requests_the_rule_saw() -> None:
    matcher = rules(
        {"contains": "a", "nth": 2, "text": "second"},
        {"contains": "b", "every": 3, "text": "third"},
    )
    seen_a = [matcher.choose(view("a")) for _ in range(3)]
    assert [c.answer.text if c and c.answer else None for c in seen_a] == [None, "second", None]
    seen_b = [matcher.choose(view("b")) for _ in range(6)]
    assert [c.answer.text if c and c.answer else None for c in seen_b] == [None, None, "third"] * 2


def test_the_first_matching_rule_decides() -> None:
    matcher = rules({"contains": "x", "text": "first"}, {"contains": "x", "text": "second"})
    assert matcher.choose(view("x")).answer.text == "first"


# -- actions --------------------------------------------------------------------------


def test_texts_are_a_seeded_choice() -> None:
    def picks(seed: int) -> list[str]:
        matcher = RuleMatcher(
            parse_rules({"rules": [{"texts": ["a", "b", "c", "d"]}]}), random.Random(seed)
        )
        return [matcher.choose(view()).answer.text for _ in range(20)]

    assert picks(3) == picks(3)
    assert set(picks(3)) <= {"a", "b", "c", "d"}
    assert len(set(picks(3))) > 1
    request_seeded = rules({"texts": ["a", "b", "c", "d"]})
    assert len({request_seeded.choose(view(seed=9)).answer.text for _ in range(10)}) == 1


def test_a_tool_call_needs_the_tool_offered_and_arguments_that_fit_its_schema() -> None:
    matcher = rules(
        {"tool_call": {"name": "get_weather", "arguments": {"city": "Oslo", "days": "two"}}}
    )
    assert matcher.choose(view()) is None  # no tools offered: the rule does not match
    assert matcher.choose(view(tools={"other": {}})) is None
    choice = matcher.choose(view(tools={"get_weather": WEATHER_TOOL["function"]["parameters"]}))
    assert choice.error is not None
    assert choice.error.status == 500
    assert "$.days: expected integer" in choice.error.message


def test_tool_call_finish_reason_and_overrides() -> None:
    matcher = rules(
        {
            "tool_call": {"name": "f", "arguments": {"x": 1}},
            "time_to_first_token": "250ms",
            "inter_token_latency": 10,
        },
        {"text": "cut", "max_tokens": 2, "finish_reason": "length"},
    )
    call = matcher.choose(view(tools={"f": {}}))
    assert call.answer.tool_calls[0].arguments == '{"x": 1}'
    assert call.timing.time_to_first_token == pytest.approx(0.25)
    assert call.timing.inter_token_latency == pytest.approx(0.01)
    cut = matcher.choose(view())
    assert (cut.max_tokens, cut.answer.finish_reason, cut.timing) == (2, "length", None)


def test_error_action() -> None:
    matcher = rules({"error": {"status": 429, "type": "RateLimitError", "message": "slow"}})
    error = matcher.choose(view()).error
    assert (error.status, error.type, error.message) == (429, "RateLimitError", "slow")
    default = rules({"error": {"status": 503}}).choose(view()).error
    assert default.type == "InternalServerError"


@pytest.mark.parametrize(
    ("value", "schema", "problem"),
    [
        ({"a": 1}, {"type": "object", "required": ["b"]}, "missing required property 'b'"),
        ({"a": True}, {"properties": {"a": {"type": "integer"}}}, "$.a: expected integer"),
        ({"a": 5}, {"properties": {"a": {"maximum": 3}}}, "$.a: must be at most 3"),
        ({"a": "x"}, {"properties": {"a": {"enum": ["y"]}}}, "expected one of"),
        ({"a": "x"}, {"additionalProperties": False}, "unexpected property 'a'"),
        ([1, "2"], {"items": {"type": "integer"}}, "$[1]: expected integer"),
        ("ab", {"pattern": "^a$"}, "does not match"),
        (3, {"anyOf": [{"type": "string"}, {"type": "null"}]}, "matches none"),
    ],
)
def test_schema_check_names_the_first_problem(value: Any, schema: Any, problem: str) -> None:
    found = schema_problem(value, schema)
    assert found is not None
    assert problem in found


def test_schema_check_accepts_what_fits() -> None:
    schema = WEATHER_TOOL["function"]["parameters"]
    assert schema_problem({"city": "Oslo", "days": 2.0}, schema) is None
    assert schema_problem({"anything": 1}, {}) is None


# -- over HTTP ------------------------------------------------------------------------


def app_with(rules_data: dict[str, Any], **settings: Any) -> Any:
    return create_app(Settings(responses=rules_data, **settings))


async def post(client: Any, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = await client.post(path, json=body)
    return response.status, await response.json()


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], **extra}


async def test_rules_answer_over_http_and_unmatched_requests_keep_the_mode(
    aiohttp_client: Any,
) -> None:
    client = await aiohttp_client(
        app_with({"rules": [{"regex": r"weather in (\w+)", "text": "Sunny in {1}."}]}, mode="echo")
    )
    status, body = await post(client, "/v1/chat/completions", chat("weather in Rome"))
    assert status == 200
    assert body["choices"][0]["message"]["content"] == "Sunny in Rome."
    status, body = await post(client, "/v1/chat/completions", chat("just echo me"))
    assert body["choices"][0]["message"]["content"] == "just echo me"
    status, body = await post(client, "/v1/completions", {"prompt": "weather in Oslo"})
    assert body["choices"][0]["text"] == "Sunny in Oslo."


async def test_error_rules_answer_in_vllm_shape_with_their_type(aiohttp_client: Any) -> None:
    client = await aiohttp_client(
        app_with(
            {
                "rules": [
                    {
                        "contains": "boom",
                        "error": {"status": 418, "type": "Teapot", "message": "short and stout"},
                    }
                ]
            }
        )
    )
    status, body = await post(client, "/v1/chat/completions", chat("boom"))
    assert status == 418
    assert body == {
        "error": {"message": "short and stout", "type": "Teapot", "param": None, "code": 418}
    }


async def test_timing_and_max_tokens_overrides_reach_the_engine(aiohttp_client: Any) -> None:
    client = await aiohttp_client(
        app_with(
            {
                "rules": [
                    {"contains": "slow", "text": "one two three", "time_to_first_token": "300ms"},
                    {"contains": "cut", "text": "one two three four five", "max_tokens": 2},
                ]
            }
        )
    )
    started = time.monotonic()
    status, body = await post(client, "/v1/chat/completions", chat("slow please"))
    assert status == 200
    assert time.monotonic() - started >= 0.28
    started = time.monotonic()
    status, body = await post(client, "/v1/chat/completions", chat("cut please"))
    assert time.monotonic() - started < 0.28
    choice = body["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("one two", "length")
    assert body["usage"]["completion_tokens"] == 2


async def test_tool_call_rules_answer_with_tool_calls(aiohttp_client: Any) -> None:
    client = await aiohttp_client(
        app_with(
            {
                "rules": [
                    {
                        "regex": r"weather in (\w+)",
                        "tool_call": {"name": "get_weather", "arguments": {"city": "{1}"}},
                    },
                    {"contains": "cut", "text": "a short answer", "finish_reason": "length"},
                ]
            },
            mode="echo",
        )
    )
    status, body = await post(
        client, "/v1/chat/completions", chat("weather in Rome", tools=[WEATHER_TOOL])
    )
    assert status == 200
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Rome"}

    response = await client.post(
        "/v1/chat/completions", json=chat("weather in Oslo", tools=[WEATHER_TOOL], stream=True)
    )
    streamed = (await response.read()).decode()
    assert '"name":"get_weather"' in streamed
    assert '"finish_reason":"tool_calls"' in streamed

    status, body = await post(client, "/v1/chat/completions", chat("weather in Rome"))
    assert body["choices"][0]["message"]["content"] == "weather in Rome"  # no tools offered
    status, body = await post(client, "/v1/chat/completions", chat("cut here"))
    assert body["choices"][0]["message"]["content"] == "a short answer"
    assert body["choices"][0]["finish_reason"] == "length"


async def test_a_tool_call_that_breaks_the_schema_is_a_500_naming_the_problem(
    aiohttp_client: Any,
) -> None:
    client = await aiohttp_client(
        app_with({"rules": [{"tool_call": {"name": "get_weather", "arguments": {"days": 2}}}]})
    )
    status, body = await post(client, "/v1/chat/completions", chat("x", tools=[WEATHER_TOOL]))
    assert status == 500
    assert "missing required property 'city'" in body["error"]["message"]


async def test_admin_responses_replaces_the_rules_at_run_time(aiohttp_client: Any) -> None:
    client = await aiohttp_client(app_with({"rules": [{"contains": "x", "text": "old"}]}))
    status, body = await post(client, "/v1/chat/completions", chat("x"))
    assert body["choices"][0]["message"]["content"] == "old"
    status, body = await post(
        client, "/admin/responses", {"rules": [{"name": "n", "contains": "x", "text": "new"}]}
    )
    assert status == 200
    assert body["rules"][0]["name"] == "n"
    status, body = await post(client, "/v1/chat/completions", chat("x"))
    assert body["choices"][0]["message"]["content"] == "new"
    status, body = await post(client, "/admin/responses", {"rules": [{"regex": "(", "text": "a"}]})
    assert status == 400
    assert "key 'regex'" in body["error"]["message"]
    status, body = await post(client, "/admin/responses", {"source": "/etc/passwd"})
    assert status == 400
    status, body = await post(client, "/v1/chat/completions", chat("x"))
    assert body["choices"][0]["message"]["content"] == "new"
    response = await client.get("/admin/responses")
    assert (await response.json())["rules"][0]["text"] == "new"
    status, body = await post(client, "/admin/responses", {"source": "builtin:tasks"})
    assert status == 200
    assert body["builtin"] == "tasks"


def test_ctl_responses_set_replaces_the_rules_of_a_running_server(
    llmsim_server: Any, tmp_path: Path
) -> None:
    server: RunningServer = llmsim_server("--mode", "echo")
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text('[[rules]]\nname = "ping"\ncontains = "ping"\ntext = "pong"\n')
    result = run_cli("ctl", "responses", "set", str(rules_file), "--url", server.base_url)
    assert result.returncode == 0, result.stderr
    assert "1 response rule(s)" in result.stdout
    assert "ping" in result.stdout
    request = urllib.request.Request(
        server.api_url + "/chat/completions",
        data=json.dumps(chat("ping")).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert json.loads(response.read())["choices"][0]["message"]["content"] == "pong"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nname = "b"\ntext = "x"\nnth = 0\n')
    result = run_cli("ctl", "responses", "set", str(bad), "--url", server.base_url)
    assert result.returncode == 2
    assert "rule 'b' (#1), key 'nth'" in result.stderr
    result = run_cli("ctl", "responses", "clear", "--url", server.base_url)
    assert result.returncode == 0
    assert "0 response rule(s)" in result.stdout


def test_a_timing_override_replaces_the_means_and_their_jitter() -> None:
    model = LatencyModel(
        LatencyProfile(
            time_to_first_token=1.0,
            time_to_first_token_std_dev=0.3,
            inter_token_latency=0.1,
            inter_token_latency_std_dev=0.03,
            time_factor_under_load=3.0,
            latency_model="per-token",
            prefill_time_per_token=0.01,
        ),
        random.Random(1),
    )
    both = model.overridden(TimingOverride(0.25, 0.02))
    assert both.first_token_delay(1000, 1.0) == pytest.approx(0.25)
    assert both.inter_token_delay(2.0) == pytest.approx(0.04)  # the load factor still applies
    assert both.fixed_inter_token_delay(1.0) == pytest.approx(0.02)
    only_gap = model.overridden(TimingOverride(inter_token_latency=0.05))
    # the per-token model kept: one step (the overridden gap) plus 100 prompt tokens
    assert only_gap.mean_first_token_delay(100) == pytest.approx(0.05 + 1.0)
    assert model.inter_token_delay(1.0) != pytest.approx(0.05)


async def test_the_example_rules_answer_as_their_comments_say(aiohttp_client: Any) -> None:
    example = str(ROOT / "examples" / "responses.toml")
    client = await aiohttp_client(
        create_app(Settings(responses=example, seed=3, lora=["sql-lora"]))
    )
    _, body = await post(client, "/v1/chat/completions", chat("What is the weather in Paris?"))
    assert body["choices"][0]["message"]["content"] == "It is sunny and 21 °C in Paris."
    _, body = await post(
        client, "/v1/chat/completions", chat("weather in Oslo", tools=[WEATHER_TOOL])
    )
    call = body["choices"][0]["message"]["tool_calls"][0]["function"]
    assert json.loads(call["arguments"]) == {"city": "Oslo"}
    sentiment = {
        "messages": [
            {"role": "system", "content": "Classify the sentiment of the text."},
            {"role": "user", "content": "I love it"},
        ]
    }
    _, body = await post(client, "/v1/chat/completions", sentiment)
    assert body["choices"][0]["message"]["content"] in {"positive", "negative", "neutral"}
    _, body = await post(client, "/v1/chat/completions", chat("Please extract the order"))
    assert json.loads(body["choices"][0]["message"]["content"])["item"] == "coffee"
    statuses = [
        (await post(client, "/v1/chat/completions", chat("hi", model="sql-lora")))[0]
        for _ in range(3)
    ]
    assert statuses == [200, 200, 503]
    _, body = await post(client, "/v1/completions", {"prompt": "anything", "max_tokens": 20})
    assert body["choices"][0]["finish_reason"] == "length"
    _, body = await post(client, "/v1/chat/completions", chat("Write a Go function"))
    assert "```go" in body["choices"][0]["message"]["content"]  # the built-in task answers


def test_the_endpoint_matcher_tells_the_responses_and_messages_apis_apart(
    llmsim_server: Callable[..., RunningServer], tmp_path: Path
) -> None:
    rules_file = tmp_path / "rules.toml"
    rules_file.write_text(
        '[[rules]]\nendpoint = "responses"\ntext = "from the responses rule"\n\n'
        '[[rules]]\nendpoint = "messages"\ntext = "from the messages rule"\n\n'
        '[[rules]]\nendpoint = "chat"\ntext = "from the chat rule"\n'
    )
    server = llmsim_server("--responses", str(rules_file))
    _, answer = post_json(server, "/v1/responses", {"input": "hi", "max_output_tokens": 20})
    assert answer["output"][0]["content"][0]["text"] == "from the responses rule"
    _, answer = post_json(
        server,
        "/v1/messages",
        {
            "model": "llmsim/sim-model",
            "max_tokens": 20,
            "messages": [{"role": "user", "content": "hi"}],
        },
    )
    assert answer["content"][0]["text"] == "from the messages rule"
    _, answer = post_json(
        server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}
    )
    assert answer["choices"][0]["message"]["content"] == "from the chat rule"
