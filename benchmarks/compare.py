"""Two llmsim installs side by side: does a change slow the plain chat path?

Starts a baseline and a candidate ``llmsim serve`` (each from its own ``llmsim`` executable,
for example two virtual environments holding two commits) and measures both in one
interleaved run, alternating which goes first each round, so drift in the machine's speed
hits both alike:

    python benchmarks/compare.py --baseline /tmp/old/.venv/bin/llmsim \\
        --candidate .venv/bin/llmsim --rounds 5

Two rates per round and server: non-streaming chat requests/s and streamed tokens/s, both
with zero latency settings (the servers' own cost is all that is measured). It prints the
median of each and the candidate's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from bench import request_body
from loads import LoadResult, run_loadgen
from procs import Child, Server, cleanup_on_exit, free_port, server_env, wait_healthy


@dataclass
class LoadRun:
    """What :func:`run_loadgen` reads of a benchmark run."""

    workdir: Path
    client: str = "raw"


def start(workdir: Path, name: str, executable: str, extra: list[str]) -> Server:
    port = free_port()
    argv = [executable, "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    child = Child(name, [*argv, *extra], workdir / f"{name}.log", env=server_env(False))
    return Server(child, port, wait_healthy(child, f"http://127.0.0.1:{port}"))


def plain_load(run: LoadRun, label: str, url: str, args: argparse.Namespace) -> LoadResult:
    """Non-streaming chats at ``url`` for ``args.duration`` seconds."""
    return run_loadgen(
        cast(Any, run),
        f"{label}-json",
        url,
        request_body(args.tokens, stream=False),
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=0.5,
    )


def streamed_load(run: LoadRun, label: str, url: str, args: argparse.Namespace) -> LoadResult:
    """Streamed chats at ``url`` for ``args.duration`` seconds."""
    return run_loadgen(
        cast(Any, run),
        f"{label}-sse",
        url,
        request_body(args.tokens, stream=True),
        concurrency=args.concurrency,
        duration=args.duration,
        warmup=0.5,
        stream=True,
    )


def check_errors(label: str, *loads: LoadResult) -> None:
    if any(load.error_count for load in loads):
        raise SystemExit(f"{label}: errors during the load")


def measure(run: LoadRun, server: Server, label: str, args: argparse.Namespace) -> dict[str, float]:
    plain = plain_load(run, label, server.chat_url, args)
    streamed = streamed_load(run, label, server.chat_url, args)
    check_errors(label, plain, streamed)
    return {"req_s": plain.requests_per_second, "tok_s": streamed.chunks_per_second}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the baseline's llmsim executable")
    parser.add_argument("--candidate", required=True, help="the candidate's llmsim executable")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64, help="output tokens per request")
    parser.add_argument("--server-arg", action="append", default=[], help="extra serve flag")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {"baseline": [], "candidate": []}
    with cleanup_on_exit(), tempfile.TemporaryDirectory(prefix="llmsim-compare-") as scratch:
        run = LoadRun(Path(scratch))
        servers = {
            "baseline": start(run.workdir, "baseline", args.baseline, args.server_arg),
            "candidate": start(run.workdir, "candidate", args.candidate, args.server_arg),
        }
        with contextlib.ExitStack() as stack:
            for server in servers.values():
                stack.callback(server.child.stop)
            for round_index in range(args.rounds):
                order = ["baseline", "candidate"]
                if round_index % 2:
                    order.reverse()
                for name in order:
                    figures = measure(run, servers[name], f"{name}-{round_index}", args)
                    results[name].append(figures)
                    print(f"round {round_index + 1} {name:9} {json.dumps(figures)}", flush=True)
    summary = {
        name: {key: statistics.median(r[key] for r in rounds) for key in ("req_s", "tok_s")}
        for name, rounds in results.items()
    }
    for key, what in (("req_s", "non-streaming req/s"), ("tok_s", "streamed tokens/s")):
        base, cand = summary["baseline"][key], summary["candidate"][key]
        print(f"{what:22} baseline {base:10.1f}  candidate {cand:10.1f}  ratio {cand / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
