"""How long ``--dataset`` takes to load and how much memory it holds.

    python benchmarks/dataset_startup.py [--conversations 100000] [--format json|jsonl]

Generates a ShareGPT-style file (1 to 3 exchanges per conversation, user turns of about
25 words and answers of about 80), then measures in fresh processes:

* ``load``: reading and indexing the file alone (``load_dataset``), wall time and the
  process's CPU time (which a busy shared machine disturbs much less), with its peak
  resident memory;
* ``serve``: ``llmsim serve --dataset FILE`` from launch until ``/health`` answers, against
  the same without a dataset.

The generated file is deleted afterwards unless ``--keep`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

VOCABULARY = (
    "the model answers each request with tokens that the scheduler releases on time while "
    "routers gateways and autoscalers watch queues latency cache usage and throughput under "
    "load a benchmark measures what a user would see first token gaps between tokens and the "
    "total time of every answer in a realistic conversation about code data plans and travel"
)
WORDS = VOCABULARY.split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def generate(path: Path, conversations: int, form: str, seed: int = 1) -> None:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        if form == "json":
            handle.write("[\n")
        for number in range(conversations):
            turns = []
            for _ in range(rng.randint(1, 3)):
                turns.append({"from": "human", "value": sentence(rng, rng.randint(5, 45))})
                turns.append({"from": "gpt", "value": sentence(rng, rng.randint(20, 140))})
            record = json.dumps({"id": f"c{number}", "conversations": turns})
            if form == "json":
                handle.write(record + (",\n" if number < conversations - 1 else "\n"))
            else:
                handle.write(record + "\n")
        if form == "json":
            handle.write("]\n")


LOAD = """
import resource, sys, time
from pathlib import Path
started = time.perf_counter()
from llmsim.answers.dataset import load_dataset
dataset = load_dataset(Path(sys.argv[1]))
elapsed = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
print(f"{elapsed:.3f} {usage.ru_maxrss / 1024:.0f} {dataset.conversations} {len(dataset)} "
      f"{usage.ru_utime + usage.ru_stime:.3f}")
"""


def measure_load(path: Path) -> tuple[float, float, int, int, float]:
    """Wall seconds, peak RSS (MB), conversations, answers and CPU seconds of the process."""
    out = subprocess.run(
        [sys.executable, "-c", LOAD, str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), float(out[1]), int(out[2]), int(out[3]), float(out[4])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def time_to_healthy(extra: list[str]) -> float:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMSIM_")}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "llmsim", "serve", "--port", str(port), "--no-access-log", *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = started + 60
        while time.perf_counter() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("llmsim did not become healthy within 60 s")
    finally:
        process.terminate()
        process.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--format", choices=("json", "jsonl"), default="json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="llmsim-dataset-"))
    path = directory / f"sharegpt.{args.format}"
    generate(path, args.conversations, args.format)
    size = path.stat().st_size / 1e6
    print(f"{path}: {args.conversations} conversations, {size:.0f} MB")
    for round_number in range(1, args.rounds + 1):
        seconds, peak, conversations, answers, cpu = measure_load(path)
        baseline = time_to_healthy([])
        with_dataset = time_to_healthy(["--dataset", str(path)])
        print(
            f"round {round_number}: load {seconds:.2f} s ({cpu:.2f} s CPU, with the import), "
            f"peak RSS {peak:.0f} MB "
            f"({conversations} conversations, {answers} answers); serve to healthy "
            f"{with_dataset:.2f} s (without dataset {baseline:.2f} s)"
        )
    if not args.keep:
        path.unlink()
        directory.rmdir()


if __name__ == "__main__":
    main()
