"""Child processes and what the runner measures about them from /proc.

Every process the benchmarks start goes through :class:`Child`, which records it so that
:func:`cleanup_on_exit` can stop whatever is still running, always by PID: SIGTERM first,
SIGKILL after a timeout.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CEILING_APP = BENCH_DIR / "ceiling_app.py"
HEALTH_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


# -- child processes ------------------------------------------------------------------

CHILDREN: list[Child] = []


class BenchError(Exception):
    """A scenario could not run to completion."""


class Child:
    """A process started by the runner; always stopped by PID."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        stdout_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.stdout_path = stdout_path
        with contextlib.ExitStack() as stack:
            log = stack.enter_context(log_path.open("ab"))
            out = stack.enter_context(stdout_path.open("wb")) if stdout_path else log
            self.started = time.perf_counter()
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log if stdout_path else subprocess.STDOUT,
                env=env if env is not None else child_env(),
                cwd=ROOT,
                start_new_session=True,
            )
        CHILDREN.append(self)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = STOP_TIMEOUT) -> float:
        """SIGTERM, then SIGKILL after ``timeout``; the seconds it took to exit."""
        began = time.perf_counter()
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            if self.wait(timeout) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self.wait(timeout)
        if self in CHILDREN:
            CHILDREN.remove(self)
        return time.perf_counter() - began

    def failure(self, what: str) -> str:
        """``name what: last log line`` and then the tail of the log, for errors."""
        tail = self.log_tail()
        lines = [line.strip() for line in tail.splitlines() if line.strip()]
        last = f": {lines[-1][:200]}" if lines else ""
        return f"{self.name} {what}{last}\n{tail}"

    def log_tail(self, limit: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


def stop_all_children() -> None:
    for child in list(CHILDREN):
        child.stop()


def child_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("LLMSIM_") and key != "VLLM_API_KEY"
    }
    env["COLUMNS"] = "200"
    return env


WITHOUT_SPEEDUPS = BENCH_DIR / "without_speedups"


def server_env(plain: bool) -> dict[str, str]:
    """A server's environment; ``plain`` hides uvloop and orjson, as in a plain install."""
    env = child_env()
    if plain:
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(WITHOUT_SPEEDUPS) + (os.pathsep + path if path else "")
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def llmsim_command() -> list[str]:
    """The ``llmsim`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("llmsim")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "llmsim"]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def http_post(url: str, body: str, timeout: float = 10.0) -> bytes:
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return bytes(response.read())


def wait_healthy(child: Child, base_url: str, timeout: float = HEALTH_TIMEOUT) -> float:
    """Seconds from the child's exec to its first 200 on /health (polled every 5 ms)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not child.running():
            child.stop()
            raise BenchError(child.failure(f"exited with {child.process.returncode}"))
        try:
            status, _ = http_get(base_url + "/health", timeout=1.0)
            if status == 200:
                return time.perf_counter() - child.started
        except OSError:
            pass
        time.sleep(0.005)
    child.stop()
    raise BenchError(child.failure(f"not healthy after {timeout:.0f}s"))


@dataclass
class Server:
    child: Child
    port: int
    startup_seconds: float

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def chat_url(self) -> str:
        return self.base_url + "/v1/chat/completions"


def start_llmsim(
    workdir: Path,
    name: str,
    *args: str,
    access_log: bool = False,
    env: dict[str, str] | None = None,
) -> Server:
    """Start ``llmsim serve``; without its access log unless asked, like the ceiling app."""
    port = free_port()
    argv = [*llmsim_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += [] if access_log else ["--no-access-log"]
    child = Child(name, [*argv, *args], workdir / f"{name}.log", env=env)
    return Server(child, port, wait_healthy(child, f"http://127.0.0.1:{port}"))


def start_ceiling(
    workdir: Path,
    payload: Path,
    *args: str,
    name: str = "ceiling",
    env: dict[str, str] | None = None,
) -> Server:
    port = free_port()
    argv = [sys.executable, str(CEILING_APP), "--port", str(port), "--payload", str(payload)]
    child = Child(name, argv + list(args), workdir / f"{name}.log", env=env)
    return Server(child, port, wait_healthy(child, f"http://127.0.0.1:{port}"))


# -- sampling a server process ----------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def system_busy_seconds() -> float | None:
    """CPU seconds all processes of the machine have used (``cpu`` line of /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


RUNNING_RE = re.compile(rb"^vllm:num_requests_running\{[^}]*\} ([0-9.eE+-]+)$", re.M)


class ProcSampler:
    """Samples a process's CPU time and RSS, the machine's busy time and, optionally,
    llmsim's number of running sequences."""

    def __init__(
        self,
        pid: int,
        interval: float = 0.1,
        metrics_url: str | None = None,
        metrics_interval: float = 0.5,
        max_seconds: float = 900.0,
    ) -> None:
        self.pid = pid
        self.interval = interval
        self.metrics_url = metrics_url
        self.metrics_interval = metrics_interval
        self.max_seconds = max_seconds
        self.samples: list[tuple[float, float, int, float]] = []
        """(time, process CPU seconds, RSS in kB, machine busy CPU seconds)."""
        self.running: list[tuple[float, int]] = []
        """(time, running sequences) from llmsim's /metrics."""
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._proc_loop, daemon=True)]
        if metrics_url:
            # Its own thread: a slow /metrics answer must not delay the CPU samples.
            self._threads.append(threading.Thread(target=self._metrics_loop, daemon=True))

    def __enter__(self) -> ProcSampler:
        self._sample()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5.0)
        self._sample()

    def _proc_loop(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.wait(self.interval) and time.monotonic() < deadline:
            self._sample()

    def _metrics_loop(self) -> None:
        assert self.metrics_url is not None
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.wait(self.metrics_interval) and time.monotonic() < deadline:
            try:
                _, text = http_get(self.metrics_url, timeout=2.0)
            except OSError:
                continue
            match = RUNNING_RE.search(text)
            if match:
                self.running.append((time.time(), int(float(match.group(1)))))

    def _sample(self) -> None:
        cpu, rss = proc_cpu_seconds(self.pid), proc_rss_kb(self.pid)
        busy = system_busy_seconds()
        if cpu is None or rss is None:
            return
        self.samples.append((time.time(), cpu, rss, math.nan if busy is None else busy))

    def _at(self, when: float, column: int) -> float | None:
        """A cumulative column interpolated at a wall-clock time."""
        points = self.samples
        if not points:
            return None
        if when <= points[0][0]:
            return points[0][column]
        for before, after in itertools.pairwise(points):
            if before[0] <= when <= after[0]:
                span = after[0] - before[0]
                share = (when - before[0]) / span if span > 0 else 0.0
                return before[column] + (after[column] - before[column]) * share
        return points[-1][column]

    def _rate(self, start: float, end: float, column: int) -> float | None:
        first, last = self._at(start, column), self._at(end, column)
        if first is None or last is None or end <= start or math.isnan(last - first):
            return None
        return (last - first) / (end - start)

    def cores_between(self, start: float, end: float) -> float | None:
        """Average CPU cores the process used between two wall-clock times."""
        return self._rate(start, end, 1)

    def machine_cores_between(self, start: float, end: float) -> float | None:
        """Average CPU cores all processes of the machine used between two times."""
        return self._rate(start, end, 3)

    @property
    def peak_rss_kb(self) -> int:
        return max((sample[2] for sample in self.samples), default=0)

    @property
    def peak_running(self) -> int:
        return max((count for _, count in self.running), default=0)


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def cleanup_on_exit() -> Iterator[None]:
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        stop_all_children()
        signal.signal(signal.SIGTERM, previous)
