"""Fleet density: many step-model instances under real concurrency on one machine.

    python benchmarks/density.py [--instances 64] [--concurrency 20] [--backend workers]
                                 [--workers N] [--duration 8] [--warmup 2]

For every (instances, concurrency) pair it writes a fleet file (step latency model,
20 ms steps: ``inter_token_latency = "20ms"`` and no other step cost; no access log, as
``run.py`` starts llmsim), starts ``llmsim fleet`` on consecutive loopback ports, and
measures

    start-up   from the exec to every instance's /health answering 200
    load       CONCURRENCY keep-alive connections per instance, each sending 20-token
               non-streaming chats back to back for --duration seconds after --warmup
    ITL        each instance's mean inter-token latency, from its own
               vllm:inter_token_latency_seconds over the whole load (scraped before and
               after it: a scrape during the load would stall the steps it measures)
    E2E        the client's mean end-to-end time (20 tokens are 20 steps: 400 ms), and
               the servers' own (vllm:e2e_request_latency_seconds): the difference is
               time spent in sockets and event loops before and after the engine
    memory     the fleet's total RSS (parent and children) and PSS at the end of the load
    CPU        the cores the fleet and the client used, their CPU per request, and so the
               cores the target rate (every slot's request done in 20 steps) needs: on a
               shared machine the one figure that does not depend on what else runs

and checks the bars: total RSS <= 1 GB, every instance's mean ITL within 5 % of the step,
mean E2E within 10 % of 20 steps, zero errors, start-up <= 3 s. The load generator runs
in this process on raw asyncio sockets (:mod:`rawclient`, uvloop when installed), so it
costs a fraction of a core. The fleet is stopped by PID (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from procs import BenchError, Child, cleanup_on_exit, llmsim_command, raise_fd_limit
from rawclient import ProtocolError, RawConnection, build_request, open_connection

STARTUP_BAR = 3.0
RSS_BAR_MB = 1024.0
ITL_TOLERANCE = 0.05
E2E_TOLERANCE = 0.10
REQUEST_TIMEOUT = 30.0
HEALTH_DEADLINE = 60.0


@dataclass
class Case:
    """One measurement: how many instances, and closed-loop clients on each."""

    instances: int
    concurrency: int
    tokens: int
    step: float


@dataclass
class Outcome:
    """What one case measured, and which bars it missed."""

    case: Case
    startup: float = 0.0
    startup_cpu: float = 0.0
    itl: list[float] = field(default_factory=list)
    server_e2e: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    errors: int = 0
    rss_mb: float = 0.0
    pss_mb: float = 0.0
    server_cores: float = 0.0
    client_cores: float = 0.0
    other_cores: float = 0.0
    """What everything else on the machine used meanwhile: a quiet machine reads about 0."""
    duration: float = 0.0
    load_average: float = 0.0

    @property
    def e2e_target(self) -> float:
        return self.case.tokens * self.case.step

    def cpu_per_request(self, cores: float) -> float:
        """CPU seconds per request measured, from the cores used over the window."""
        return cores * self.duration / len(self.e2e) if self.e2e else float("nan")

    @property
    def cores_needed(self) -> float:
        """Cores the fleet and the client need at the target rate (every request in
        ``e2e_target``), at the CPU per request measured: independent of what else runs."""
        rate = self.case.instances * self.case.concurrency / self.e2e_target
        return rate * self.cpu_per_request(self.server_cores + self.client_cores)

    def failures(self) -> list[str]:
        bars = []
        if self.startup > STARTUP_BAR:
            bars.append(f"start-up {self.startup:.2f} s > {STARTUP_BAR} s")
        if self.rss_mb > RSS_BAR_MB:
            bars.append(f"RSS {self.rss_mb:.0f} MB > {RSS_BAR_MB:.0f} MB")
        worst = max(self.itl, default=float("inf"))
        if worst > self.case.step * (1 + ITL_TOLERANCE):
            bars.append(f"worst instance ITL {worst * 1000:.2f} ms")
        mean = statistics.fmean(self.e2e) if self.e2e else float("inf")
        if abs(mean - self.e2e_target) > self.e2e_target * E2E_TOLERANCE:
            bars.append(f"mean E2E {mean * 1000:.0f} ms")
        if self.errors:
            bars.append(f"{self.errors} errors")
        return bars


# -- the fleet ------------------------------------------------------------------------


def port_is_free(port: int) -> bool:
    """Nothing listens on, or holds, this loopback port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def consecutive_ports(count: int) -> int:
    """The first of ``count`` free consecutive loopback ports."""
    for base in range(20000, 60000, 97):
        if all(port_is_free(port) for port in range(base, base + count)):
            return base
    raise BenchError(f"no {count} consecutive free ports")


def write_fleet(folder: Path, case: Case, base: int, args: argparse.Namespace) -> Path:
    lines = [
        f"base_port = {base}",
        "[defaults]",
        'latency_model = "step"',
        f'inter_token_latency = "{case.step * 1000:g}ms"',
        f'data_parallel_backend = "{args.backend}"',
        f"access_log = {'true' if args.access_log else 'false'}",
        'shutdown_timeout = "2s"',
    ]
    if args.workers:
        lines.append(f"workers = {args.workers}")
    for index in range(case.instances):
        lines += ["[[instance]]", f'name = "i{index}"']
    path = folder / f"density-{case.instances}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def fleet_pids(parent: int) -> list[int]:
    """The parent and its children, from /proc."""
    pids = [parent]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: Sequence[int]) -> float:
    """User and system CPU seconds the processes have used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not stolen) so far."""
    line = Path("/proc/stat").read_text().split("\n", 1)[0]
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in line.split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def memory_mb(pids: Sequence[int]) -> tuple[float, float]:
    """Total RSS and PSS of ``pids`` in MB (PSS shares pages the forked children share)."""
    rss = pss = 0
    for pid in pids:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss / 1024, pss / 1024


# -- talking to it ----------------------------------------------------------------------


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    return status, body


async def wait_all_healthy(child: Child, ports: Sequence[int]) -> None:
    async def one(port: int) -> None:
        while child.running():
            try:
                if (await http_get(port, "/health"))[0] == 200:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.01)
        raise BenchError(child.failure("llmsim fleet exited during start-up"))

    await asyncio.wait_for(asyncio.gather(*(one(port) for port in ports)), HEALTH_DEADLINE)


HISTOGRAMS = ("vllm:inter_token_latency_seconds", "vllm:e2e_request_latency_seconds")
"""Read from every instance: its ITL, and its own end-to-end time (from the request's
arrival in the handler to its last token), which tells the server's share of the client's."""


async def histogram_totals(ports: Sequence[int]) -> list[dict[str, tuple[float, float]]]:
    """Each instance's (sum, count) of every family in :data:`HISTOGRAMS`."""

    async def one(port: int) -> dict[str, tuple[float, float]]:
        _, body = await http_get(port, "/metrics")
        totals = dict.fromkeys(HISTOGRAMS, (0.0, 0.0))
        for line in body.decode().splitlines():
            name, _, rest = line.partition("{")
            family, _, part = name.rpartition("_")
            if family in totals and part in ("sum", "count") and rest:
                value = float(line.rsplit(" ", 1)[1])
                total, count = totals[family]
                totals[family] = (total + value, count) if part == "sum" else (total, count + value)
        return totals

    return list(await asyncio.gather(*(one(port) for port in ports)))


def means(
    before: Sequence[dict[str, tuple[float, float]]],
    after: Sequence[dict[str, tuple[float, float]]],
    family: str,
) -> list[float]:
    """Each instance's mean of ``family`` between two scrapes."""
    values = []
    for old, new in zip(before, after, strict=True):
        (s0, c0), (s1, c1) = old[family], new[family]
        values.append((s1 - s0) / (c1 - c0) if c1 > c0 else float("inf"))
    return values


class Load:
    """Closed-loop clients: each slot sends its next request as soon as one returns."""

    def __init__(self, case: Case, ports: Sequence[int], together: bool = False) -> None:
        self.case = case
        self.ports = ports
        self.together = together
        self.e2e: list[float] = []
        self.errors = 0
        self.recording = False
        self.stopping = False
        body = (
            '{"model":"llmsim/sim-model","messages":[{"role":"user","content":"hi"}],'
            f'"max_tokens":{case.tokens},"ignore_eos":true}}'
        ).encode()
        self.requests = {
            port: build_request(f"http://127.0.0.1:{port}/v1/chat/completions", body)[2]
            for port in ports
        }
        self.expected = f'"completion_tokens":{case.tokens}'.encode()

    def start_delay(self, instance: int, slot: int) -> float:
        """When a client starts: spread evenly over one request's duration, so that each
        instance gets about one new request per step, as independent clients would send
        them. Started together, the 20 clients of an instance (and every instance's) would
        stay in step forever, their requests all arriving in one step and all finishing in
        one, a herd no real fleet sees."""
        if self.together:
            return 0.0
        count = self.case.instances * self.case.concurrency
        return self.e2e_period * (slot * self.case.instances + instance) / count

    @property
    def e2e_period(self) -> float:
        return self.case.tokens * self.case.step

    async def slot(self, port: int, delay: float) -> None:
        clock = time.perf_counter
        request = self.requests[port]
        connection: RawConnection | None = None
        await asyncio.sleep(delay)
        while not self.stopping:
            try:
                if connection is None or connection.closed:
                    connection = await open_connection("127.0.0.1", port, clock)
                started = clock()
                status, body = await connection.send(request, None, REQUEST_TIMEOUT)
                took = clock() - started
                ok = status == 200 and self.expected in body.replace(b" ", b"")
            except (OSError, asyncio.TimeoutError, ProtocolError):  # counted, never raised
                ok, took, connection = False, 0.0, None
            if self.recording:
                if ok:
                    self.e2e.append(took)
                else:
                    self.errors += 1
            elif not ok:
                await asyncio.sleep(0.05)  # not ready yet while warming up
        if connection is not None:
            connection.close()

    async def run(self, warmup: float, duration: float, outcome: Outcome, pids: list[int]) -> None:
        # Scraped only while no request runs: rendering 32 instances' metrics at once
        # holds a worker's event loop for hundreds of milliseconds, which the steps of
        # every instance on it would show.
        before = await histogram_totals(self.ports)
        slots = [
            asyncio.ensure_future(self.slot(port, self.start_delay(instance, slot)))
            for instance, port in enumerate(self.ports)
            for slot in range(self.case.concurrency)
        ]
        await asyncio.sleep(warmup)
        server_cpu = cpu_seconds(pids)
        client_cpu = _own_cpu()
        busy = machine_busy()
        self.recording = True
        await asyncio.sleep(duration)
        outcome.rss_mb, outcome.pss_mb = memory_mb(pids)
        self.recording = False
        outcome.server_cores = (cpu_seconds(pids) - server_cpu) / duration
        outcome.client_cores = (_own_cpu() - client_cpu) / duration
        outcome.other_cores = max(
            (machine_busy() - busy) / duration - outcome.server_cores - outcome.client_cores, 0.0
        )
        outcome.duration = duration
        self.stopping = True
        await asyncio.wait(slots, timeout=REQUEST_TIMEOUT)
        after = await histogram_totals(self.ports)
        outcome.itl = means(before, after, HISTOGRAMS[0])
        outcome.server_e2e = means(before, after, HISTOGRAMS[1])
        outcome.e2e, outcome.errors = self.e2e, self.errors


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- one case ---------------------------------------------------------------------------


async def run_case(case: Case, args: argparse.Namespace, folder: Path) -> Outcome:
    base = consecutive_ports(case.instances)
    ports = list(range(base, base + case.instances))
    fleet = write_fleet(folder, case, base, args)
    outcome = Outcome(case)
    log = folder / f"fleet-{case.instances}-{case.concurrency}.log"
    started = time.perf_counter()
    child = Child("fleet", [*llmsim_command(), "fleet", str(fleet)], log)
    try:
        await wait_all_healthy(child, ports)
        outcome.startup = time.perf_counter() - started
        pids = fleet_pids(child.pid)
        outcome.startup_cpu = cpu_seconds(pids)
        outcome.load_average = os.getloadavg()[0]
        await Load(case, ports, args.together).run(args.warmup, args.duration, outcome, pids)
    finally:
        child.stop()
    return outcome


def report(outcome: Outcome) -> str:
    case = outcome.case
    itl = [value * 1000 for value in outcome.itl]
    e2e = sorted(outcome.e2e)
    mean_e2e = statistics.fmean(e2e) * 1000 if e2e else float("nan")
    p99 = e2e[int(len(e2e) * 0.99)] * 1000 if e2e else float("nan")
    failures = outcome.failures()
    return (
        f"| {case.instances} | {case.concurrency} "
        f"| {outcome.startup:.2f} s ({outcome.startup_cpu:.2f} s CPU) "
        f"| {outcome.rss_mb:.0f} MB ({outcome.rss_mb / case.instances:.1f}) "
        f"| {outcome.pss_mb:.0f} MB ({outcome.pss_mb / case.instances:.1f}) "
        f"| {statistics.fmean(itl):.2f} / {max(itl):.2f} ms "
        f"| {mean_e2e:.0f} / {p99:.0f} ms | {statistics.fmean(outcome.server_e2e) * 1000:.0f} ms "
        f"| {len(e2e)} | {outcome.errors} "
        f"| {outcome.server_cores:.2f} + {outcome.client_cores:.2f} "
        f"| {outcome.other_cores:.2f} "
        f"| {outcome.cpu_per_request(outcome.server_cores) * 1e6:.0f} + "
        f"{outcome.cpu_per_request(outcome.client_cores) * 1e6:.0f} µs "
        f"| {outcome.cores_needed:.2f} "
        f"| {outcome.load_average:.1f} | {'PASS' if not failures else '; '.join(failures)} |"
    )


HEADER = (
    "| instances | concurrent each | start-up (CPU of the fleet) | RSS total (per instance) "
    "| PSS total (per instance) | ITL mean / worst instance | E2E mean / p99 "
    "| server's own E2E mean | requests "
    "| errors | cores used: fleet + client | cores used by other work "
    "| CPU per request: fleet + client "
    "| cores the target rate needs | load avg | bars |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[64])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[20])
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--step-ms", type=float, default=20.0)
    parser.add_argument("--backend", default="workers", choices=["workers", "mp", "inprocess"])
    parser.add_argument("--workers", type=int, default=None, help="default: one per core")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--together",
        action="store_true",
        help="start every client at once (by default their starts are spread over one "
        "request's duration: clients started together stay in step, a herd)",
    )
    parser.add_argument(
        "--access-log", action="store_true", help="keep the access log on (off, as in run.py)"
    )
    return parser.parse_args(argv)


async def main_async(args: argparse.Namespace) -> int:
    failed = False
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="llmsim-density-") as folder:
        for instances in args.instances:
            for concurrency in args.concurrency:
                case = Case(instances, concurrency, args.tokens, args.step_ms / 1000)
                outcome = await run_case(case, args, Path(folder))
                failed = failed or bool(outcome.failures())
                print(report(outcome), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    with cleanup_on_exit():
        try:
            return loop.run_until_complete(main_async(args))
        except BenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            loop.close()


if __name__ == "__main__":
    raise SystemExit(main())
