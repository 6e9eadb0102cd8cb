"""The image's vLLM interface, run as the image runs it: ``deploy/container`` on PYTHONPATH
and PATH, without a docker daemon.

``vllm serve ARGS`` (the image's entry point) and ``python3 -m
vllm.entrypoints.openai.api_server ARGS`` must become llmsim serving with those ARGS; the
llmsim package itself must never install a ``vllm`` module or command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomllib
from conftest import STARTUP_TIMEOUT, free_port, stop_process

from llmsim.server.keep_alive import KeepAliveError, keep_alive_options
from llmsim.settings.sources import load_settings

ROOT = Path(__file__).resolve().parent.parent
CONTAINER = ROOT / "deploy" / "container"
SHIM = CONTAINER / "python"
VLLM = CONTAINER / "bin" / "vllm"


def image_env(**extra: str) -> dict[str, str]:
    """The environment of the image: the shim first on PYTHONPATH and PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMSIM_", "VLLM_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(SHIM), str(ROOT)])
    # As in the image, the python3 on PATH is the one llmsim is installed into.
    python_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(CONTAINER / "bin"), python_bin, env.get("PATH", "")])
    env.update(extra)
    return env


class Started:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process, self.port, self.log = process, port, log

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture
def image_command(tmp_path: Path) -> Iterator[type[Started]]:
    """Run a command of the image with a free port appended; stopped by PID afterwards."""
    started: list[Started] = []

    class Run(Started):
        def __init__(self, command: list[str], env: dict[str, str] | None = None) -> None:
            port = free_port()
            log = tmp_path / f"image-{port}.log"
            argv = [*command, "--host", "127.0.0.1", "--port", str(port)]
            with log.open("wb") as out:
                process = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env=env or image_env()
                )
            super().__init__(process, port, log)
            started.append(self)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    if self.get("/health")[0] == 200:
                        return
                except OSError:
                    assert time.monotonic() < deadline, log.read_text()
                    time.sleep(0.05)

    yield Run
    for item in started:
        stop_process(item.process, signal.SIGTERM)


def served_ids(server: Started) -> list[str]:
    status, body = server.get("/v1/models")
    assert status == 200
    return [model["id"] for model in json.loads(body)["data"]]


def test_vllm_serve_becomes_llmsim_in_the_same_process(image_command: type[Started]) -> None:
    server = image_command(
        [str(VLLM), "serve", "--served-model-name", "llama", "--max-num-seqs", "8"]
    )
    assert served_ids(server) == ["llama"]
    cmdline = Path(f"/proc/{server.process.pid}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:4] == [b"-m", b"llmsim", b"serve"], "exec'd: SIGTERM reaches llmsim"
    environ = Path(f"/proc/{server.process.pid}/environ").read_bytes().split(b"\0")
    pythonpath = next(item for item in environ if item.startswith(b"PYTHONPATH="))
    assert str(SHIM).encode() not in pythonpath, "llmsim itself sees no vllm module"
    assert stop_process(server.process, signal.SIGTERM) == 0


def test_the_api_server_module_takes_the_same_arguments(image_command: type[Started]) -> None:
    server = image_command(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", "org/model-7b"]
    )
    assert served_ids(server) == ["org/model-7b"]


def test_the_earlier_llmsim_arguments_still_work(image_command: type[Started]) -> None:
    server = image_command([str(VLLM), "serve", "serve", "--lora", "sql-lora"])
    assert served_ids(server) == ["llmsim/sim-model", "sql-lora"]


def test_vllm_environment_variables_are_honoured_and_unknown_ones_ignored(
    image_command: type[Started], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = image_env(
        VLLM_API_KEY="s3cret",
        VLLM_SERVER_DEV_MODE="1",
        VLLM_WORKER_MULTIPROC_METHOD="spawn",
        VLLM_USE_V1="1",
    )
    server = image_command([str(VLLM), "serve"], env=env)
    assert server.get("/v1/models")[0] == 401
    assert server.get("/v1/models", {"Authorization": "Bearer s3cret"})[0] == 200
    assert server.get("/is_sleeping")[0] == 200, "dev mode routes"
    assert "VLLM_USE_V1" not in server.log.read_text()
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")
    assert load_settings({}).settings.log_level == "debug"
    monkeypatch.setenv("LLMSIM_LOG_LEVEL", "error")
    assert load_settings({}).settings.log_level == "error", "llmsim's own name comes first"


def test_other_vllm_commands_are_refused_and_version_names_llmsim() -> None:
    chat = subprocess.run(
        [str(VLLM), "chat"], env=image_env(), capture_output=True, text=True, timeout=30
    )
    assert chat.returncode == 2
    assert "only 'vllm serve' is available here" in chat.stderr
    version = subprocess.run(
        [str(VLLM), "--version"], env=image_env(), capture_output=True, text=True, timeout=30
    )
    assert version.returncode == 0
    assert "llmsim" in version.stdout


def test_the_package_installs_no_vllm_module_or_command() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["llmsim"]
    assert "vllm" not in project["project"]["scripts"]
    assert not list((ROOT / "llmsim").rglob("vllm")), "no vllm module inside the package"
    plain = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('vllm') is None)"],
        env={**plain, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert probe.stdout.strip() == "True"


def test_the_health_check_passes_over_https_too(tmp_path: Path) -> None:
    port = free_port()
    env = image_env(TMPDIR=str(tmp_path))
    command = [str(VLLM), "serve", "--self-signed-certs", "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=env,
    )
    check = [sys.executable, str(CONTAINER / "healthcheck.py")]
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while subprocess.run(check, env={**env, "LLMSIM_PORT": str(port)}, timeout=30).returncode:
            assert process.poll() is None
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.1)
    finally:
        stop_process(process)
    assert subprocess.run(check, env={**env, "LLMSIM_PORT": str(port)}, timeout=30).returncode == 1


def test_the_health_check_finds_the_port_on_the_command_line() -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", CONTAINER / "healthcheck.py")
    assert spec is not None
    assert spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    python = "/usr/local/bin/python3"
    assert healthcheck.port_of([python, "-m", "llmsim", "serve", "--port", "9000"]) == "9000"
    assert healthcheck.port_of([python, "-m", "llmsim", "serve", "--port=9001", "m"]) == "9001"
    assert healthcheck.port_of([python, "-m", "llmsim", "serve", "--max-num-seqs", "4"]) is None
    assert healthcheck.port_of(["/sbin/init", "--port", "1"]) is None, "not the server"
    assert healthcheck.serves_grpc_only([python, "-m", "llmsim", "serve", "m", "--grpc"])
    assert not healthcheck.serves_grpc_only([python, "-m", "llmsim", "serve", "--grpc-port", "1"])


def test_vllm_keep_alive_timeout_closes_idle_connections(image_command: type[Started]) -> None:
    server = image_command([str(VLLM), "serve"], env=image_env(VLLM_HTTP_TIMEOUT_KEEP_ALIVE="1"))
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        answered = time.monotonic()
        assert sock.recv(4096) == b"", "the server closes the idle connection"
        assert 0.8 < time.monotonic() - answered < 5


def test_a_keep_alive_timeout_that_is_not_seconds_is_refused() -> None:
    assert keep_alive_options({}) == {}
    assert keep_alive_options({"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": "5"}) == {"keepalive_timeout": 5.0}
    for bad in ("5s", "-1"):
        with pytest.raises(KeepAliveError, match="VLLM_HTTP_TIMEOUT_KEEP_ALIVE"):
            keep_alive_options({"VLLM_HTTP_TIMEOUT_KEEP_ALIVE": bad})
