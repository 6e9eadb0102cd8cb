"""Does a live ``llmsim serve --latency-model step`` agree with the virtual-time replay?

Replays published vLLM serving runs (``python -m llmsim.simulation replay`` files) against a
real server started with ``--profile NAME --latency-model step``: the same prompt lengths
(as token-id prompts, so prefix caching sees the same prompts across runs), the same output
lengths (``ignore_eos``), the same Poisson send times; then prints the live medians beside the
virtual-time replay's, with the machine's load average (this process and the server share it).

    PYTHONPATH=$PWD python benchmarks/step_replay_live.py \\
        tests/data/llama33_70b_8xa100_sweep.json --profile llama-3.3-70b-8xa100 --limit 60
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
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import cleanup_on_exit, server_env, start_llmsim
from rawclient import RawConnection, build_request, open_connection

from llmsim.settings.sources import load_settings
from llmsim.simulation import RequestRecord, summarize
from llmsim.simulation.benchmark_run import PublishedRun, load_runs, replay
from llmsim.simulation.workload import Request, poisson_send_times, requests_at

VOCABULARY = 30_000


def prompt_ids(name: str, length: int) -> list[int]:
    rng = random.Random(name)
    return [rng.randrange(100, VOCABULARY) for _ in range(length)]


async def send(
    url: str, model: str, request: Request, connection: RawConnection | None = None
) -> RequestRecord:
    """One streamed completion on its own connection (as vLLM's client opens one per
    request), timed from before the connection is opened (or from the request's write, on
    a ``connection`` opened beforehand); each read is stamped in the protocol callback, so
    the client's own scheduling adds nothing to the figures."""
    body = {
        "model": model,
        "prompt": prompt_ids(request.prompt, request.prompt_tokens),
        "max_tokens": request.output_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    host, port, message = build_request(url, json.dumps(body).encode())
    stamps: list[float] = []

    def on_body(piece: bytes, at: float) -> None:
        if b"data: {" in piece:
            stamps.append(at)

    sent = time.perf_counter()
    if connection is None:
        connection = await open_connection(host, port, time.perf_counter)
    try:
        status, _ = await connection.send(message, on_body, timeout=600.0)
    finally:
        connection.close()
    if status != 200 or not stamps:
        raise RuntimeError(f"request {request.prompt}: status {status}, {len(stamps)} chunks")
    return RequestRecord(request.prompt_tokens, request.output_tokens, sent, stamps[0], stamps[-1])


async def run_live(
    url: str, model: str, requests: list[Request], warm_up: bool, preconnect: bool = False
) -> list[RequestRecord]:
    if warm_up and requests:
        await send(url, model, replace(requests[0], output_tokens=1, send_at=0.0))
    host, port, _ = build_request(url, b"")
    start = time.perf_counter() + (1.0 if preconnect else 0.0)

    async def at(request: Request) -> RequestRecord:
        connection = None
        if preconnect:  # opened a second before the first send, at most 100 at a time
            async with opening:
                connection = await open_connection(host, port, time.perf_counter)
        await asyncio.sleep(max(0.0, start + request.send_at - time.perf_counter()))
        return await send(url, model, request, connection)

    opening = asyncio.Semaphore(100)

    return list(await asyncio.gather(*(at(request) for request in requests)))


PRIMING = "priming"


def priming(run: PublishedRun) -> PublishedRun:
    """``run``'s prompts, one token each, 50 a second: they fill the prefix cache."""
    ones = (1,) * len(run.input_lens)
    return PublishedRun(PRIMING, 50.0, 1.0, run.input_lens, ones, {})


def shortened(run: PublishedRun, limit: int | None) -> PublishedRun:
    if limit is None:
        return run
    return replace(run, input_lens=run.input_lens[:limit], output_lens=run.output_lens[:limit])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--profile", required=True)
    parser.add_argument("--limit", type=int, help="only the first N requests of each run")
    parser.add_argument("--only", type=int, nargs="*", help="indices of the runs to replay")
    parser.add_argument(
        "--preconnect",
        action="store_true",
        help="open every request's connection before the run and time it from its write "
        "(leaves out the connection set-up this machine adds to each request)",
    )
    parser.add_argument(
        "--cached",
        action="store_true",
        help="first send every prompt once for one token (untimed), as the runs before a "
        "published run did, so the runs find their prompts in the prefix cache",
    )
    args = parser.parse_args(argv)
    runs = [shortened(run, args.limit) for path in args.runs for run in load_runs(path)]
    if args.only is not None:
        runs = [run for k, run in enumerate(runs) if k in args.only]
    if args.cached and runs:
        runs = [priming(runs[0]), *runs]
    settings = load_settings({"profile": args.profile, "latency_model": "step"}).settings
    model = settings.served_names[0]
    virtual = replay(settings, runs)
    with tempfile.TemporaryDirectory() as workdir, cleanup_on_exit():
        server = start_llmsim(
            Path(workdir), "llmsim", "--profile", args.profile, "--latency-model", "step",
            "--no-dashboard", env=server_env(plain=False),
        )  # fmt: skip
        url = server.base_url + "/v1/completions"
        print(f"load average before: {os.getloadavg()}")
        print(f"{'rate':>6}  {'figure':<15}{'virtual':>10}{'live':>10}{'diff':>8}")
        for run, comparison in zip(runs, virtual, strict=True):
            times = poisson_send_times(len(run.input_lens), run.request_rate, seed=0)
            requests = requests_at(run.input_lens, run.output_lens, times)
            records = asyncio.run(run_live(url, model, requests, True, args.preconnect))
            live = summarize(records).as_ms()
            if run.source == PRIMING:
                continue
            rate = "inf" if run.request_rate == float("inf") else f"{run.request_rate:g}/s"
            for key, value in comparison.model.as_ms().items():
                diff = live[key] / value - 1.0 if value else 0.0
                print(f"{rate:>6}  {key:<15}{value:>8.1f}ms{live[key]:>8.1f}ms{diff * 100:>+7.1f}%")
        print(f"load average after: {os.getloadavg()}")
        server.child.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
