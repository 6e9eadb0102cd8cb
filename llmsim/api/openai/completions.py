"""``/v1/completions`` bodies and stream chunks."""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any

from llmsim.api.http.jsonio import dumps
from llmsim.api.http.sse import NOT_FINISHED, ResponseMeta, StreamSink, finish_fields, usage
from llmsim.api.openai.logprobs import completion_extras
from llmsim.engine import RequestGroup, Sequence


def completion_body(meta: ResponseMeta, group: RequestGroup) -> dict[str, Any]:
    return {
        **meta.header(),
        "choices": [_choice(meta, sequence) for sequence in group.sequences],
        "usage": usage(group),
        "system_fingerprint": meta.fingerprint,
    }


def _choice(meta: ResponseMeta, sequence: Sequence) -> dict[str, Any]:
    text, logprobs, prompt_logprobs = sequence.text, None, None
    if meta.plan is not None:
        text, logprobs, prompt_logprobs = completion_extras(meta.plan, sequence)
    return {
        "index": sequence.index,
        "text": text,
        "logprobs": logprobs,
        "finish_reason": sequence.api_finish_reason,
        "stop_reason": sequence.stop_reason,
        "prompt_logprobs": prompt_logprobs,
    }


_OPEN_END = b',"logprobs":null,' + NOT_FINISHED + b"}]}\n\n"
"""The end of a plain token chunk that is not a choice's last."""


class CompletionStreamSink(StreamSink):
    def plain_token_parts(self, index: int) -> tuple[bytes, bytes]:
        return self.head(index) + b'"text":', _OPEN_END

    def token_chunk(
        self, sequence: Sequence, text: str, last: bool, pieces: Seq[str] | None = None
    ) -> bytes:
        if self.logprobs is not None:
            text, logprobs = self.logprobs.completion(sequence, pieces or (text,))
            return self.chunk(
                sequence.index,
                b'"text":'
                + dumps(text)
                + b',"logprobs":'
                + logprobs
                + b","
                + finish_fields(sequence, last),
            )
        if not last:  # spelled out: this runs once per streamed token
            return self.head(sequence.index) + b'"text":' + dumps(text) + _OPEN_END
        return self.chunk(
            sequence.index,
            b'"text":' + dumps(text) + b',"logprobs":null,' + finish_fields(sequence, True),
        )

    def end_chunk(self, sequence: Sequence) -> bytes:
        return self.chunk(
            sequence.index, b'"text":"","logprobs":null,' + finish_fields(sequence, True)
        )
