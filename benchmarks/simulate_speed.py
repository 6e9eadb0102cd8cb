"""How fast ``llmsim simulate`` runs: simulated seconds per wall-clock second.

    python benchmarks/simulate_speed.py                 # 1 and 8 replicas at 10 and 100 req/s
    python benchmarks/simulate_speed.py --seconds 30 --replicas 1 8 64 --rates 10 100 1000

Each point sends 1 000-token prompts with 200-token answers at the rate for ``--seconds``
of virtual time (Poisson arrivals, least-requests routing) to ``--profile`` instances and
stops sending at ``--budget`` wall seconds per point (the run is bounded, the ratio still
holds). ``speed`` is simulated seconds per wall second; ``CPU speed`` per second of this
process's CPU time, steadier on a machine busy with other work.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Iterator

from llmsim.settings.sources import load_settings
from llmsim.simulation.cluster import Cluster
from llmsim.simulation.recorder import Recorder
from llmsim.simulation.synthetic import Lengths, Synthetic
from llmsim.simulation.workload import Request


def _until(requests: Iterator[Request], deadline: float) -> Iterator[Request]:
    """Stop sending once the wall-clock budget is spent (what was sent still finishes)."""
    for request in requests:
        if time.perf_counter() > deadline:
            return
        yield request


def point(profile: str, replicas: int, rate: float, seconds: float, budget: float) -> str:
    settings = load_settings({"profile": profile, "latency_model": "step"}).settings
    workload = Synthetic(
        rate, Lengths("fixed", 1000), Lengths("fixed", 200), duration=seconds, burstiness=1.0
    )
    cluster = Cluster([settings] * replicas, "least-requests")
    recorder = Recorder(replicas)
    gc.collect()  # what the points before left (cycles) is not this point's to collect
    started, cpu = time.perf_counter(), time.process_time()
    deadline = started + budget
    cluster.run(_until(workload.requests(0), deadline), recorder)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    simulated = max(instance.run.now for instance in cluster.instances)
    done = sum(stats.requests for stats in recorder.stats)
    ratio = simulated / wall if wall > 0 else float("inf")
    cpu_ratio = simulated / cpu if cpu > 0 else float("inf")
    return (
        f"| {replicas} | {rate:g} | {simulated:.1f} | {wall:.2f} | {ratio:.1f}x "
        f"| {cpu_ratio:.1f}x | {done} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="llama-3.1-8b-a100")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 100])
    parser.add_argument("--seconds", type=float, default=20.0, help="virtual seconds sent")
    parser.add_argument("--budget", type=float, default=60.0, help="wall seconds per point")
    args = parser.parse_args()
    print("| replicas | req/s | simulated s | wall s | speed | CPU speed | requests done |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for replicas in args.replicas:
        for rate in args.rates:
            print(point(args.profile, replicas, rate, args.seconds, args.budget), flush=True)


if __name__ == "__main__":
    main()
