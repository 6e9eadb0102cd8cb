"""Finished requests' observations, kept as rows and folded into their histograms in batches.

A finished request updates ten histograms and a counter: as ten Python calls per request
that was a noticeable share of a zero-latency request's time. The common request (one
sequence, computed prompt, a normal finish) now leaves one row, and every
:data:`FOLD_EVERY` rows, or when the metrics are read, the rows are folded in: one pass
per histogram in C (``zip``, ``map``, ``Counter``), as vLLM's stat loggers record an
iteration's requests at once. The values are the same; only their order of addition
changes the float sums in the last bits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from itertools import compress, repeat
from operator import gt, sub, truediv

from llmsim.engine.sequence import Sequence
from llmsim.observability.metric_types import FastCounter, FastHistogram

FOLD_EVERY = 256
"""Rows kept at most before they are folded in: a bound on memory, not on freshness
(every read of the metrics folds first)."""

Row = tuple[str, float, float, float, float, int, int, int]
"""finish reason, arrival, scheduled, first token, last token, generated, prompt tokens,
max tokens"""


class FinishedRequests:
    """The rows of finished requests not yet in the histograms."""

    __slots__ = ("_generated", "_max_tokens", "_phase", "_prompt", "_success", "_tpot", "rows")

    def __init__(
        self,
        success: Mapping[str, FastCounter],
        phase: Mapping[str, FastHistogram],
        request_tpot: FastHistogram,
        prompt_tokens: FastHistogram,
        generation_tokens: FastHistogram,
        max_tokens: FastHistogram,
    ) -> None:
        self.rows: list[Row] = []
        self._success = success
        self._phase = phase
        self._tpot = request_tpot
        self._prompt = prompt_tokens
        self._generated = generation_tokens
        self._max_tokens = max_tokens

    def keep(self, sequence: Sequence) -> bool:
        """Keep a row for ``sequence`` if it is the common request; False: it is not, and
        the caller counts it at once."""
        reason = sequence.finish_reason
        first, last, scheduled = (
            sequence.first_token_at,
            sequence.last_token_at,
            sequence.scheduled_at,
        )
        if (
            reason is None
            or reason == "abort"
            or first is None
            or last is None
            or scheduled is None
            or sequence.n != 1
            or sequence.cached_tokens
            or sequence.num_preemptions
            or sequence.kv_transfer_delay is not None
        ):
            return False
        row = (
            reason,
            sequence.arrival,
            scheduled,
            first,
            last,
            sequence.generated,
            sequence.prompt_tokens,
            sequence.max_tokens,
        )
        self.add(row)
        return True

    def add(self, row: Row) -> None:
        """One finished request's observations, to be folded in with the others."""
        rows = self.rows
        rows.append(row)
        if len(rows) >= FOLD_EVERY:
            self.fold()

    def fold(self) -> None:
        """Put every kept row into the counters and histograms."""
        rows = self.rows
        if not rows:
            return
        reasons, arrival, scheduled, first, last, generated, prompt, max_tokens = zip(
            *rows, strict=True
        )
        rows.clear()
        for reason, count in Counter(reasons).items():
            self._success[reason].inc(count)
        phase = self._phase
        phase["e2e"].observe_all(list(map(sub, last, arrival)))
        phase["queue"].observe_all(list(map(sub, scheduled, arrival)))
        phase["inference"].observe_all(list(map(sub, last, scheduled)))
        phase["prefill"].observe_all(list(map(sub, first, scheduled)))
        decode = list(map(sub, last, first))
        phase["decode"].observe_all(decode)
        several = list(map(gt, generated, repeat(1)))
        gaps = map(sub, compress(generated, several), repeat(1))
        self._tpot.observe_all(list(map(truediv, compress(decode, several), gaps)))
        self._prompt.observe_all(prompt)
        self._generated.observe_all(generated)
        self._max_tokens.observe_all(max_tokens)
