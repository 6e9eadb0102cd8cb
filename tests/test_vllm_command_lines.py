"""Real ``vllm serve`` command lines from public deployment material start llmsim unchanged.

``tests/data/vllm_command_lines.json`` holds each command line as its source wrote it (the
repository, path and commit), the variables its deployment sets, and the arguments after the
program name once the shell or Kubernetes expanded them. Each starts the real CLI on a free
loopback port (only ``--host``/``--port`` are appended, as llmsim's own flags that win), lists
its served names and adapters in ``/v1/models`` and answers a request for the first name:
chat for a generative model, ``/v1/embeddings`` for a pooling one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, stop_process

DATA = Path(__file__).parent / "data"
ENTRIES: list[dict[str, Any]] = json.loads((DATA / "vllm_command_lines.json").read_text())
WORKERS = 3
STARTUP_TIMEOUT = 90.0  # generous: several servers start at once on a shared machine


@dataclass
class Outcome:
    """What one command line's server answered (or why it did not start)."""

    models: list[str]
    adapters: list[str]
    answer_status: int
    answer: Any
    log: str


def _values_after(argv: list[str], flag: str) -> list[str]:
    values: list[str] = []
    for index, arg in enumerate(argv):
        if arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
        elif arg == flag:
            following = argv[index + 1 :]
            stop = next((i for i, a in enumerate(following) if a.startswith("-")), len(following))
            values.extend(following[:stop])
    return values


def expected(entry: dict[str, Any]) -> tuple[list[str], list[str], bool]:
    """Served names, adapter names and whether it is a pooling model, read off the argv."""
    argv = entry["argv"]
    names = _values_after(argv, "--served-model-name")
    if not names:
        model = _values_after(argv, "--model")
        names = model[:1] or [argv[0]]
    adapters = []
    for module in _values_after(argv, "--lora-modules"):
        adapters.append(
            json.loads(module)["name"] if module.startswith("{") else module.split("=")[0]
        )
    pooling = "pooling" in _values_after(argv, "--runner")
    return names, adapters, pooling


def _request(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _wait_until_healthy(process: subprocess.Popen[bytes], base: str) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(base + "/health", timeout=1) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def run_command_line(entry: dict[str, Any], log_dir: Path) -> Outcome:
    """Start ``llmsim serve ARGV --host 127.0.0.1 --port N``, query it, stop it."""
    port = free_port()
    names, _, pooling = expected(entry)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
    env.update(entry.get("variables", {}))
    env.update(COLUMNS="200", PYTHONPATH=os.environ.get("PYTHONPATH", ""))
    command = [sys.executable, "-m", "llmsim", "serve", *entry["argv"]]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    log_path = log_dir / f"{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=DATA / "vllm_configs"
        )
    base = f"http://127.0.0.1:{port}"
    try:
        if not _wait_until_healthy(process, base):
            return Outcome([], [], 0, None, log_path.read_text(errors="replace"))
        _, listing = _request(base + "/v1/models")
        ids = [model["id"] for model in listing["data"]]
        served = [model["id"] for model in listing["data"] if model.get("parent") is None]
        if pooling:
            status, answer = _request(
                base + "/v1/embeddings", {"model": names[0], "input": "a deployment test"}
            )
        else:
            status, answer = _request(
                base + "/v1/chat/completions",
                {
                    "model": names[0],
                    "messages": [{"role": "user", "content": "Hi"}],
                    "max_tokens": 3,
                },
            )
        adapter_ids = [name for name in ids if name not in served]
        return Outcome(served, adapter_ids, status, answer, log_path.read_text(errors="replace"))
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[int, Outcome]]:
    """Every command line run once, a few at a time."""
    log_dir = tmp_path_factory.mktemp("vllm-command-lines")
    with ThreadPoolExecutor(WORKERS) as pool:
        results = pool.map(lambda entry: run_command_line(entry, log_dir), ENTRIES)
        yield dict(enumerate(results))


def test_the_collection_is_real_and_large_enough() -> None:
    assert len(ENTRIES) >= 30
    sources = {entry["source"].split(":")[0] for entry in ENTRIES}
    assert len(sources) >= 6
    for entry in ENTRIES:
        assert entry["commit"]
        assert entry["as_written"]
        assert entry["argv"]
    assert any(expected(entry)[2] for entry in ENTRIES)  # an embedding deployment
    assert any(expected(entry)[1] for entry in ENTRIES)  # one with adapters


@pytest.mark.timeout(600)  # the first test pays for every server: a loaded machine is slow
@pytest.mark.parametrize(
    "index",
    range(len(ENTRIES)),
    ids=[f"{i}-{e['source'].split(':')[1]}" for i, e in enumerate(ENTRIES)],
)
def test_a_real_vllm_command_line_serves_its_names(
    index: int, outcomes: dict[int, Outcome]
) -> None:
    entry, outcome = ENTRIES[index], outcomes[index]
    names, adapters, pooling = expected(entry)
    assert outcome.models, f"{entry['source']} did not start:\n{outcome.log}"
    assert outcome.models == names
    assert outcome.adapters == adapters
    assert outcome.answer_status == 200, outcome.answer
    kind = "list" if pooling else "chat.completion"
    assert outcome.answer["object"] == kind
    assert outcome.answer["model"] == names[0]
