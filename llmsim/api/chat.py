"""``/v1/chat/completions`` bodies and stream chunks."""

from __future__ import annotations

from typing import Any

from llmsim.api.jsonio import dumps
from llmsim.api.sse import ResponseMeta, StreamSink, finish_fields, usage
from llmsim.engine import RequestGroup, Sequence


def chat_body(meta: ResponseMeta, group: RequestGroup) -> dict[str, Any]:
    return {
        **meta.header(),
        "choices": [
            {
                "index": sequence.index,
                "message": {"role": "assistant", "content": sequence.text, "tool_calls": []},
                "logprobs": None,
                "finish_reason": sequence.natural_finish,
                "stop_reason": sequence.stop_reason,
            }
            for sequence in group.sequences
        ],
        "usage": usage(group),
        "system_fingerprint": None,
        "prompt_logprobs": None,
    }


class ChatStreamSink(StreamSink):
    def start_chunk(self, index: int) -> bytes:
        return self.chunk(
            index,
            b'"delta":{"role":"assistant","content":""},"logprobs":null,'
            b'"finish_reason":null,"stop_reason":null',
        )

    def token_chunk(self, sequence: Sequence, text: str, last: bool) -> bytes:
        return self.chunk(
            sequence.index,
            b'"delta":{"content":'
            + dumps(text)
            + b'},"logprobs":null,'
            + finish_fields(sequence, last),
        )
