"""The ``llmsim`` command as a user runs it: version, errors, profiles, start and stop."""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from conftest import RunningServer, port_is_free, run_cli, start_server
from typer.testing import CliRunner

from llmsim import __version__
from llmsim.cli.main import app, expand_multi_value_options


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_lists_llmsim_python_and_the_key_dependencies(flag: str) -> None:
    result = run_cli(flag)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"llmsim {__version__}"
    rows = dict(line.split(None, 1) for line in lines[1:])
    assert rows["python"].startswith(platform.python_version())
    assert rows["platform"]
    for name in ("aiohttp", "pydantic", "pydantic-settings", "typer", "rich", "prometheus-client"):
        assert rows[name] == metadata.version(name), name
    for name in ("uvloop", "orjson", "msgspec"):
        try:
            assert rows[name] == metadata.version(name), name
        except metadata.PackageNotFoundError:
            assert rows[name].startswith("not installed"), name


def test_version_reports_a_missing_optional_dependency_as_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_version = metadata.version

    def without_uvloop(name: str) -> str:
        if name == "uvloop":
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(metadata, "version", without_uvloop)
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    uvloop_row = next(line for line in result.output.splitlines() if line.startswith("uvloop"))
    assert uvloop_row.split(None, 1)[1] == "not installed (optional: the [fast] extra)"


def run_under_bash(
    option: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``llmsim OPTION`` as a child of bash, whatever started the tests.

    The completion options act for the shell they run under, found from the parent process.
    The command is not bash's last one, which bash would exec in its own place.
    """
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
    child_env.update(env or {})
    return subprocess.run(
        ["bash", "-c", '"$0" -m llmsim "$1"; exit $?', sys.executable, option],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=60,
        check=False,
    )


def test_show_completion_prints_a_bash_script_that_calls_back_into_llmsim() -> None:
    result = run_under_bash("--show-completion")
    assert result.returncode == 0, result.stderr
    assert "complete -o default -F _llmsim_completion llmsim" in result.stdout
    assert "_LLMSIM_COMPLETE=complete_bash" in result.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("llmsim se", ["serve"]),
        ("llmsim serve --max-num-se", ["--max-num-seqs"]),
        ("llmsim serve --mode ", ["echo", "random"]),
        ("llmsim serve --log-level w", ["warning"]),
        ("llmsim serve --failure-types rate_limit,s", ["rate_limit,server_error"]),
        ("llmsim config ", ["init", "show"]),
    ],
)
def test_bash_completion_answers_with_commands_options_and_choices(
    words: str, expected: list[str]
) -> None:
    """What the installed bash script asks for while the user presses Tab."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    env = {"_LLMSIM_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = run_cli(env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == expected


def test_install_completion_writes_the_script_and_sources_it_from_bashrc(tmp_path: Path) -> None:
    result = run_under_bash("--install-completion", env={"HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    bashrc = (tmp_path / ".bashrc").read_text()
    scripts = list(tmp_path.glob(".bash_completions/llmsim*"))
    assert len(scripts) == 1, list(tmp_path.rglob("*"))
    assert "_LLMSIM_COMPLETE=complete_bash" in scripts[0].read_text()
    assert str(scripts[0].relative_to(tmp_path)) in bashrc


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--mode", "loud"], {}, "--mode: input should be 'echo' or 'random'"),
        (
            ["--time-to-first-token", "-1ms"],
            {},
            "--time-to-first-token: duration must not be negative",
        ),
        (
            [],
            {"LLMSIM_INTER_TOKEN_LATENCY": "soon"},
            "LLMSIM_INTER_TOKEN_LATENCY: invalid duration",
        ),
        (
            ["--max-loras", "4", "--max-cpu-loras", "2"],
            {},
            "--max-cpu-loras: must be at least max-loras",
        ),
    ],
)
def test_invalid_settings_exit_nonzero_with_one_clear_line(
    args: list[str], env: dict[str, str], fragment: str
) -> None:
    result = run_cli("serve", *args, env=env)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_malformed_and_unknown_profile_keys(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("mode = [\n")
    result = run_cli("serve", "--config", str(broken))
    assert result.returncode == 2
    assert "is not valid TOML" in result.stderr
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("time_to_first_tokn = '1s'\n")
    result = run_cli("serve", "--config", str(unknown))
    assert result.returncode == 2
    assert "unknown key 'time_to_first_tokn'" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_init_writes_a_profile_that_config_show_reads(tmp_path: Path) -> None:
    path = tmp_path / "llmsim.toml"
    assert run_cli("config", "init", str(path)).returncode == 0
    text = path.read_text()
    assert "time_to_first_token = " in text
    assert text.count("\n# ") > 10
    refused = run_cli("config", "init", str(path))
    assert refused.returncode == 1
    assert "exists" in refused.stderr
    path.write_text(text.replace('mode = "random"', 'mode = "echo"'))
    shown = run_cli("config", "show", "--config", str(path), env={"LLMSIM_PORT": "9001"})
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[1]: line for line in shown.stdout.splitlines() if line.startswith("│")}
    assert "echo" in rows["mode"]
    assert "file" in rows["mode"]
    assert "9001" in rows["port"]
    assert "env" in rows["port"]
    assert "default" in rows["seed"]


@pytest.mark.parametrize("target", [[], ["-"]])
def test_config_init_to_stdout(target: list[str], tmp_path: Path) -> None:
    result = run_cli("config", "init", *target, cwd=tmp_path)
    assert result.returncode == 0
    assert 'mode = "random"' in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_multi_value_options_are_expanded() -> None:
    assert expand_multi_value_options(
        ["serve", "--served-model-name", "a", "b", "--lora-modules", "x=/p", "y=/q", "--port", "1"]
    ) == [
        "serve",
        "--served-model-name", "a", "--served-model-name", "b",
        "--lora-modules", "x=/p", "--lora-modules", "y=/q",
        "--port", "1",
    ]  # fmt: skip
    assert expand_multi_value_options(["serve", "--model", "m", "--lora", "a"]) == [
        "serve", "--model", "m", "--lora", "a",
    ]  # fmt: skip


def test_served_model_names_and_lora_modules_from_the_command_line(
    llmsim_server: Callable[..., RunningServer],
) -> None:
    server = llmsim_server(
        "--model", "org/base", "--served-model-name", "alias-1", "alias-2",
        "--lora-modules", "tools=/adapters/tools", '{"name": "sql", "path": "/adapters/sql"}',
        "--lora", "chat",
    )  # fmt: skip
    with urllib.request.urlopen(server.api_url + "/models", timeout=5) as response:
        cards = {card["id"]: card for card in json.load(response)["data"]}
    assert list(cards) == ["alias-1", "alias-2", "chat", "tools", "sql"]
    assert cards["alias-1"]["root"] == "org/base"
    assert cards["sql"]["root"] == "/adapters/sql"
    assert cards["tools"]["parent"] == "alias-1"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_start_banner_and_clean_stop(tmp_path: Path, sig: int) -> None:
    server = start_server(["--lora", "a", "--time-to-first-token", "200ms"], tmp_path)
    assert server.stop(sig) == 0
    log = server.log()
    assert "Traceback" not in log
    for fragment in (
        "llmsim",
        "llmsim/sim-model",
        "adapters",
        "TTFT 200ms",
        f"http://127.0.0.1:{server.port}",
    ):
        assert fragment in log
    assert f"curl http://127.0.0.1:{server.port}/v1/chat/completions" in log


@pytest.mark.skipif(not port_is_free(8000), reason="port 8000 is in use on this machine")
def test_zero_flag_start_serves_on_127_0_0_1_port_8000(tmp_path: Path) -> None:
    log_path = tmp_path / "zero.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmsim", "serve"], stdout=log, stderr=log, env=env
        )
    server = RunningServer(process, 8000, log_path)
    try:
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen("http://127.0.0.1:8000/health", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, server.log()
                time.sleep(0.05)
        else:
            pytest.fail("llmsim did not start on port 8000")
    finally:
        assert server.stop() == 0
    assert "http://127.0.0.1:8000" in server.log()


def test_port_in_use_is_a_clear_error(llmsim_server: Callable[..., RunningServer]) -> None:
    server = llmsim_server()
    result = run_cli("serve", "--port", str(server.port))
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{server.port}" in result.stderr
    assert "Traceback" not in result.stderr
