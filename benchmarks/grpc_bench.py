"""llmsim's gRPC door against a bare ``grpc.aio`` server that does nothing: the ceiling.

Both serve vLLM's ``VllmEngine.Generate`` on loopback in child processes of this script; the
ceiling answers every call with the messages llmsim sent for the same request, captured
first, so both put the same bytes on the wire and only llmsim does any work. One client
process (this one, ``grpc.aio``) keeps ``--concurrency`` calls in flight for ``--duration``
seconds per measurement:

- unary: ``stream: false``, 16 tokens each: requests/s;
- streamed: ``stream: true``, 256 tokens each: token ids received per second.

Each is measured ``--rounds`` times, llmsim and the ceiling back to back, and the best round
of each is reported (other processes on the machine only ever lower a rate).

    python benchmarks/grpc_bench.py                          # about a minute
    python benchmarks/grpc_bench.py --duration 2 --rounds 1  # about 15 s

llmsim runs with zero latency and no access log, so its numbers are its own costs.
Needs ``pip install -e '.[grpc]'``. Children are stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from llmsim.api.grpc.generated import vllm_engine_pb2 as pb
from llmsim.api.grpc.generated import vllm_engine_pb2_grpc as pb_grpc
from llmsim.server.loops import loop_factory

ROOT = Path(__file__).resolve().parent.parent
UNARY_TOKENS = 16
STREAM_TOKENS = 256
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(tokens: int, stream: bool) -> pb.GenerateRequest:
    params = pb.SamplingParams(max_tokens=tokens, ignore_eos=True)
    ids = pb.TokenizedInput(input_ids=list(range(1000, 1032)))
    return pb.GenerateRequest(tokenized=ids, sampling_params=params, stream=stream)


# -- the ceiling ---------------------------------------------------------------------


class Ceiling(pb_grpc.VllmEngineServicer):  # type: ignore[misc]
    """Answers every Generate with recorded messages: nothing decided, nothing timed."""

    def __init__(self, unary: list[bytes], streamed: list[bytes]) -> None:
        self.unary = [pb.GenerateResponse.FromString(data) for data in unary]
        self.streamed = [pb.GenerateResponse.FromString(data) for data in streamed]

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> Any:
        for message in self.streamed if request.stream else self.unary:
            yield message

    async def HealthCheck(self, request: Any, context: Any) -> pb.HealthCheckResponse:
        return pb.HealthCheckResponse(healthy=True)


def run_ceiling(port: int, payload: Path) -> None:
    """On the event loop llmsim uses (uvloop when installed), as ceiling_app.py does."""
    data = json.loads(payload.read_text())
    _, factory = loop_factory()
    loop = factory()
    try:
        loop.run_until_complete(serve_ceiling(port, data))
    finally:
        loop.close()


async def serve_ceiling(port: int, data: dict[str, list[str]]) -> None:
    unary = [bytes.fromhex(item) for item in data["unary"]]
    streamed = [bytes.fromhex(item) for item in data["streamed"]]
    server = grpc.aio.server()
    pb_grpc.add_VllmEngineServicer_to_server(Ceiling(unary, streamed), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0)


# -- children ------------------------------------------------------------------------


def start(command: list[str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{command[:4]} exited with {process.returncode}")
        try:
            asyncio.run(_health(port))
            return process
        except grpc.RpcError:
            time.sleep(0.1)
    stop(process)
    raise SystemExit(f"{command[:4]} did not answer on port {port}")


async def _health(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await pb_grpc.VllmEngineStub(channel).HealthCheck(
            pb.HealthCheckRequest(), timeout=1
        )
        if not reply.healthy:
            raise grpc.RpcError("not ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- the client ----------------------------------------------------------------------


async def capture(port: int) -> dict[str, list[str]]:
    """llmsim's answers to both requests, serialized, for the ceiling to replay."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.VllmEngineStub(channel)
        unary = [m async for m in stub.Generate(request(UNARY_TOKENS, False))]
        streamed = [m async for m in stub.Generate(request(STREAM_TOKENS, True))]
    return {
        "unary": [m.SerializeToString().hex() for m in unary],
        "streamed": [m.SerializeToString().hex() for m in streamed],
    }


async def measure(port: int, stream: bool, concurrency: int, duration: float) -> float:
    """Requests/s (unary) or token ids/s (streamed) over ``duration`` after a 1 s warm-up."""
    tokens = STREAM_TOKENS if stream else UNARY_TOKENS
    message = request(tokens, stream)
    counted = 0
    counting = False

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.VllmEngineStub(channel)

        async def one() -> int:
            received = 0
            async for reply in stub.Generate(message):
                if stream and reply.WhichOneof("response") == "chunk":
                    received += len(reply.chunk.token_ids)
            return received if stream else 1

        async def worker(until: float) -> None:
            nonlocal counted
            while time.monotonic() < until:
                result = await one()
                if counting:
                    counted += result

        warm_end = time.monotonic() + 1.0
        end = warm_end + duration
        workers = [asyncio.ensure_future(worker(end)) for _ in range(concurrency)]
        await asyncio.sleep(warm_end - time.monotonic())
        counting = True
        started = time.monotonic()
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - started
    return counted / elapsed


def run(args: argparse.Namespace) -> dict[str, float]:
    llmsim_port, grpc_port, ceiling_port = free_port(), free_port(), free_port()
    llmsim = start(
        [
            sys.executable, "-m", "llmsim", "serve", "--port", str(llmsim_port),
            "--grpc-port", str(grpc_port), "--no-access-log", "--time-to-first-token", "0",
            "--inter-token-latency", "0", "--max-running-requests", "1024",
        ],
        grpc_port,
    )  # fmt: skip
    ceiling = None
    try:
        payload = Path(tempfile.mkdtemp()) / "payload.json"
        payload.write_text(json.dumps(asyncio.run(capture(grpc_port))))
        command = [sys.executable, __file__, "--serve-ceiling", str(ceiling_port), str(payload)]
        ceiling = start(command, ceiling_port)
        rounds: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for stream in (False, True):  # each pair back to back: both see the same machine
                for name, port in (("llmsim", grpc_port), ("ceiling", ceiling_port)):
                    key = f"{name}_{'stream_tokens_per_s' if stream else 'unary_requests_per_s'}"
                    rate = asyncio.run(measure(port, stream, args.concurrency, args.duration))
                    rounds.setdefault(key, []).append(rate)
        return {key: max(rates) for key, rates in rounds.items()}
    finally:
        stop(llmsim)
        if ceiling is not None:
            stop(ceiling)


def report(results: dict[str, float]) -> str:
    rows = ["| measurement | llmsim | ceiling | llmsim / ceiling |", "|---|---|---|---|"]
    for label, key in (
        ("unary Generate, requests/s", "unary_requests_per_s"),
        ("streamed Generate, token ids/s", "stream_tokens_per_s"),
    ):
        ours, ceiling = results[f"llmsim_{key}"], results[f"ceiling_{key}"]
        rows.append(f"| {label} | {ours:,.0f} | {ceiling:,.0f} | {ours / ceiling:.0%} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="calls kept in flight")
    parser.add_argument(
        "--rounds", type=int, default=2, help="measurements of each; the best is reported"
    )
    parser.add_argument(
        "--serve-ceiling", nargs=2, metavar=("PORT", "PAYLOAD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.serve_ceiling:
        run_ceiling(int(args.serve_ceiling[0]), Path(args.serve_ceiling[1]))
        return
    results = run(args)
    print(json.dumps(results, indent=2))
    print(report(results))


if __name__ == "__main__":
    main()
