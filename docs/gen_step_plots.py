"""Draw the step-model figures of docs/scheduling.md by running the step engine in virtual time.

    python docs/gen_step_plots.py        # writes docs/images/step-*.png

Nothing here is drawn by hand: every point is what ``llmsim.engine.step`` computes, step by
step, with the parameters printed in each figure's title. Needs matplotlib (the ``docs`` extra).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from llmsim.engine.step import StepCosts, StepEngine, VirtualRun, virtual_sequence

OUT = Path(__file__).parent / "images"
COSTS = StepCosts(
    inter_token_latency=0.015,
    decode_time_per_sequence=0.00015,
    prefill_time_per_token=0.00005,
    frontend_latency=0.002,
    context_time_per_token=0.0000005,
)
"""An 8B model on one GPU, roughly: 15 ms per step alone, 20k prompt tokens/s."""


def itl_for_batch(batch: int, prompt: int = 512, output: int = 128) -> float:
    """Mean gap between tokens when ``batch`` streams decode together."""
    engine = StepEngine(num_blocks=200_000, max_num_seqs=1024, costs=COSTS)
    run = VirtualRun(engine)
    for index in range(batch):
        run.arrive(virtual_sequence(f"s{index}", prompt, output), at=0.0)
    run.until_idle()
    decode_steps = [s.duration for s in run.samples if s.decode == batch and s.tokens == batch]
    return statistics.mean(decode_steps)


def ttft_for_prompt(prompt: int, budget: int) -> float:
    engine = StepEngine(num_blocks=4096, max_num_batched_tokens=budget, costs=COSTS)
    run = VirtualRun(engine)
    sequence = virtual_sequence("p", prompt, 1)
    run.arrive(sequence, at=0.0)
    run.until_idle()
    assert sequence.first_token_at is not None
    return sequence.first_token_at


def plot_itl(path: Path) -> None:
    batches = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
    measured = [itl_for_batch(b) * 1000 for b in batches]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(batches, measured, "o-", label="step engine (virtual time)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("decoding sequences in the batch")
    ax.set_ylabel("inter-token latency (ms)")
    ax.set_title("ITL grows with the batch: 15 ms + 0.15 ms/seq + 0.5 us/context token")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ttft(path: Path) -> None:
    prompts = [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    fig, ax = plt.subplots(figsize=(7, 4))
    for budget in (8192, 2048):
        values = [ttft_for_prompt(p, budget) * 1000 for p in prompts]
        ax.plot(prompts, values, "o-", label=f"--max-num-batched-tokens {budget}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompt tokens")
    ax.set_ylabel("time to first token on an idle server (ms)")
    ax.set_title("TTFT grows with the prompt; each extra chunk adds a step")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_burst(path: Path) -> None:
    """60 requests in one second into a cache that holds about a dozen of them."""
    engine = StepEngine(num_blocks=512, max_num_seqs=64, costs=COSTS)
    run = VirtualRun(engine)
    for index in range(60):
        run.arrive(virtual_sequence(f"b{index}", 300, 400), at=index / 60)
    run.until_idle()
    times = [s.time for s in run.samples]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    top.plot(times, [s.running for s in run.samples], label="running")
    top.plot(times, [s.waiting for s in run.samples], label="waiting")
    top.plot(times, [s.preemptions for s in run.samples], label="preemptions (total)")
    top.set_ylabel("sequences")
    top.legend()
    top.grid(True, alpha=0.3)
    top.set_title("A burst that overflows the KV cache (512 blocks of 16 tokens)")
    bottom.plot(times, [s.usage for s in run.samples], color="tab:red")
    bottom.set_ylabel("KV-cache usage")
    bottom.set_xlabel("time (s)")
    bottom.set_ylim(0, 1.05)
    bottom.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    plot_itl(OUT / "step-itl-vs-batch.png")
    plot_ttft(OUT / "step-ttft-vs-prompt.png")
    plot_burst(OUT / "step-burst-timeline.png")
    print(f"wrote {OUT}/step-*.png")


if __name__ == "__main__":
    main()
