"""``/v1/completions`` bodies and stream chunks."""

from __future__ import annotations

from typing import Any

from llmsim.api.jsonio import dumps
from llmsim.api.sse import ResponseMeta, StreamSink, finish_fields, usage
from llmsim.engine import RequestGroup, Sequence


def completion_body(meta: ResponseMeta, group: RequestGroup) -> dict[str, Any]:
    return {
        **meta.header(),
        "choices": [
            {
                "index": sequence.index,
                "text": sequence.text,
                "logprobs": None,
                "finish_reason": sequence.api_finish_reason,
                "stop_reason": sequence.stop_reason,
                "prompt_logprobs": None,
            }
            for sequence in group.sequences
        ],
        "usage": usage(group),
        "system_fingerprint": None,
    }


class CompletionStreamSink(StreamSink):
    def token_chunk(self, sequence: Sequence, text: str, last: bool) -> bytes:
        return self.chunk(
            sequence.index,
            b'"text":' + dumps(text) + b',"logprobs":null,' + finish_fields(sequence, last),
        )
