"""Does a live ``llmsim fleet`` agree with ``llmsim simulate`` on the same workload?

One seeded synthetic workload per load goes first through the simulation (in virtual time,
with per-request records), then through a real fleet of the same instances on loopback
ports in real time: the same requests at the same send times (to the microsecond), each to
the instance the simulation routed it to (its records name it), streamed by a lean
raw-socket client that timestamps each read. Prints median and p99 TTFT and TPOT, simulated
beside live, and their relative differences, for three loads; the highest preempts (a small
KV cache). First it measures the live stack's own time per request (HTTP, JSON, event loop
hops: about a millisecond) and gives it to the simulation as ``frontend_latency``.

    PYTHONPATH=$PWD python benchmarks/fleet_fidelity.py            # ~4 minutes
    PYTHONPATH=$PWD python benchmarks/fleet_fidelity.py --seconds 10 --rates 4 8 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import Child, cleanup_on_exit, free_port, llmsim_command, server_env, wait_healthy
from rawclient import build_request, open_connection

from llmsim.engine.step.wakeup import sleep_until
from llmsim.pool.fleet import load_fleet
from llmsim.settings.model import Settings
from llmsim.simulation.recorder import REQUESTS_FILE
from llmsim.simulation.run import Setup, simulate
from llmsim.simulation.stats import percentile
from llmsim.simulation.synthetic import Lengths, Synthetic
from llmsim.simulation.workload import Request

MODEL = "fidelity"
VOCABULARY = 30_000
SEED = 0
DEFAULTS = {
    "model": MODEL,
    "latency_model": "step",
    "inter_token_latency": "20ms",
    "decode_time_per_sequence": "0.5ms",
    "prefill_time_per_token": "40us",
    "max_num_batched_tokens": 512,
    "max_model_len": 1024,
    "kv_cache_size": 1536,
    "enable_prefix_caching": False,
    "host": "127.0.0.1",
    "access_log": False,
    "dashboard": False,
}
"""Every instance: ~20-30 ms steps, so that two cores keep up in real time, and a KV cache
of 96 blocks, so that the highest load runs out of it and preempts."""
INPUT_LEN = "uniform:64:256"
OUTPUT_LEN = "uniform:16:64"
TIMEOUT = 120.0
CALIBRATION_SAMPLES = 40
CALIBRATION_PROMPT = 64
CALIBRATION_PAUSE = 0.05
"""Seconds between two calibration requests: each finds its instance idle."""


@dataclass
class Times:
    """One request's figures: TTFT, and TPOT over the tokens after the first."""

    ttft: float
    tpot: float | None


@dataclass
class Stream:
    """What the client saw of one streamed answer."""

    sent: float = 0.0
    first: float = 0.0
    last: float = 0.0
    tokens: int = 0
    tail: bytes = field(default=b"")

    def read(self, piece: bytes, now: float) -> None:
        """Count the events that carry text (the SSE events of the completions API)."""
        data = self.tail + piece
        events = data.split(b"\n\n")
        self.tail = events.pop()
        for event in events:
            if event.startswith(b"data: {") and b'"text":""' not in event:
                self.tokens += 1
                self.last = now
                self.first = self.first or now


def fleet_file(directory: Path, replicas: int) -> Path:
    lines = ["[defaults]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in DEFAULTS.items()]
    for k in range(replicas):
        lines += ["", "[[instance]]", f'name = "i{k}"', f"port = {free_port()}"]
    path = directory / "fleet.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def workload(rate: float, seconds: float) -> list[Request]:
    synthetic = Synthetic(
        rate, Lengths.parse(INPUT_LEN, "input"), Lengths.parse(OUTPUT_LEN, "output"),
        duration=seconds,
    )  # fmt: skip
    return list(synthetic.requests(SEED))


def simulated(
    fleet: tuple[Settings, ...], requests: list[Request], output: Path
) -> tuple[list[int], list[Times], int]:
    """Each request's instance and figures in virtual time, and the preemptions."""

    class Fixed:
        def requests(self, seed: int) -> Iterator[Request]:
            return iter(requests)

    result = simulate(Setup(fleet[0], fleet=fleet, output=output, plots=False), Fixed())
    by_sent: dict[float, dict[str, float]] = {}
    for line in (output / REQUESTS_FILE).read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        by_sent[record["sent_s"]] = record
    records = [by_sent[round(request.send_at, 9)] for request in requests]
    instances = [int(record["instance"]) for record in records]
    times = [Times(record["ttft_s"], record["tpot_s"]) for record in records]
    return instances, times, int(result.overall.get("preemptions", 0))


def body(request: Request) -> bytes:
    rng = random.Random(f"{request.prompt}")
    prompt = [rng.randrange(100, VOCABULARY) for _ in range(request.prompt_tokens)]
    return json.dumps(
        {
            "model": MODEL,
            "prompt": prompt,
            "max_tokens": request.output_tokens,
            "ignore_eos": True,
            "stream": True,
        },
        separators=(",", ":"),
    ).encode()


async def live(ports: Sequence[int], requests: list[Request], instances: list[int]) -> list[Times]:
    """Send each request at its time to its instance on a connection opened beforehand."""
    clock = time.perf_counter
    payloads = [
        build_request(f"http://127.0.0.1:{ports[k]}/v1/completions", body(r))[2]
        for r, k in zip(requests, instances, strict=True)
    ]
    warm_body = body(replace(requests[0], output_tokens=1))
    for port in ports:  # warm each instance up (imports, first tokenization)
        warm = await open_connection("127.0.0.1", port, clock)
        url = f"http://127.0.0.1:{port}/v1/completions"
        await warm.send(build_request(url, warm_body)[2], None, 30)
        warm.close()
    connections = [await open_connection("127.0.0.1", ports[k], clock) for k in instances]
    streams = [Stream() for _ in requests]
    start = clock() + 0.2

    async def one(k: int) -> None:
        # on time to the microsecond, as the simulation sends: a plain sleep wakes up to a
        # millisecond late, which moves the request against the steps in flight
        await sleep_until(start + requests[k].send_at, clock)
        stream, connection = streams[k], connections[k]
        stream.sent = clock()
        status, answer = await connection.send(payloads[k], stream.read, TIMEOUT)
        connection.close()
        if status != 200 or stream.tokens != requests[k].output_tokens:
            raise RuntimeError(f"request {k}: {status} {stream.tokens} tokens {answer[:200]!r}")

    await asyncio.gather(*(one(k) for k in range(len(requests))))
    return [
        Times(
            s.first - s.sent,
            (s.last - s.first) / (s.tokens - 1) if s.tokens > 1 else None,
        )
        for s in streams
    ]


def modelled_ttft(settings: Settings, prompt_tokens: int) -> float:
    """An idle instance's modelled TTFT: one prefill step of the whole prompt."""
    return settings.inter_token_latency + prompt_tokens * settings.prefill_time_per_token


async def overhead(
    ports: Sequence[int], settings: Settings, count: int = CALIBRATION_SAMPLES
) -> tuple[float, float, float]:
    """The live stack's own time per request beyond the model, which ``frontend_latency``
    stands for in the simulation (the client's send, HTTP and JSON, tokenization, the event
    loop's hops, the token's write and read back): idle instances' TTFT for a one-token
    answer minus its modelled step. The median, first and third quartiles of ``count``
    samples taken in turn on every instance, each on a connection opened beforehand (as the
    timed requests are), after one warm-up request per instance; the median, because a busy
    machine's stalls make a mean, or a few samples, overshoot."""
    clock = time.perf_counter
    request = Request("calibration", CALIBRATION_PROMPT, 1)
    modelled = modelled_ttft(settings, request.prompt_tokens)
    payloads = [
        build_request(f"http://127.0.0.1:{port}/v1/completions", body(request))[2] for port in ports
    ]
    extra = []
    for k in range(-len(ports), count):  # the first round warms each instance up
        connection = await open_connection("127.0.0.1", ports[k % len(ports)], clock)
        await asyncio.sleep(CALIBRATION_PAUSE)  # the instance is idle, the connection set up
        stream = Stream()
        stream.sent = clock()
        await connection.send(payloads[k % len(ports)], stream.read, TIMEOUT)
        connection.close()
        if k >= 0:
            extra.append(stream.first - stream.sent - modelled)
    low, median, high = (max(0.0, percentile(extra, q)) for q in (25, 50, 75))
    return median, low, high


def figures(times: list[Times]) -> dict[str, float]:
    ttfts = [t.ttft for t in times]
    tpots = [t.tpot for t in times if t.tpot is not None]
    return {
        "ttft p50": percentile(ttfts, 50),
        "ttft p99": percentile(ttfts, 99),
        "tpot p50": percentile(tpots, 50),
        "tpot p99": percentile(tpots, 99),
    }


def compare(rate: float, count: int, preemptions: int, sim: list[Times], real: list[Times]) -> bool:
    """Print one load's rows; True when every figure is within its bound."""
    virtual, measured = figures(sim), figures(real)
    ok = True
    print(f"\n{rate:g} req/s, {count} requests, {preemptions} preemptions (simulated)")
    print(f"  {'figure':<10}{'simulated':>11}{'live':>10}{'diff':>9}  bound")
    for key, value in virtual.items():
        diff = measured[key] / value - 1.0 if value else 0.0
        bound = 0.05 if "p50" in key else 0.10
        ok = ok and abs(diff) <= bound
        mark = "ok" if abs(diff) <= bound else "MISS"
        print(
            f"  {key:<10}{value * 1e3:>9.1f}ms{measured[key] * 1e3:>8.1f}ms"
            f"{diff * 100:>+8.1f}%  ±{bound * 100:.0f}% {mark}"
        )
    return ok


def calibrated(ports: Sequence[int], fleet: tuple[Settings, ...]) -> tuple[Settings, ...]:
    """The fleet with the live stack's measured time per request as its ``frontend_latency``."""
    median, low, high = asyncio.run(overhead(ports, fleet[0]))
    print(
        f"live time per request beyond the model: {median * 1e3:.2f} ms "
        f"(quartiles {low * 1e3:.2f}-{high * 1e3:.2f} ms, {CALIBRATION_SAMPLES} requests)"
    )
    return tuple(settings.model_copy(update={"frontend_latency": median}) for settings in fleet)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs=3, default=[4.0, 10.0, 22.0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=60.0,
        help="sending time per load; a light load's median TTFT over fewer requests depends "
        "on the phase of the steps a request meets (about ±2 %% at 20 s, ±1 %% at 60 s)",
    )
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument(
        "--calibrate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="first measure the live stack's time per request on idle instances (the median "
        f"of {CALIBRATION_SAMPLES}) and give it to the simulation as frontend_latency",
    )
    args = parser.parse_args(argv)
    ok = True
    with tempfile.TemporaryDirectory() as workdir, cleanup_on_exit():
        directory = Path(workdir)
        path = fleet_file(directory, args.replicas)
        plan = load_fleet(path)
        fleet = tuple(instance.settings for instance in plan.instances)
        ports = [instance.settings.port for instance in plan.instances]
        argv_ = [*llmsim_command(), "fleet", str(path)]
        child = Child("fleet", argv_, directory / "fleet.log", env=server_env(plain=False))
        for port in ports:
            wait_healthy(child, f"http://127.0.0.1:{port}")
        print(f"fleet of {len(ports)} (pid {child.pid}); load average {os.getloadavg()}")
        if args.calibrate:
            fleet = calibrated(ports, fleet)
        for rate in args.rates:
            requests = workload(rate, args.seconds)
            instances, sim, preemptions = simulated(fleet, requests, directory / f"sim-{rate:g}")
            real = asyncio.run(live(ports, requests, instances))
            ok = compare(rate, len(requests), preemptions, sim, real) and ok
        print(f"\nload average after: {os.getloadavg()}")
        child.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
