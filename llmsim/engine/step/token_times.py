"""When a sequence's next token may come out (timing overrides), and how a run of decode
steps splits into steps: small functions the step scheduler applies."""

from __future__ import annotations

from llmsim.engine.step.kv_cache import StepSequence


def counts_left(running: list[StepSequence]) -> list[int]:
    """The tokens each sequence still has to produce."""
    return [len(seq.sequence.output) - seq.sequence.generated for seq in running]


def step_tokens(counts: list[int]) -> list[tuple[int, int]]:
    """The tokens of each step of a run where sequence ``i`` produced ``counts[i]`` tokens,
    one per step from the first: (tokens per step, steps) segments, in order."""
    segments: list[tuple[int, int]] = []
    decoding, previous = len(counts), 0
    for count in sorted(counts):
        if count > previous:
            segments.append((decoding, count - previous))
            previous = count
        decoding -= 1
    return segments


def due_at(seq: StepSequence) -> float | None:
    """The earliest time the sequence's next token may come out (None: no override)."""
    sequence = seq.sequence
    timing = sequence.timing
    if timing is None:
        return None
    if sequence.generated == 0:
        ttft = timing.time_to_first_token
        return None if ttft is None else sequence.arrival + ttft + seq.paused_for
    itl = timing.inter_token_latency
    if itl is None or sequence.first_token_at is None:
        return None
    return sequence.first_token_at + sequence.generated * itl + seq.paused_for


def gate(seq: StepSequence, num_new: int, now: float, computed: int) -> int:
    """``num_new`` capped so that no token comes out before the sequence's override allows."""
    due = due_at(seq)
    if due is None or due <= now:
        return num_new
    return min(num_new, seq.num_tokens - 1 - computed)
