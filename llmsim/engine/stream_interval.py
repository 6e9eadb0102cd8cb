"""vLLM's ``--stream-interval``: a stream's tokens go out N at a time, not one by one.

vLLM's output processor sends a request's first token at once, then waits until N more
have been generated and sends them together, and sends whatever is left when the request
finishes. So with one token per step the chunks hold the tokens at positions ``[0]``,
``[1, N]``, ``[N + 1, 2N]``, ... and a last, shorter one. :class:`IntervalSink` holds the
tokens the engine releases until their group is complete and hands each group on in one
call, at the time its last token is due; the API's sink writes one chunk per call.

A group never mixes a thought, text and a tool call's arguments: it ends where one of them
ends, so each chunk keeps one kind of delta (vLLM's parsers would merge them into one).
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

from llmsim.engine.pacer import RelaySink, TokenSink
from llmsim.engine.sequence import Sequence


class IntervalSink(RelaySink):
    """Passes tokens on to ``inner`` in groups of ``interval`` (the first token alone)."""

    def __init__(self, inner: TokenSink, interval: int) -> None:
        super().__init__(inner)
        self.interval = interval
        self._held: dict[int, tuple[int, list[str]]] = {}
        """Per choice: where its held tokens start, and their texts."""

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        held = self._held.pop(sequence.index, None)
        if held is not None:
            start, texts = held[0], held[1] + list(texts)
        end, total = start + len(texts), len(sequence.output)
        backed_up = False
        position = start
        while position < end:
            stop = min(self._group_end(sequence, position), total)
            if stop > end:  # the group is not complete yet: hold the rest
                self._held[sequence.index] = (position, list(texts[position - start :]))
                break
            group = texts[position - start : stop - start]
            backed_up = self._inner.tokens(sequence, position, group) or backed_up
            position = stop
        return backed_up

    def finished(self, sequence: Sequence) -> None:
        held = self._held.pop(sequence.index, None)
        if held is not None:  # cut short: what was generated still goes out
            start, texts = held
            self._inner.tokens(sequence, start, texts)
            if start + len(texts) >= len(sequence.output):
                return  # that chunk was the choice's last: it carries the finish
        self._inner.finished(sequence)

    def _group_end(self, sequence: Sequence, position: int) -> int:
        """Where the group holding ``position`` ends (exclusive)."""
        if position == 0:
            return 1
        interval = self.interval
        end = 1 + ((position - 1) // interval + 1) * interval
        if sequence.reasoning_end or sequence.tool_calls:
            for boundary in _kind_boundaries(sequence):
                if position < boundary < end:
                    return boundary
        return end


def _kind_boundaries(sequence: Sequence) -> list[int]:
    """Positions where the output turns from thought to text or into or out of a tool call."""
    edges = [sequence.reasoning_end]
    for span in sequence.tool_calls:
        edges += (span.start, span.end)
    return sorted(edges)


def with_interval(sink: TokenSink, interval: int) -> TokenSink:
    """``sink`` behind an :class:`IntervalSink` when ``interval`` groups tokens at all."""
    return IntervalSink(sink, interval) if interval > 1 else sink
