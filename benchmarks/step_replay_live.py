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
import os
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from procs import cleanup_on_exit, server_env, start_llmsim

from llmsim.settings.sources import load_settings
from llmsim.simulation import RequestRecord, summarize
from llmsim.simulation.benchmark_run import PublishedRun, load_runs, replay
from llmsim.simulation.workload import Request, poisson_send_times, requests_at

VOCABULARY = 30_000


def prompt_ids(name: str, length: int) -> list[int]:
    rng = random.Random(name)
    return [rng.randrange(100, VOCABULARY) for _ in range(length)]


async def send(
    session: aiohttp.ClientSession, url: str, model: str, request: Request
) -> RequestRecord:
    body = {
        "prompt": prompt_ids(request.prompt, request.prompt_tokens),
        "max_tokens": request.output_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    sent = time.perf_counter()
    first = last = 0.0
    async with session.post(url, json={"model": model, **body}) as response:
        response.raise_for_status()
        async for line in response.content:
            if line.startswith(b"data: ") and not line.startswith(b"data: [DONE]"):
                last = time.perf_counter()
                first = first or last
    return RequestRecord(request.prompt_tokens, request.output_tokens, sent, first, last)


async def run_live(
    url: str, model: str, requests: list[Request], warm_up: bool
) -> list[RequestRecord]:
    connector = aiohttp.TCPConnector(limit=0)  # a connection per request, as vLLM's client
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        if warm_up and requests:
            await send(session, url, model, replace(requests[0], output_tokens=1, send_at=0.0))
        start = time.perf_counter()

        async def at(request: Request) -> RequestRecord:
            await asyncio.sleep(max(0.0, start + request.send_at - time.perf_counter()))
            return await send(session, url, model, request)

        return list(await asyncio.gather(*(at(request) for request in requests)))


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
    args = parser.parse_args(argv)
    runs = [shortened(run, args.limit) for path in args.runs for run in load_runs(path)]
    if args.only is not None:
        runs = [run for k, run in enumerate(runs) if k in args.only]
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
            live = summarize(asyncio.run(run_live(url, model, requests, warm_up=True))).as_ms()
            rate = "inf" if run.request_rate == float("inf") else f"{run.request_rate:g}/s"
            for key, value in comparison.model.as_ms().items():
                diff = live[key] / value - 1.0 if value else 0.0
                print(f"{rate:>6}  {key:<15}{value:>8.1f}ms{live[key]:>8.1f}ms{diff * 100:>+7.1f}%")
        print(f"load average after: {os.getloadavg()}")
        server.child.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
