"""One same-run table: the bare aiohttp ceiling, a FastAPI peer and one or more llmsim installs.

Every server answers the same chat request (64 tokens, zero latency) while the others idle,
in rotating order round after round, so drift in the machine's speed hits all alike:

    python benchmarks/peers.py --llmsim before=/tmp/old/.venv/bin/llmsim \\
        --llmsim after=.venv/bin/llmsim --rounds 5

For each server it prints the median non-streaming requests/s, streamed responses/s and
tokens/s, the server's CPU time per non-streaming request (from ``/proc``) and each rate as
a share of the ceiling's. The ceiling is ``ceiling_app.py``; the FastAPI peer
(``peer_fastapi.py``) needs the ``bench`` extra and is left out without it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from compare import LoadRun, check_errors, plain_load, start, streamed_load
from procs import (
    Child,
    Server,
    cleanup_on_exit,
    free_port,
    proc_cpu_seconds,
    server_env,
    start_ceiling,
    wait_healthy,
)
from scenarios import save_payload

PEER_APP = Path(__file__).with_name("peer_fastapi.py")


@dataclass
class Target:
    name: str
    server: Server
    stream_url: str


def start_peer(workdir: Path, payload: Path) -> Server:
    port = free_port()
    argv = [sys.executable, str(PEER_APP), "--port", str(port), "--payload", str(payload)]
    child = Child("fastapi", argv, workdir / "fastapi.log", env=server_env(False))
    return Server(child, port, wait_healthy(child, f"http://127.0.0.1:{port}"))


def measure(run: LoadRun, target: Target, label: str, args: argparse.Namespace) -> dict[str, float]:
    pid = target.server.child.pid
    cpu_before = proc_cpu_seconds(pid) or 0.0
    plain = plain_load(run, label, target.server.chat_url, args)
    cpu = (proc_cpu_seconds(pid) or 0.0) - cpu_before
    streamed = streamed_load(run, label, target.stream_url, args)
    check_errors(label, plain, streamed)
    return {
        "req_s": plain.requests_per_second,
        "cpu_us": cpu / max(plain.ok, 1) * 1e6,
        "streams_s": streamed.chunks_per_second / args.tokens,
        "tok_s": streamed.chunks_per_second,
    }


def start_all(workdir: Path, installs: list[tuple[str, str]], tokens: int) -> list[Target]:
    targets = []
    for name, executable in installs:
        server = start(workdir, name, executable, [])
        targets.append(Target(name, server, server.chat_url))
    payload = save_payload(workdir, targets[0].server, tokens)
    ceiling = start_ceiling(workdir, payload, env=server_env(False))
    targets.insert(0, Target("ceiling", ceiling, ceiling.base_url + "/stream"))
    if importlib.util.find_spec("fastapi") and importlib.util.find_spec("uvicorn"):
        peer = start_peer(workdir, payload)
        targets.insert(1, Target("fastapi", peer, peer.chat_url))
    else:
        print("FastAPI peer left out: install the bench extra for it", flush=True)
    return targets


def table(results: dict[str, list[dict[str, float]]]) -> list[str]:
    medians = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for name, rounds in results.items()
    }
    top = medians["ceiling"]
    lines = [
        "| server | non-streaming req/s | share | CPU µs/request | streams/s (64 tokens) "
        "| share | streamed tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in medians.items():
        lines.append(
            f"| {name} | {m['req_s']:,.0f} | {m['req_s'] / top['req_s']:.0%} | {m['cpu_us']:.0f} "
            f"| {m['streams_s']:,.0f} | {m['streams_s'] / top['streams_s']:.0%} "
            f"| {m['tok_s']:,.0f} |"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--llmsim", action="append", required=True, metavar="NAME=PATH", help="an llmsim executable"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=64, help="output tokens per request")
    args = parser.parse_args()
    installs = [tuple(item.split("=", 1)) for item in args.llmsim]
    if any(len(item) != 2 for item in installs):
        parser.error("--llmsim takes NAME=PATH")
    with cleanup_on_exit(), tempfile.TemporaryDirectory(prefix="llmsim-peers-") as scratch:
        run = LoadRun(Path(scratch))
        targets = start_all(run.workdir, cast(list[tuple[str, str]], installs), args.tokens)
        results: dict[str, list[dict[str, float]]] = {target.name: [] for target in targets}
        with contextlib.ExitStack() as stack:
            for target in targets:
                stack.callback(target.server.child.stop)
            for round_index in range(args.rounds):
                shift = round_index % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    figures = measure(run, target, f"{target.name}-{round_index}", args)
                    results[target.name].append(figures)
                    rounded = {key: round(value, 1) for key, value in figures.items()}
                    print(f"round {round_index + 1} {target.name:10} {rounded}", flush=True)
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
