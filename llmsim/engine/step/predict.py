"""What a configuration predicts under the step model, computed in virtual time.

``llmsim profiles show NAME`` prints these figures: the inter-token latency at several batch
sizes (steady decoding), the time to first token of a lone prompt on an idle server, and the
peak decode throughput the KV cache and ``max_num_seqs`` allow.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmsim.engine.step.costs import StepCosts
from llmsim.engine.step.step_engine import StepEngine, num_kv_blocks
from llmsim.engine.step.virtual import VirtualRun, virtual_sequence
from llmsim.settings.model import Settings

BATCHES = (1, 16, 64, 256)
PROMPTS = (128, 1024, 8192)
CONTEXT = 1024 + 128
"""Context held per decoding sequence in the ITL figures: a 1k prompt, 128 tokens in."""


@dataclass(frozen=True, slots=True)
class Prediction:
    itl: dict[int, float]
    """Batch size -> seconds between tokens while that many sequences decode."""
    ttft: dict[int, float]
    """Prompt tokens -> seconds to the first token on an idle server."""
    peak_decode_tokens_per_second: float
    peak_batch: int
    """The batch size that reaches the peak (bounded by max_num_seqs and the KV cache)."""


def decode_itl(costs: StepCosts, batch: int, context: int = CONTEXT) -> float:
    """One decode step with ``batch`` sequences each holding ``context`` tokens."""
    return costs.mean_duration(batch, 0, batch * context)


def idle_ttft(settings: Settings, prompt_tokens: int) -> float:
    """A lone prompt's first token, chunked by the token budget, in virtual time."""
    engine = StepEngine(
        num_blocks=num_kv_blocks(
            max(settings.kv_cache_size, prompt_tokens + 1), settings.block_size
        ),
        block_size=settings.block_size,
        max_num_batched_tokens=settings.step_token_budget,
        costs=StepCosts.from_settings(settings),
    )
    run = VirtualRun(engine)
    sequence = virtual_sequence("ttft", prompt_tokens, 1)
    run.arrive(sequence, at=0.0)
    run.until_idle()
    assert sequence.first_token_at is not None
    return sequence.first_token_at


def predict(settings: Settings) -> Prediction:
    costs = StepCosts.from_settings(settings)
    blocks_per_sequence = -(-CONTEXT // settings.block_size)
    fits = num_kv_blocks(settings.kv_cache_size, settings.block_size) // blocks_per_sequence
    limit = max(1, min(settings.running_limit, fits))
    best_batch, best_rate = 1, 0.0
    for batch in range(1, limit + 1):
        step = decode_itl(costs, batch)
        rate = batch / step if step > 0 else float("inf")
        if rate > best_rate:
            best_batch, best_rate = batch, rate
    return Prediction(
        itl={batch: decode_itl(costs, batch) for batch in BATCHES},
        ttft={prompt: idle_ttft(settings, prompt) for prompt in PROMPTS},
        peak_decode_tokens_per_second=best_rate,
        peak_batch=best_batch,
    )
