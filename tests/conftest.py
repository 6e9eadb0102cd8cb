"""Shared fixtures: real llmsim processes on free loopback ports, and in-process apps."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_run(count: int, attempts: int = 50) -> int:
    """The first of ``count`` consecutive free loopback ports (per-rank ports are base + rank)."""
    for _ in range(attempts):
        base = free_port()
        if base + count <= 65536 and all(port_is_free(base + i) for i in range(1, count)):
            return base
    raise RuntimeError(f"no run of {count} free ports found")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening_ports(pid: int) -> set[int]:
    """The TCP ports ``pid`` and its child processes listen on (Linux ``/proc``)."""
    pids, inodes, ports = [pid], set(), set()
    for parent in pids:
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(child) for child in children)
        for fd in Path(f"/proc/{parent}/fd").iterdir():
            target = os.readlink(fd) if fd.is_symlink() else ""
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    """Send ``sig``, wait, kill if it outlives STOP_TIMEOUT; the exit code."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)
    return int(process.returncode)


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m llmsim ARGS`` without the caller's LLMSIM_* variables."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
    child_env.update({"COLUMNS": "200", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "llmsim", *args],
        capture_output=True,
        text=True,
        env=child_env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


@dataclass
class RunningServer:
    """An ``llmsim serve`` child process listening on loopback."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    args: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + "/v1"

    def log(self) -> str:
        """The output so far, in whole lines: a line still being written waits for the next
        read (a reader would see half a JSON record)."""
        text = self.log_path.read_text(errors="replace")
        return text[: text.rfind("\n") + 1]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return stop_process(self.process, sig)


def _server_port(args: list[str]) -> int:
    """A free port named nowhere in ``args`` (with ``--dp-ports``, its per-rank neighbours too)."""
    ranks = 1
    for flag in ("-dp", "--data-parallel-size"):
        if flag in args and "--dp-ports" in args:
            ranks = int(args[args.index(flag) + 1])
    named = {int(port) for port in re.findall(r":(\d{2,5})\b", " ".join(args))}
    for _ in range(50):
        base = free_port_run(ranks)
        if not named & set(range(base, base + ranks)):
            return base
    raise RuntimeError("no free port run clear of the ports in the arguments")


def start_server(
    args: list[str], tmp_path: Path, env: dict[str, str] | None = None
) -> RunningServer:
    port = _server_port(args)
    log_path = tmp_path / f"llmsim-{port}.log"
    command = [
        sys.executable,
        "-m",
        "llmsim",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *args,
    ]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
    child_env.update(env or {})
    child_env.setdefault("COLUMNS", "200")
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=child_env)
    server = RunningServer(process, port, log_path, args)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llmsim exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.base_url + "/health", timeout=1) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.05)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"llmsim did not become healthy:\n{server.log()}")


def post_json(server: RunningServer, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """POST a JSON body; the status and the decoded JSON answer, errors included."""
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def stream_events(server: RunningServer, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """POST ``body`` with ``stream: true``; the JSON payloads of the answer's ``data:`` lines."""
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps({**body, "stream": True}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        lines = response.read().decode().splitlines()
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


@pytest.fixture
def llmsim_server(tmp_path: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start ``llmsim serve`` with extra CLI args; every server is stopped by PID afterwards."""
    servers: list[RunningServer] = []

    def start(*args: str, env: dict[str, str] | None = None) -> RunningServer:
        server = start_server(list(args), tmp_path, env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for a whole module of read-only checks: echo mode, two adapters."""
    server = start_server(
        [
            "--mode",
            "echo",
            "--lora",
            "sql-lora,chat-lora",
            "--seed",
            "7",
            "--max-model-len",
            "2048",
        ],
        tmp_path_factory.mktemp("shared"),
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def proto(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    """gRPC client modules generated in the test from vLLM's .proto, as a vLLM client builds
    them (needs the ``grpc`` extra and grpcio-tools)."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("client")
    source = Path(__file__).resolve().parent.parent / "llmsim/api/grpc/generated/vllm_engine.proto"
    (out / "vllm_engine.proto").write_text(source.read_text())
    args = ["protoc", f"-I{out}", f"--python_out={out}", f"--grpc_python_out={out}"]
    assert protoc.main([*args, str(out / "vllm_engine.proto")]) == 0
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("vllm_engine_pb2"), importlib.import_module(
            "vllm_engine_pb2_grpc"
        )
    finally:
        sys.path.remove(str(out))
