"""``/v1/chat/completions`` bodies and stream chunks."""

from __future__ import annotations

from typing import Any

from llmsim.api.jsonio import dumps
from llmsim.api.logprobs import chat_logprobs, chat_prompt_logprobs
from llmsim.api.sse import ResponseMeta, StreamSink, finish_fields, usage
from llmsim.engine import RequestGroup, Sequence


def chat_body(meta: ResponseMeta, group: RequestGroup) -> dict[str, Any]:
    plan = meta.plan
    return {
        **meta.header(),
        "choices": [
            {
                "index": sequence.index,
                "message": {"role": "assistant", "content": sequence.text, "tool_calls": []},
                "logprobs": None if plan is None else chat_logprobs(plan, sequence),
                "finish_reason": sequence.natural_finish,
                "stop_reason": sequence.stop_reason,
            }
            for sequence in group.sequences
        ],
        "usage": usage(group),
        "system_fingerprint": None,
        "prompt_logprobs": None if plan is None else chat_prompt_logprobs(plan),
    }


class ChatStreamSink(StreamSink):
    def start_chunk(self, index: int) -> bytes:
        return self.chunk(
            index,
            b'"delta":{"role":"assistant","content":""},"logprobs":null,'
            b'"finish_reason":null,"stop_reason":null',
        )

    def token_chunk(self, sequence: Sequence, text: str, last: bool) -> bytes:
        if self.logprobs is not None:
            return self.chunk(
                sequence.index,
                b'"delta":{"content":'
                + dumps(text)
                + b'},"logprobs":'
                + self.logprobs.chat(sequence, text)
                + b","
                + finish_fields(sequence, last),
            )
        return self.chunk(
            sequence.index,
            b'"delta":{"content":'
            + dumps(text)
            + b'},"logprobs":null,'
            + finish_fields(sequence, last),
        )
