"""Tokenizers, /tokenize and /detokenize, and vLLM's small endpoints (/ping, /load).

Servers are the real CLI on loopback. The Hugging Face tokenizer is built here with the
``tokenizers`` library (nothing is downloaded), and every expected count comes from
that tokenizer itself, so the test checks llmsim against what a client would count.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningServer, run_cli, start_server
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsim.engine.tokenizer import BUILTIN, TokenizerError, load_tokenizer, token_ids, tokenize

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)
CORPUS = [
    "Hello world, this is a test.",
    "The quick brown fox jumps over the lazy dog.",
    "Large language models predict the next token.",
    "Please tell me a story about a lighthouse keeper.",
    "A journey of a thousand miles begins with a single step.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
]


def call(
    server: RunningServer, path: str, body: dict[str, Any] | None = None, method: str = "POST"
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        server.base_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            raw = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        raw, status = exc.read(), exc.code
    return status, json.loads(raw) if raw else None


# -- the built-in tokenizer ---------------------------------------------------------


def test_builtin_ids_round_trip_and_agree_with_the_split() -> None:
    text = "Hello, world!\n\n  Internationalization — 日本語 café\ttabs   end "
    ids = token_ids(text)
    assert len(ids) == len(tokenize(text)) == BUILTIN.count(text)
    assert BUILTIN.decode(ids) == text
    assert BUILTIN.token_strs(ids) == tokenize(text)
    assert all(0 <= token_id < 2**53 for token_id in ids)  # exact in a JSON double


def test_builtin_ids_are_the_same_in_another_process() -> None:
    text = "Stable ids survive restarts, don't they? Ünïcödé too."
    script = f"from llmsim.engine.tokenizer import token_ids; print(token_ids({text!r}))"
    other = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(other.stdout) == token_ids(text)


def test_builtin_decode_refuses_ids_outside_the_vocabulary() -> None:
    for bad in (-1, 0xD800, BUILTIN.max_token_id + 1):
        with pytest.raises(TokenizerError):
            BUILTIN.decode([bad])
    assert BUILTIN.decode([100, 101]) == "de"  # small ids are plain characters


def test_missing_tokenizer_is_a_one_line_startup_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--tokenizer", str(tmp_path / "nope" / "tokenizer.json"))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "tokenizer" in errors[0]
    with pytest.raises(TokenizerError):
        load_tokenizer(str(tmp_path))  # a directory without tokenizer.json


# -- small endpoints and tokenization with the built-in tokenizer ---------------------


@pytest.fixture(scope="module")
def builtin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(
        ["--mode", "echo", "--max-model-len", "512", "--inter-token-latency", "20ms"],
        tmp_path_factory.mktemp("builtin"),
    )
    yield server
    server.stop()


def test_ping_answers_get_and_post(builtin_server: RunningServer) -> None:
    for method in ("GET", "POST"):
        request = urllib.request.Request(builtin_server.base_url + "/ping", method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200


def test_load_counts_requests_in_flight(builtin_server: RunningServer) -> None:
    assert call(builtin_server, "/load", method="GET") == (200, {"server_load": 0})
    body = {"prompt": "one two three four five six seven eight nine ten " * 4, "max_tokens": 40}
    worker = threading.Thread(target=call, args=(builtin_server, "/v1/completions", body))
    worker.start()
    seen = 0
    deadline = time.monotonic() + 10
    while worker.is_alive() and time.monotonic() < deadline and not seen:
        seen = call(builtin_server, "/load", method="GET")[1]["server_load"]
        time.sleep(0.01)
    worker.join(20)
    assert seen == 1
    assert call(builtin_server, "/load", method="GET")[1] == {"server_load": 0}


@pytest.mark.parametrize("model", ["", None])
def test_empty_or_missing_model_means_the_default_model(
    builtin_server: RunningServer, model: str | None
) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    if model is not None:
        body["model"] = model
    status, answer = call(builtin_server, "/v1/chat/completions", body)
    assert status == 200, answer
    assert answer["model"] == "llmsim/sim-model"


def test_tokenize_count_equals_usage(builtin_server: RunningServer) -> None:
    prompt = "Hello world, this is a test of the tokenizer."
    status, tokens = call(
        builtin_server, "/tokenize", {"prompt": prompt, "return_token_strs": True}
    )
    assert status == 200
    assert tokens["max_model_len"] == 512
    assert tokens["count"] == len(tokens["tokens"]) == len(tokens["token_strs"])
    assert "".join(tokens["token_strs"]) == prompt
    _, completion = call(builtin_server, "/v1/completions", {"prompt": prompt, "max_tokens": 1})
    assert completion["usage"]["prompt_tokens"] == tokens["count"]

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    _, chat_tokens = call(builtin_server, "/tokenize", {"messages": messages})
    _, chat = call(builtin_server, "/v1/chat/completions", {"messages": messages})
    assert chat["usage"]["prompt_tokens"] == chat_tokens["count"]
    assert chat_tokens["token_strs"] is None

    status, text = call(builtin_server, "/detokenize", {"tokens": tokens["tokens"]})
    assert (status, text) == (200, {"prompt": prompt})

    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    _, with_tools = call(builtin_server, "/tokenize", {"messages": messages, "tools": tools})
    _, chat = call(
        builtin_server,
        "/v1/chat/completions",
        {"messages": messages, "tools": tools, "tool_choice": "none"},
    )
    # vLLM renders the tools even when the model may not call them (unless told not to).
    assert chat["usage"]["prompt_tokens"] == with_tools["count"]
    assert with_tools["count"] > chat_tokens["count"]
    _, chat = call(builtin_server, "/v1/chat/completions", {"messages": messages, "tools": tools})
    assert chat["usage"]["prompt_tokens"] == with_tools["count"]


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/tokenize", {}, 400),
        ("/tokenize", {"prompt": 5}, 400),
        ("/tokenize", {"messages": []}, 400),
        ("/tokenize", {"prompt": "x", "model": "nope"}, 404),
        ("/detokenize", {}, 400),
        ("/detokenize", {"tokens": [-1]}, 400),
        ("/detokenize", {"tokens": ["a"]}, 400),
        ("/detokenize", {"tokens": [1], "model": "nope"}, 404),
    ],
)
def test_tokenization_errors_have_vllm_shape(
    builtin_server: RunningServer, path: str, body: dict[str, Any], status: int
) -> None:
    got, answer = call(builtin_server, path, body)
    assert got == status
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["code"] == status


# -- a real Hugging Face tokenizer ------------------------------------------------------


def build_tokenizer(directory: Path) -> Any:
    """A small BPE tokenizer with a BOS post-processor and a chat template, no download."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, processors, trainers

    tokenizer = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 5, trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos)]
    )
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    config = {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "chat_template": CHAT_TEMPLATE}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return tokenizer


def render(messages: list[dict[str, str]]) -> str:
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(CHAT_TEMPLATE).render(
        messages=messages, add_generation_prompt=True, bos_token="<s>", eos_token="</s>"
    )


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, Any]]:
    directory = tmp_path_factory.mktemp("hf") / "tok"
    tokenizer = build_tokenizer(directory)
    server = start_server(
        [
            "--tokenizer",
            str(directory),
            "--mode",
            "echo",
            "--max-model-len",
            "256",
            "--enable-tokenizer-info-endpoint",
        ],
        tmp_path_factory.mktemp("hf-server"),
    )
    yield server, tokenizer
    server.stop()


def test_hf_tokenizer_info_is_its_configuration(hf: tuple[RunningServer, Any]) -> None:
    server, _ = hf
    status, info = call(server, "/tokenizer_info", method="GET")
    assert status == 200
    assert info == {
        "bos_token": "<s>",
        "eos_token": "</s>",  # an added token's text, as vLLM shows it
        "chat_template": CHAT_TEMPLATE,
        "tokenizer_class": "CachedPreTrainedTokenizerFast",
    }


def test_hf_usage_and_tokenize_match_the_tokenizer(hf: tuple[RunningServer, Any]) -> None:
    server, tokenizer = hf
    prompt = "The quick brown fox tells a story about a lighthouse."
    expected = tokenizer.encode(prompt).ids  # with the BOS, as vLLM counts completions
    _, tokens = call(server, "/tokenize", {"prompt": prompt})
    assert tokens["tokens"] == expected
    assert tokens["count"] == len(expected)
    _, completion = call(server, "/v1/completions", {"prompt": prompt, "max_tokens": 50})
    assert completion["usage"]["prompt_tokens"] == len(expected)
    text = completion["choices"][0]["text"]
    assert text == prompt  # echo mode
    assert completion["usage"]["completion_tokens"] == len(
        tokenizer.encode(text, add_special_tokens=False).ids
    )
    _, plain = call(server, "/tokenize", {"prompt": prompt, "add_special_tokens": False})
    assert plain["count"] == len(expected) - 1
    _, back = call(server, "/detokenize", {"tokens": plain["tokens"]})
    assert back["prompt"] == prompt


def test_hf_chat_template_is_used_for_counts(hf: tuple[RunningServer, Any]) -> None:
    server, tokenizer = hf
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello world, this is a test."},
    ]
    expected = tokenizer.encode(render(messages), add_special_tokens=False).ids
    _, tokens = call(server, "/tokenize", {"messages": messages, "return_token_strs": True})
    assert tokens["tokens"] == expected
    assert tokens["token_strs"] == [tokenizer.id_to_token(i) for i in expected]
    _, chat = call(server, "/v1/chat/completions", {"messages": messages})
    assert chat["usage"]["prompt_tokens"] == len(expected)


def test_hf_stream_sends_one_chunk_per_token(hf: tuple[RunningServer, Any]) -> None:
    server, tokenizer = hf
    prompt = "A journey of a thousand miles begins with a single step."
    body = {"prompt": prompt, "stream": True, "stream_options": {"include_usage": True}}
    request = urllib.request.Request(
        server.base_url + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        lines = [
            line for line in response.read().decode().splitlines() if line.startswith("data: {")
        ]
    chunks = [json.loads(line[6:]) for line in lines]
    pieces = [c["choices"][0]["text"] for c in chunks if c["choices"]]
    assert "".join(pieces) == prompt
    tokens = len(tokenizer.encode(prompt, add_special_tokens=False).ids)
    assert len(pieces) == tokens == chunks[-1]["usage"]["completion_tokens"]


def test_hf_detokenize_refuses_unknown_ids(hf: tuple[RunningServer, Any]) -> None:
    server, tokenizer = hf
    status, answer = call(server, "/detokenize", {"tokens": [tokenizer.get_vocab_size() + 5]})
    assert status == 400
    assert answer["error"]["param"] == "tokens"


def test_chat_template_file_with_the_builtin_tokenizer(tmp_path: Path, llmsim_server: Any) -> None:
    template = tmp_path / "template.jinja"
    template.write_text(
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant]{% endif %}{{ mood | default('') }}"
    )
    # The server's template kwargs reach the template; a request's own value wins.
    server = llmsim_server(
        "--chat-template", str(template), "--default-chat-template-kwargs", '{"mood": " calm"}'
    )
    messages = [{"role": "user", "content": "Hello there"}]
    _, tokens = call(server, "/tokenize", {"messages": messages, "return_token_strs": True})
    assert "".join(tokens["token_strs"]) == "[user] Hello there\n[assistant] calm"
    _, chat = call(server, "/v1/chat/completions", {"messages": messages, "max_tokens": 2})
    assert (
        chat["usage"]["prompt_tokens"]
        == tokens["count"]
        == BUILTIN.count("[user] Hello there\n[assistant] calm")
    )
    own = {"messages": messages, "chat_template_kwargs": {"mood": " keen"}}
    _, tokens = call(server, "/tokenize", {**own, "return_token_strs": True})
    assert "".join(tokens["token_strs"]) == "[user] Hello there\n[assistant] keen"
    _, chat = call(server, "/v1/chat/completions", {**own, "max_tokens": 2})
    assert chat["usage"]["prompt_tokens"] == tokens["count"]
    # The Responses API hands its chat_template_kwargs to the template too.
    asked = {"input": "Hello there", "chat_template_kwargs": {"mood": " keen"}}
    _, response = call(server, "/v1/responses", {**asked, "max_output_tokens": 2})
    assert response["usage"]["input_tokens"] == tokens["count"]


def test_a_request_template_needs_the_servers_trust(llmsim_server: Any) -> None:
    """As vLLM: a chat template a request brings is refused unless the server trusts them."""
    messages = [{"role": "user", "content": "Hello there"}]
    own = {"chat_template": "{{ messages }}"}
    in_kwargs = {"chat_template_kwargs": {"chat_template": "{{ messages }}"}}
    server = llmsim_server()
    for path, body in [
        ("/v1/chat/completions", {"messages": messages, **own}),
        ("/v1/chat/completions", {"messages": messages, **in_kwargs}),
        ("/tokenize", {"messages": messages, **own}),
        ("/v1/responses", {"input": "Hello there", **in_kwargs}),
    ]:
        status, answer = call(server, path, body)
        assert status == 400, (path, body)
        assert answer["error"]["type"] == "BadRequestError"
        assert answer["error"]["message"] == (
            "Chat template is passed with request, but --trust-request-chat-template is not "
            "set. Refused request with untrusted chat template."
        )
    status, plain = call(
        server, "/v1/chat/completions", {"messages": messages, "chat_template": None}
    )
    assert status == 200
    trusting = llmsim_server("--trust-request-chat-template")
    status, chat = call(trusting, "/v1/chat/completions", {"messages": messages, **own})
    assert status == 200
    assert chat["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]  # the server's
    status, _ = call(trusting, "/tokenize", {"messages": messages, **own})
    assert status == 200


def test_unreadable_chat_template_is_a_startup_error(tmp_path: Path) -> None:
    result = run_cli("serve", "--chat-template", str(tmp_path / "missing.jinja"))
    assert result.returncode == 2
    assert "chat template" in result.stderr


def test_hub_id_is_read_from_the_local_cache(tmp_path: Path, llmsim_server: Any) -> None:
    """A hub ID found in the Hugging Face cache loads without any network (offline mode)."""
    pytest.importorskip("huggingface_hub")
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-chat"
    tokenizer = build_tokenizer(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    server = llmsim_server("--tokenizer", "acme/tiny-chat", env=env)
    prompt = "Hello world, this is a test."
    _, tokens = call(server, "/tokenize", {"prompt": prompt})
    assert tokens["tokens"] == tokenizer.encode(prompt).ids

    missing = run_cli("serve", "--tokenizer", "acme/not-cached", env=env)
    assert missing.returncode == 2
    assert "not in the Hugging Face cache" in missing.stderr


def test_token_ids_outside_the_vocabulary_are_refused(hf: tuple[RunningServer, Any]) -> None:
    server, tokenizer = hf
    too_big = tokenizer.get_vocab_size()
    for path, body in (
        ("/v1/completions", {"prompt": [1, too_big], "max_tokens": 1}),
        ("/v1/embeddings", {"input": [[1], [too_big]]}),
    ):
        status, answer = call(server, path, body)
        assert status == 400
        assert answer["error"]["message"] == f"Token id {too_big} is out of vocabulary"
    status, _ = call(server, "/v1/completions", {"prompt": [1, too_big - 1], "max_tokens": 1})
    assert status == 200


def test_hf_split_joins_back_and_counts_like_encode(tmp_path: Path) -> None:
    tokenizer = build_tokenizer(tmp_path / "tok")
    loaded = load_tokenizer(str(tmp_path / "tok"))
    for text in ["Hello world, this is a test.", "日本語 café 🎉 naïve", "", "  spaced  out  "]:
        pieces = loaded.split(text)
        assert "".join(pieces) == text
        assert (
            len(pieces)
            == loaded.count(text)
            == len(tokenizer.encode(text, add_special_tokens=False).ids)
        )
    assert loaded.count("Hello", add_special_tokens=True) == loaded.count("Hello") + 1


def test_generation_with_zero_max_tokens_is_empty() -> None:
    import random

    from llmsim.engine.generation import generate

    for mode in ("echo", "random"):
        result = generate(
            mode=mode,  # type: ignore[arg-type]
            echo_text="some prompt",
            max_tokens=0,
            budget=100,
            ignore_eos=False,
            stop=(),
            rng=random.Random(1),
        )
        assert result.tokens == []
        assert result.finish_reason == "length"


def test_chat_template_sees_tools_and_tool_calls(tmp_path: Path) -> None:
    from llmsim.api.openai.prompts import render_chat
    from llmsim.api.openai.schemas import ChatCompletionRequest

    build_tokenizer(tmp_path / "tok")
    template = (
        "{% if tools %}TOOLS:{% for t in tools %}{{ t['function']['name'] }};{% endfor %}{% endif %}"
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}"
        "{% if m['tool_calls'] %}{{ m['tool_calls'] | tojson }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    tokenizer = load_tokenizer(str(tmp_path / "tok"), template)
    call_ = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    request = ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "", "tool_calls": [call_]},
            ],
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
        }
    )
    rendered = render_chat(request, tokenizer)
    assert rendered == (
        'TOOLS:lookup;<user>hi<assistant>[{"id": "c1", "type": "function", '
        '"function": {"name": "f", "arguments": "{}"}}]<assistant>'
    )


@settings(max_examples=80, deadline=None)
@given(
    st.text(alphabet="ab  \t\n.,!x_09é", max_size=400),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=1, max_value=64),
)
def test_long_texts_are_tokenized_in_slices_with_the_same_tokens(
    part: str, times: int, size: int
) -> None:
    """Slicing at a space after a non-space never changes a token, whatever the text."""
    from llmsim.engine.tokenizer import _TOKEN_RE, _pieces

    text = part * times
    assert _pieces(text, size) == _TOKEN_RE.findall(text)
