"""vLLM's ``vllm serve`` command line: parsed as vLLM parses it, mapped onto settings."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import RunningServer, post_json, run_cli

from llmsim.cli.main import serve
from llmsim.cli.vllm_argv import (
    VLLM_VALUE_FORMS,
    serve_option_shapes,
    split_serve_args,
    translate_serve_args,
)
from llmsim.settings.model import Settings
from llmsim.settings.vllm_args import VllmArgsError, parse_vllm_args, vllm_flags
from llmsim.settings.vllm_mapping import kv_cache_tokens


def test_the_table_holds_vllm_flags_once_each_with_valid_targets() -> None:
    flags = vllm_flags()
    assert len(flags) > 300
    strings = [name for flag in flags for name in (*flag.names, *flag.off)]
    assert len(strings) == len(set(strings))
    for flag in flags:
        target = flag.target
        assert target == "-" or target.startswith("=") or target.isidentifier(), flag
    settings_targets = {f.target for f in flags if f.target not in ("-",) and f.target[0] != "="}
    ssl = {"ssl_keyfile", "ssl_certfile", "ssl_ca_certs", "ssl_cert_reqs", "enable_ssl_refresh"}
    data_parallel = {
        "api_server_count",
        "data_parallel_rank",
        "data_parallel_start_rank",
        "data_parallel_size_local",
        "data_parallel_address",
        "data_parallel_rpc_port",
        "data_parallel_hybrid_lb",
        "data_parallel_external_lb",
    }
    # Fields a later version adds: until then the flags are accepted without effect.
    assert settings_targets - ssl - data_parallel <= set(Settings.model_fields)


@pytest.mark.parametrize(
    ("argv", "settings"),
    [
        (["m", "--max-num-seqs", "8"], {"max_running_requests": "8"}),
        (["m", "--max_num_seqs=8"], {"max_running_requests": "8"}),
        (["m", "--max-num-seq", "8"], {"max_running_requests": "8"}),  # a unique prefix
        (["--model", "m", "--max-model-len", "32k"], {"max_model_len": "32000"}),
        (["m", "--max-model-len", "auto"], {}),
        (["m", "--no-enable-prefix-caching"], {"enable_prefix_caching": False}),
        (["m", "--disable-prefix-caching"], {"enable_prefix_caching": False}),
        (["m", "--enable-prefix-caching"], {"enable_prefix_caching": True}),
        (["m", "--served-model-name", "a", "b"], {"served_model_name": ["a", "b"]}),
        (["m", "--uvicorn-log-level", "trace"], {"log_level": "debug"}),
        (["m", "--disable-uvicorn-access-log"], {"access_log": False}),
        (["m", "--shutdown-timeout", "30"], {"shutdown_timeout": "30s"}),
        (["m", "--api-key", "k1", "k2"], {"api_key": "k1"}),
        (["m", "-dp", "2"], {"data_parallel_size": "2"}),
        (
            ["m", "--block-size", "32", "--num-gpu-blocks-override", "100"],
            {"block_size": "32", "kv_cache_size": "3200"},
        ),
        (["m", "--log_level", "NOTSET"], {"log_level": "NOTSET"}),
        (["m", "--kv_cache_metrics"], {"kv_cache_metrics": True}),
        (["m", "--scheduling-policy", "priority"], {"scheduling_policy": "priority"}),
        (["m", "--max-num-queued-tokens", "4k"], {"max_num_queued_tokens": "4000"}),
        (["m", "--max-num-queued-reqs", "9"], {"max_num_queued_reqs": "9"}),
        (["m", "--stream-interval", "5"], {"stream_interval": "5"}),
        (["m", "--max-num-active-seqs", "4"], {"max_num_active_seqs": "4"}),
        (["m", "--max-num-scheduled-tokens", "2k"], {"max_num_scheduled_tokens": "2000"}),
        (["m", "--watermark", "0.1"], {"watermark": "0.1"}),
        (["m", "--prefill-schedule-interval", "4"], {"prefill_schedule_interval": "4"}),
        (["m", "--cache-aware-admission-window", "8"], {"cache_aware_admission_window": "8"}),
        (
            ["m", "--cache-aware-admission-threshold", "0.25"],
            {"cache_aware_admission_threshold": "0.25"},
        ),
        (["m", "--no-scheduler-reserve-full-isl"], {"scheduler_reserve_full_isl": False}),
        (["m", "--disable-chunked-prefill"], {"enable_chunked_prefill": False}),
        (["m", "--long-prefill-token-threshold", "64"], {"long_prefill_token_threshold": "64"}),
        (["m", "--trust_request_chat_template"], {"trust_request_chat_template": True}),
        (
            ["m", "--reasoning-effort-map", '{"low": "none"}'],
            {"reasoning_effort_map": '{"low": "none"}'},  # the settings model reads the JSON
        ),
    ],
)
def test_flags_that_mean_something_here_set_settings(
    argv: list[str], settings: dict[str, object]
) -> None:
    parsed = parse_vllm_args(argv)
    assert {k: v for k, v in parsed.settings.items() if k != "model"} == settings
    assert parsed.no_effect == []


def test_the_model_is_positional_or_given_with_model() -> None:
    assert parse_vllm_args(["org/m"]).settings == {"model": "org/m"}
    assert parse_vllm_args(["--model=org/m", "-tp", "2"]).settings == {"model": "org/m"}


def test_lora_modules_take_several_values_in_both_forms() -> None:
    module = json.dumps({"name": "b", "path": "/q", "base_model_name": "m"})
    parsed = parse_vllm_args(["m", "--enable-lora", "--lora-modules", "a=/p", module])
    assert parsed.settings["lora_modules"] == ["a=/p", module]
    assert parsed.no_effect == ["--enable-lora"]


def test_other_flags_are_accepted_and_listed_as_given() -> None:
    parsed = parse_vllm_args(
        ["m", "-tp", "8", "--dtype", "half", "--trust_remote_code", "-O3", "--swap-space", "16"]
    )
    assert parsed.no_effect == [
        "-tp 8",
        "--dtype half",
        "--trust-remote-code",
        "--optimization-level 3",
        "--swap-space 16",
    ]


def test_dotted_sub_keys_and_multi_line_json_make_one_json_value() -> None:
    parsed = parse_vllm_args(
        [
            "m",
            "--speculative-config.method",
            "mtp",
            "--speculative-config.num_speculative_tokens=2",
            "-cc.pass_config.fuse=True",
            "--kv-transfer-config",
            '{\n  "kv_connector": "NixlConnector",\n  "kv_role": "kv_both"\n}',
        ]
    )
    kv_transfer = json.loads(parsed.settings["kv_transfer_config"])
    assert kv_transfer == {"kv_connector": "NixlConnector", "kv_role": "kv_both"}
    assert parsed.no_effect == [
        '--speculative-config {"method":"mtp","num_speculative_tokens":2}',
        '-cc {"pass_config":{"fuse":"True"}}',
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["m", "--tensor-parallel-size", "abc"],
            "argument --tensor-parallel-size/-tp: invalid int value: 'abc'",
        ),
        (["m", "--dtype", "double"], "argument --dtype: invalid choice: 'double'"),
        (["m", "--max-lora-rank", "7"], "argument --max-lora-rank: invalid choice: 7"),
        (["m", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["m", "--max-num"], "ambiguous option: --max-num could match"),
        (["m", "--kv-transfer-config", "[1]"], "is not a JSON object"),
        (["m", "--max-log-len", "x"], "Value x cannot be converted to <class 'int'>."),
        (["m", "--allowed-origins", "x"], "argument --allowed-origins: invalid loads value: 'x'"),
        (
            ["m", "--enable-auto-tool-choice"],
            "--enable-auto-tool-choice requires --tool-call-parser",
        ),
    ],
)
def test_values_are_checked_as_vllm_checks_them(argv: list[str], message: str) -> None:
    with pytest.raises(VllmArgsError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_vllm_args(argv)


def test_a_yaml_config_spreads_into_flags_and_the_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "vllm.yaml"
    config.write_text(
        "max-num-seqs: 4\nno-enable-prefix-caching: true\nserved-model-name: [a, b]\n"
        "compilation-config:\n  pass_config:\n    fuse: true\nenforce-eager: false\n"
    )
    parsed = parse_vllm_args(["m", "--config", str(config), "--max-num-seqs", "6"])
    assert parsed.settings == {
        "model": "m",
        "max_running_requests": "6",
        "enable_prefix_caching": False,
        "served_model_name": ["a", "b"],
    }
    assert parsed.no_effect == [
        '-cc {"pass_config":{"fuse":true}}'.replace("-cc", "--compilation-config"),
        "--no-enforce-eager",
    ]


def test_kv_cache_size_rule() -> None:
    assert kv_cache_tokens(100, 10**9, 0.5, block_size=16) == 1600
    assert kv_cache_tokens(None, 2 * 131_072 * 1000, 0.5, block_size=16) == 2000
    assert kv_cache_tokens(None, None, 0.45, block_size=16) == 65_536
    assert kv_cache_tokens(None, None, None, block_size=16) is None


def test_llmsim_options_stay_for_typer_and_the_rest_goes_to_vllms_parser() -> None:
    shapes = serve_option_shapes(serve)
    ours, theirs = split_serve_args(
        [
            "org/m",
            "-tp",
            "2",
            "--latency-model",
            "step",
            "--served-model-name",
            "a",
            "b",
            "--max-model-len",
            "32k",
            "-cc",
            "3",
            "--enable-prefix-caching",
            "--config",
            "x.yaml",
        ],
        shapes,
    )
    assert ours == [
        "--latency-model",
        "step",
        "--served-model-name",
        "a",
        "b",
        "--enable-prefix-caching",
    ]
    assert theirs == [
        "org/m",
        "-tp",
        "2",
        "--max-model-len",
        "32k",
        "-cc",
        "3",
        "--config",
        "x.yaml",
    ]


def test_a_command_line_without_vllm_flags_is_left_alone() -> None:
    args = ["serve", "--port", "9000", "--max-num-seqs", "4", "--config", "p.toml"]
    assert translate_serve_args(args, serve) == args
    assert translate_serve_args(["fleet", "x.toml", "-tp"], serve) == ["fleet", "x.toml", "-tp"]


def test_vllm_flags_become_llmsim_options_before_llmsims_own() -> None:
    args = translate_serve_args(
        ["serve", "org/m", "--max_num_seqs", "3", "-tp", "2", "--port", "1"], serve
    )
    assert args == [
        "serve",
        "--model=org/m",
        "--max-running-requests=3",
        "--vllm-flags-without-effect=-tp 2",
        "--no-enable-auto-tool-choice",  # vLLM's rule: no auto tool choice unless enabled
        "--kv-transfer-config={}",  # vLLM's default: no KV connector
        "--log-stats",  # vLLM's default: stats logged
        "--no-enable-server-load-tracking",  # vLLM's default: /load answers 0
        "--no-enable-scale-out",  # vLLM's default: the scale-out routes answer 403
        "--port",
        "1",
    ]


def test_a_bad_vllm_value_exits_2_with_argparses_kind_of_message() -> None:
    result = run_cli("serve", "org/m", "--tensor-parallel-size", "abc")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "usage: llmsim serve [MODEL] [OPTIONS]",
        "llmsim serve: error: argument --tensor-parallel-size/-tp: invalid int value: 'abc'",
    ]
    unknown = run_cli("serve", "org/m", "--frobnicate")
    assert unknown.returncode == 2
    assert "unrecognized arguments: --frobnicate" in unknown.stderr


def test_config_show_lists_what_a_vllm_command_line_sets_and_ignores() -> None:
    result = run_cli(
        "config", "show", "org/m", "-tp", "8", "--dtype", "half", "--max_num_seqs", "12"
    )
    assert result.returncode == 0, result.stderr
    rows = {
        line.split("│")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.count("│") >= 3
    }
    assert "-tp 8, --dtype half" in rows["vllm_flags_without_effect"]
    assert "12" in rows["max_running_requests"]
    assert "org/m" in rows["model"]


@pytest.mark.parametrize(
    "flags", [["--runner", "pooling"], ["--convert", "embed"], ["--task", "embed"]]
)
def test_an_embedding_model_serves_embeddings_and_has_no_chat_route(
    flags: list[str], llmsim_server: Callable[..., RunningServer]
) -> None:
    server = llmsim_server("BAAI/bge-m3", *flags)
    status, body = post_json(server, "/v1/embeddings", {"model": "BAAI/bge-m3", "input": "hi"})
    assert status == 200
    assert body["object"] == "list"
    status, body = post_json(
        server,
        "/v1/chat/completions",
        {"model": "BAAI/bge-m3", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert status == 404


def test_access_log_leaves_out_the_endpoints_vllm_is_told_to_leave_out(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("org/m", "--disable-access-log-for-endpoints=/health,/metrics")
    for path in ("/health", "/metrics", "/v1/models"):
        with urllib.request.urlopen(server.base_url + path, timeout=5) as response:
            assert response.status == 200
    deadline = time.monotonic() + 5
    while "/v1/models" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = server.log()
    assert '"GET /v1/models HTTP/1.1" 200' in log
    assert "GET /health" not in log
    assert "GET /metrics" not in log


def _call(url: str, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def test_cors_from_vllms_flags(llmsim_server: Callable[..., RunningServer]) -> None:
    server = llmsim_server(
        "org/m", "--allowed-origins", '["https://app.example"]', "--allow-credentials"
    )
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    status, headers, _ = _call(server.api_url + "/chat/completions", "OPTIONS", preflight)
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert headers["Access-Control-Allow-Credentials"] == "true"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    other = {**preflight, "Origin": "https://elsewhere.example"}
    status, _, body = _call(server.api_url + "/chat/completions", "OPTIONS", other)
    assert (status, body) == (400, "Disallowed CORS origin")
    status, headers, _ = _call(server.api_url + "/models", "GET", {"Origin": "https://app.example"})
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    _, headers, _ = _call(
        server.api_url + "/models", "GET", {"Origin": "https://elsewhere.example"}
    )
    assert "Access-Control-Allow-Origin" not in headers


def test_no_cors_headers_without_allowed_origins(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("org/m")
    _, headers, _ = _call(server.api_url + "/models", "GET", {"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in headers


def test_response_role_names_the_answers_role(llmsim_server: Callable[..., RunningServer]) -> None:
    server = llmsim_server("org/m", "--response-role", "model")
    body = {"model": "org/m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    status, answer = post_json(server, "/v1/chat/completions", body)
    assert status == 200
    assert answer["choices"][0]["message"]["role"] == "model"
    request = urllib.request.Request(
        server.api_url + "/chat/completions",
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        first = json.loads(response.read().decode().split("\n\n")[0].removeprefix("data: "))
    assert first["choices"][0]["delta"]["role"] == "model"


def test_every_settings_target_can_be_given_to_llmsims_own_options() -> None:
    """The options a vLLM flag turns into exist on ``llmsim serve`` (on/off ones as
    ``--x``/``--no-x``)."""
    shapes = serve_option_shapes(serve)
    for flag in vllm_flags():
        if flag.target in Settings.model_fields:
            option = "--" + flag.target.replace("_", "-")
            assert option in shapes, option
            if flag.kind in ("bool", "flag"):
                assert "--no-" + option[2:] in shapes or flag.kind == "flag", option


@pytest.mark.parametrize("flag", ["--disable-fastapi-docs", "--disable_fastapi_docs"])
def test_disable_fastapi_docs_drops_the_openapi_document(
    flag: str, llmsim_server: Callable[..., RunningServer]
) -> None:
    server = llmsim_server("org/m", flag)
    status, _, _ = _call(server.base_url + "/openapi.json", "GET", {})
    assert status == 404


def test_root_path_serves_routes_with_and_without_the_prefix(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("org/m", "--root-path", "/llm")
    for path in ("/llm/v1/models", "/v1/models"):
        status, _, body = _call(server.base_url + path, "GET", {})
        assert status == 200
        assert json.loads(body)["data"][0]["id"] == "org/m"
    status, _, _ = _call(server.base_url + "/other/v1/models", "GET", {})
    assert status == 404


def test_a_shared_option_with_a_value_only_vllm_takes_goes_to_vllms_parser() -> None:
    args = translate_serve_args(["serve", "m", "--data-parallel-backend", "ray"], serve)
    assert args == [
        "serve",
        "--model=m",
        "--vllm-flags-without-effect=--data-parallel-backend ray",
        "--no-enable-auto-tool-choice",
        "--kv-transfer-config={}",
        "--log-stats",
        "--no-enable-server-load-tracking",
        "--no-enable-scale-out",
    ]
    args = translate_serve_args(["serve", "--data-parallel-backend", "inprocess"], serve)
    assert args == ["serve", "--data-parallel-backend", "inprocess"]


def test_several_api_keys_go_to_vllms_parser_which_keeps_the_first() -> None:
    args = translate_serve_args(["serve", "m", "--api-key", "k1", "k2", "--port", "1"], serve)
    assert args == [
        "serve",
        "--model=m",
        "--api-key=k1",
        "--no-enable-auto-tool-choice",
        "--kv-transfer-config={}",
        "--log-stats",
        "--no-enable-server-load-tracking",
        "--no-enable-scale-out",
        "--port",
        "1",
    ]
    assert translate_serve_args(["serve", "--api-key", "k1"], serve) == [
        "serve",
        "--api-key",
        "k1",
    ]


def test_return_tokens_as_token_ids_names_logprob_tokens_by_id(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server("org/m", "--return-tokens-as-token-ids")
    chat = {
        "model": "org/m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "logprobs": True,
        "top_logprobs": 2,
    }
    status, answer = post_json(server, "/v1/chat/completions", chat)
    assert status == 200
    content = answer["choices"][0]["logprobs"]["content"]
    assert content
    for entry in content:
        assert entry["token"].startswith("token_id:")
        assert all(top["token"].startswith("token_id:") for top in entry["top_logprobs"])
    completion = {"model": "org/m", "prompt": "hi", "max_tokens": 3, "logprobs": 1}
    status, answer = post_json(server, "/v1/completions", completion)
    assert status == 200
    logprobs = answer["choices"][0]["logprobs"]
    assert all(token.startswith("token_id:") for token in logprobs["tokens"])
    assert all(key.startswith("token_id:") for top in logprobs["top_logprobs"] for key in top)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["m"], ["--no-enable-auto-tool-choice"]),
        (["m", "--enable-auto-tool-choice", "--tool-call-parser", "hermes"], []),
        (["m", "--enable_auto_tool_choice", "--tool_call_parser", "hermes"], []),
    ],
)
def test_a_vllm_command_line_allows_auto_tool_choice_only_when_it_says_so(
    argv: list[str], expected: list[str]
) -> None:
    args = translate_serve_args(["serve", *argv], serve)
    assert [arg for arg in args if arg == "--no-enable-auto-tool-choice"] == expected


def test_auto_tool_choice_needs_a_tool_call_parser_when_llmsims_flag_enables_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        translate_serve_args(["serve", "m", "--enable-auto-tool-choice"], serve)
    assert exit_info.value.code == 2
    assert "--enable-auto-tool-choice requires --tool-call-parser" in capsys.readouterr().err


def test_a_json_flag_with_dotted_sub_keys_too_is_read_whole_by_vllms_parser() -> None:
    # vLLM gathers the sub-keys into one JSON value after the others: that one wins.
    args = translate_serve_args(
        [
            "serve",
            "--model",
            "m",
            "--kv-transfer-config",
            '{"kv_connector": "NixlConnector", "kv_role": "kv_both"}',
            "--kv-transfer-config.kv_role",
            "kv_consumer",
        ],
        serve,
    )
    assert [arg for arg in args if arg.startswith("--kv-transfer-config")] == [
        '--kv-transfer-config={"kv_role": "kv_consumer"}'
    ]


def test_token_counts_like_64k_reach_vllms_parser_on_every_shared_option() -> None:
    """A shared option whose vLLM value may be ``64k`` is read by vLLM's parser in that form."""
    shapes = serve_option_shapes(serve)
    for flag in vllm_flags():
        if flag.kind in ("hint", "hint_auto") and flag.primary in shapes:
            assert flag.primary in VLLM_VALUE_FORMS, flag.primary
    ours, theirs = split_serve_args(
        ["m", "--max-num-queued-tokens", "64k", "--max-num-queued-reqs", "5"], shapes
    )
    assert ours == ["--max-num-queued-reqs", "5"]
    assert theirs == ["m", "--max-num-queued-tokens", "64k"]
