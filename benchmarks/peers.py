"""One same-run table: the bare aiohttp ceiling, a FastAPI peer and one or more llmsim installs.

Every server answers the same chat request (64 tokens, zero latency) while the others idle,
in rotating order round after round, so drift in the machine's speed hits all alike:

    python benchmarks/peers.py --llmsim before=/tmp/old/.venv/bin/llmsim \\
        --llmsim after=.venv/bin/llmsim --rounds 5

For each server it prints the median non-streaming requests/s, streamed responses/s and
tokens/s, the server's CPU time per non-streaming request (from ``/proc``) and each rate as
a share of the ceiling's. The ceiling is ``ceiling_app.py``; the FastAPI peer
(``peer_fastapi.py``) needs the ``bench`` extra and is left out without it.

``--wrk`` measures the non-streaming rate as the published comparisons do: every server
pinned to the first core, ``wrk -t1 -c64`` (when installed) pinned to the second, and each
round's share taken against the ceiling's rate of the same round, so that the machine's
drift between rounds cancels; it prints the median of those shares too.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from bench import request_body
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


SERVER_CORE, CLIENT_CORE = 0, 1


def wrk_load(url: str, args: argparse.Namespace, script: Path) -> tuple[float, int]:
    """Requests/s and requests answered by ``wrk`` (pinned to the client's core)."""
    argv = ["wrk", "-t1", f"-c{args.concurrency}", f"-d{max(1, round(args.duration))}s"]
    done = subprocess.run(
        [*argv, "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=args.duration + 60,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {CLIENT_CORE}),
    )
    if "Non-2xx" in done.stdout or "Socket errors" in done.stdout:
        raise RuntimeError(f"wrk saw errors at {url}:\n{done.stdout}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    count = re.search(r"(\d+) requests in", done.stdout)
    if rate is None or count is None:
        raise RuntimeError(f"no rate in wrk's output:\n{done.stdout}")
    return float(rate.group(1)), int(count.group(1))


def wrk_script(workdir: Path, tokens: int) -> Path:
    script = workdir / "chat.lua"
    body = request_body(tokens, stream=False).replace("\\", "\\\\").replace('"', '\\"')
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.body = "{body}"\n'
    )
    return script


def measure(run: LoadRun, target: Target, label: str, args: argparse.Namespace) -> dict[str, float]:
    pid = target.server.child.pid
    cpu_before = proc_cpu_seconds(pid) or 0.0
    if args.wrk:
        rate, answered = wrk_load(target.server.chat_url, args, args.wrk_script)
    else:
        plain = plain_load(run, label, target.server.chat_url, args)
        rate, answered = plain.requests_per_second, plain.ok
    cpu = (proc_cpu_seconds(pid) or 0.0) - cpu_before
    streamed = streamed_load(run, label, target.stream_url, args)
    check_errors(label, *([] if args.wrk else [plain]), streamed)
    return {
        "req_s": rate,
        "cpu_us": cpu / max(answered, 1) * 1e6,
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
    parser.add_argument(
        "--wrk", action="store_true", help="non-streaming load from wrk, servers and wrk pinned"
    )
    args = parser.parse_args()
    if args.wrk and (shutil.which("wrk") is None or len(os.sched_getaffinity(0)) < 2):
        parser.error("--wrk needs wrk on PATH and two cores")
    installs = [tuple(item.split("=", 1)) for item in args.llmsim]
    if any(len(item) != 2 for item in installs):
        parser.error("--llmsim takes NAME=PATH")
    with cleanup_on_exit(), tempfile.TemporaryDirectory(prefix="llmsim-peers-") as scratch:
        run = LoadRun(Path(scratch))
        targets = start_all(run.workdir, cast(list[tuple[str, str]], installs), args.tokens)
        if args.wrk:
            args.wrk_script = wrk_script(run.workdir, args.tokens)
            for target in targets:
                os.sched_setaffinity(target.server.child.pid, {SERVER_CORE})
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
    ceiling = results["ceiling"]
    for name, rounds in results.items():
        shares = [mine["req_s"] / top["req_s"] for mine, top in zip(rounds, ceiling, strict=True)]
        print(f"{name}: median of the rounds' non-streaming shares {statistics.median(shares):.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
