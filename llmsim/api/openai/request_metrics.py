"""vLLM's per-request metrics (``--enable-per-request-metrics``): a request's own timings in
its answer, from the engine's timestamps for its one sequence, computed as vLLM computes
them: the time to first token counts from scheduling (the queue is apart), the generation
time is the decode interval, and tokens per second divide every output token by the time
from scheduling to the last one.
"""

from __future__ import annotations

from llmsim.engine import Sequence

Metrics = dict[str, float | None]


def request_metrics(sequence: Sequence) -> Metrics:
    """The ``metrics`` object of a one-choice answer (null where a timestamp is missing)."""
    scheduled, first, last = sequence.scheduled_at, sequence.first_token_at, sequence.last_token_at
    tokens = sequence.generated
    ttft = generation = queue = itl = rate = None
    if scheduled is not None:
        queue = (scheduled - sequence.arrival) * 1000
        if first is not None:
            ttft = (first - scheduled) * 1000
        if last is not None and last > scheduled:
            rate = tokens / (last - scheduled)
    if first is not None and last is not None:
        generation = (last - first) * 1000
        if tokens > 1:
            itl = generation / (tokens - 1)
    return {
        "time_to_first_token_ms": ttft,
        "generation_time_ms": generation,
        "queue_time_ms": queue,
        "mean_itl_ms": itl,
        "tokens_per_second": rate,
        "speculative_decoding": None,
    }


def streamed_metrics(sequence: Sequence) -> Metrics:
    """:func:`request_metrics` as a stream's usage chunk carries it: without the nulls."""
    return {name: value for name, value in request_metrics(sequence).items() if value is not None}
