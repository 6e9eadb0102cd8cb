"""Several simulated instances from one command, as a user runs them.

``llmsim fleet FILE`` and ``llmsim serve --data-parallel-size N --dp-ports`` are started as real
processes on free loopback ports; each instance must answer on its own port with its own
model, adapters and metrics, and stopping the parent must leave no process behind.
"""

from __future__ import annotations

import concurrent.futures
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import STARTUP_TIMEOUT, STOP_TIMEOUT, free_port, port_is_free, stop_process
from prometheus_client.parser import text_string_to_metric_families

PANEL_ROW = re.compile(r"http://127\.0\.0\.1:(\d+)\s+(\d+)\s")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for a reaper."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] != "Z"


def children_of(pid: int) -> set[int]:
    """PIDs whose parent is ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def wait_until_gone(pids: set[int], timeout: float = STOP_TIMEOUT) -> set[int]:
    """The PIDs still alive after ``timeout`` (polled)."""
    deadline = time.monotonic() + timeout
    remaining = set(pids)
    while remaining and time.monotonic() < deadline:
        remaining = {pid for pid in remaining if alive(pid)}
        time.sleep(0.05)
    return remaining


@dataclass
class Group:
    """A running ``llmsim fleet`` or data-parallel ``llmsim serve`` parent."""

    process: subprocess.Popen[bytes]
    log_path: Path
    ports: list[int]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def pids(self) -> dict[int, int]:
        """Instance PID by port, from the start-up panel."""
        return {int(port): int(pid) for port, pid in PANEL_ROW.findall(self.log())}

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return stop_process(self.process, sig)


def start_group(
    args: list[str], ports: list[int], tmp_path: Path, *, own_session: bool = False
) -> Group:
    """Start ``llmsim ARGS``; wait until every port answers /health and the panel is out.

    ``own_session`` gives it a process group of its own, as a shell's foreground job has.
    """
    log_path = tmp_path / f"group-{ports[0]}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
    env["COLUMNS"] = "250"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "llmsim", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=own_session,
        )
    group = Group(process, log_path, ports)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    waiting = list(ports)
    while waiting and time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llmsim exited with {process.returncode}:\n{group.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{waiting[0]}/health", timeout=1):
                waiting.pop(0)
        except OSError:
            time.sleep(0.05)
    while time.monotonic() < deadline and not set(ports) <= set(group.pids()):
        time.sleep(0.05)
    if waiting or not set(ports) <= set(group.pids()):
        group.stop(signal.SIGKILL)
        raise RuntimeError(f"llmsim did not start every instance:\n{group.log()}")
    return group


@pytest.fixture
def groups() -> Iterator[list[Group]]:
    """Every group a test starts is stopped by PID afterwards."""
    started: list[Group] = []
    yield started
    for group in started:
        group.stop()


def consecutive_free_ports(count: int) -> list[int]:
    for _ in range(50):
        base = free_port()
        ports = list(range(base, base + count))
        if all(port_is_free(port) for port in ports):
            return ports
    pytest.skip(f"no {count} consecutive free ports")


def get_json(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return dict(json.load(response))


def model_ids(base_url: str) -> list[str]:
    data = get_json(base_url + "/v1/models")["data"]
    assert isinstance(data, list)
    return [card["id"] for card in data]


def chat(base_url: str, model: str, max_tokens: int = 3) -> dict[str, object]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
    }
    request = urllib.request.Request(
        base_url + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.status == 200
        return dict(json.load(response))


def successes(base_url: str) -> dict[tuple[str, str], float]:
    """``vllm:request_success_total`` summed over finish reasons, by (model_name, engine)."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "vllm:request_success":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["model_name"], sample.labels["engine"])
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def running(base_url: str) -> float:
    """``vllm:num_requests_running`` of the instance."""
    with urllib.request.urlopen(base_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "vllm:num_requests_running"
        for sample in family.samples
    )


# -- llmsim fleet -----------------------------------------------------------------------


def write_fleet(tmp_path: Path, ports: list[int]) -> Path:
    (tmp_path / "gamma.toml").write_text(
        'model = "org/gamma"\nserved_model_name = ["gamma-chat"]\ninter_token_latency = "1ms"\n'
    )
    path = tmp_path / "fleet.toml"
    path.write_text(
        f"""
[defaults]
mode = "echo"
max_model_len = 2048
shutdown_timeout = "2s"

[[instance]]
name = "alpha"
port = {ports[0]}
model = "org/alpha"

[[instance]]
name = "beta"
port = {ports[1]}
model = "org/beta"
lora = ["x", "y"]
max_loras = 2

[[instance]]
name = "gamma"
port = {ports[2]}
config = "gamma.toml"
"""
    )
    return path


def test_fleet_instances_answer_on_their_own_ports_and_stop_together(
    tmp_path: Path, groups: list[Group]
) -> None:
    ports = [free_port() for _ in range(3)]
    group = start_group(["fleet", str(write_fleet(tmp_path, ports))], ports, tmp_path)
    groups.append(group)
    urls = [group.url(index) for index in range(3)]

    assert model_ids(urls[0]) == ["org/alpha"]
    assert model_ids(urls[1]) == ["org/beta", "x", "y"]
    assert model_ids(urls[2]) == ["gamma-chat"]  # from the instance's own profile
    labels = ["org/alpha", "org/beta", "gamma-chat"]
    for url, label in zip(urls, labels, strict=True):
        assert successes(url) == {(label, "0"): 0.0}

    chat(urls[1], "x")  # an adapter of beta: only beta's counters move
    assert successes(urls[1]) == {("org/beta", "0"): 1.0}
    assert successes(urls[0]) == {("org/alpha", "0"): 0.0}
    assert successes(urls[2]) == {("gamma-chat", "0"): 0.0}

    pids = group.pids()
    assert len(set(pids.values())) == 3
    assert set(pids.values()) == children_of(group.process.pid)
    assert group.stop(signal.SIGTERM) == 0
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    log = group.log()
    assert "Traceback" not in log
    for name in ("alpha", "beta", "gamma"):
        assert name in log


def test_ctrl_c_in_a_terminal_stops_every_instance(tmp_path: Path, groups: list[Group]) -> None:
    ports = [free_port() for _ in range(3)]
    fleet = str(write_fleet(tmp_path, ports))
    group = start_group(["fleet", fleet], ports, tmp_path, own_session=True)
    groups.append(group)
    pids = set(group.pids().values())
    os.killpg(group.process.pid, signal.SIGINT)  # what a terminal sends on Ctrl-C
    assert group.process.wait(STOP_TIMEOUT) == 0
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "Traceback" not in group.log()


def test_an_instance_that_dies_is_reported_and_the_rest_are_stopped(
    tmp_path: Path, groups: list[Group]
) -> None:
    ports = [free_port() for _ in range(3)]
    group = start_group(["fleet", str(write_fleet(tmp_path, ports))], ports, tmp_path)
    groups.append(group)
    pids = group.pids()
    os.kill(pids[ports[1]], signal.SIGKILL)
    assert group.process.wait(STOP_TIMEOUT) == 1
    assert f"instance beta (pid {pids[ports[1]]}) was killed by SIGKILL" in group.log()
    assert not wait_until_gone(set(pids.values()), timeout=1.0)
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(group.url(0) + "/health", timeout=1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_instances_do_not_outlive_a_killed_parent(tmp_path: Path, groups: list[Group]) -> None:
    ports = [free_port() for _ in range(3)]
    group = start_group(["fleet", str(write_fleet(tmp_path, ports))], ports, tmp_path)
    groups.append(group)
    pids = set(group.pids().values())
    group.stop(signal.SIGKILL)
    survivors = wait_until_gone(pids)
    for pid in survivors:  # do not leave them behind when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "instances outlived their parent"


def test_a_port_in_use_fails_the_whole_fleet_before_anything_starts(
    tmp_path: Path, groups: list[Group]
) -> None:
    ports = [free_port() for _ in range(3)]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[2]))
        taken.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
        result = subprocess.run(
            [sys.executable, "-m", "llmsim", "fleet", str(write_fleet(tmp_path, ports))],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert f"gamma: cannot listen on 127.0.0.1:{ports[2]}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert port_is_free(ports[0])
    assert port_is_free(ports[1])


# -- llmsim serve --data-parallel-size N --dp-ports: one port per rank ---------------------


@pytest.mark.parametrize("backend", ["mp", "inprocess", "workers"])
def test_data_parallel_ranks_have_their_own_ports_and_engine_labels(
    backend: str, tmp_path: Path, groups: list[Group]
) -> None:
    ports = consecutive_free_ports(3)
    args = ["serve", "--port", str(ports[0]), "--lora", "a", "--shutdown-timeout", "2s"]
    args += ["--data-parallel-size", "3", "--dp-ports", "--data-parallel-backend", backend]
    args += ["--workers", "2"]
    group = start_group(args, ports, tmp_path)
    groups.append(group)
    urls = [group.url(rank) for rank in range(3)]
    for rank, url in enumerate(urls):
        assert model_ids(url) == ["llmsim/sim-model", "a"]
        assert successes(url) == {("llmsim/sim-model", str(rank)): 0.0}

    chat(urls[1], "a")
    assert [successes(url)[("llmsim/sim-model", str(rank))] for rank, url in enumerate(urls)] == [
        0.0,
        1.0,
        0.0,
    ]

    pids = set(group.pids().values())
    parent = group.process.pid
    if backend != "inprocess":
        assert len(pids) == (3 if backend == "mp" else 2)
        assert pids == children_of(parent)
    else:
        assert pids == {parent}
        assert not children_of(parent)
    assert "3 simulated vLLM instances" in group.log()
    assert group.stop(signal.SIGTERM) == 0
    for pid in pids - {parent}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_sigterm_lets_every_instance_finish_its_requests(
    tmp_path: Path, groups: list[Group]
) -> None:
    ports = consecutive_free_ports(2)
    args = ["serve", "--port", str(ports[0]), "-dp", "2", "--dp-ports"]
    args += ["--inter-token-latency", "100ms"]
    group = start_group([*args, "--shutdown-timeout", "10s"], ports, tmp_path)
    groups.append(group)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        replies = [pool.submit(chat, group.url(rank), "llmsim/sim-model", 10) for rank in (0, 1)]
        time.sleep(0.4)  # both requests are running, about 0.5 s before they finish
        group.process.send_signal(signal.SIGTERM)
        usages = [reply.result(timeout=20)["usage"] for reply in replies]
    assert [usage["completion_tokens"] for usage in usages] == [10, 10]  # type: ignore[index]
    assert group.process.wait(STOP_TIMEOUT) == 0


# -- the workers backend: many instances on each of a few processes ------------------------


def write_worker_fleet(tmp_path: Path, ports: list[int]) -> Path:
    entries = "".join(
        f'[[instance]]\nname = "w{index}"\nport = {port}\nmodel = "org/w{index}"\n'
        for index, port in enumerate(ports)
    )
    path = tmp_path / "workers.toml"
    path.write_text(
        '[defaults]\ndata_parallel_backend = "workers"\nworkers = 2\n'
        f'shutdown_timeout = "10s"\ninter_token_latency = "100ms"\n{entries}'
    )
    return path


def test_workers_share_the_instances_and_drain_them_on_sigterm(
    tmp_path: Path, groups: list[Group]
) -> None:
    ports = [free_port() for _ in range(5)]
    group = start_group(["fleet", str(write_worker_fleet(tmp_path, ports))], ports, tmp_path)
    groups.append(group)
    pids = group.pids()
    assert set(pids.values()) == children_of(group.process.pid)
    assert [pids[port] for port in ports].count(pids[ports[0]]) == 3  # 3 + 2, in order
    assert pids[ports[3]] == pids[ports[4]] != pids[ports[0]]
    assert "5 simulated vLLM instances · 2 worker processes" in group.log()
    for index in range(5):
        assert model_ids(group.url(index)) == [f"org/w{index}"]
        assert successes(group.url(index)) == {(f"org/w{index}", "0"): 0.0}

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        replies = [pool.submit(chat, group.url(i), f"org/w{i}", 8) for i in (1, 4)]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(running(group.url(i)) for i in (1, 4)):
            time.sleep(0.02)
        # both run, on different workers, about 0.7 s before they finish
        group.process.send_signal(signal.SIGTERM)
        usages = [reply.result(timeout=20)["usage"] for reply in replies]
    assert [usage["completion_tokens"] for usage in usages] == [8, 8]  # type: ignore[index]
    assert group.process.wait(STOP_TIMEOUT) == 0
    assert not wait_until_gone(set(pids.values()), timeout=1.0)
    assert "Traceback" not in group.log()


def test_a_worker_that_dies_is_reported_with_its_instances(
    tmp_path: Path, groups: list[Group]
) -> None:
    ports = [free_port() for _ in range(5)]
    group = start_group(["fleet", str(write_worker_fleet(tmp_path, ports))], ports, tmp_path)
    groups.append(group)
    pids = group.pids()
    os.kill(pids[ports[4]], signal.SIGKILL)
    assert group.process.wait(STOP_TIMEOUT) == 1
    expected = f"worker 2 (pid {pids[ports[4]]}: instances w3, w4) was killed by SIGKILL"
    assert expected in group.log()
    assert not wait_until_gone(set(pids.values()), timeout=1.0)
    with pytest.raises(urllib.error.URLError, match="refused"):
        urllib.request.urlopen(group.url(0) + "/health", timeout=1)
