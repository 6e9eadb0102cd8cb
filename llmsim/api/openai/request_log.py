"""vLLM's request log: ``--enable-log-requests`` and ``--enable-log-outputs``.

The lines are those of vLLM's ``RequestLogger``: ``Received request ID: params: ...,
lora_request: ....`` at info as a request arrives (its prompt and token ids in a ``Request ID
details`` line at debug), and with outputs logged ``Generated response ID: output: ...,
output_token_ids: ..., finish_reason: ...`` as it ends (``(streaming complete)`` for a
stream, after a ``(streaming delta)`` line per token sent unless ``--no-enable-log-deltas``).
``--max-log-len`` cuts the prompt, the output and both lists of ids. Built only when the log
is on: a server without it pays one ``None`` test per request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from llmsim.api.openai.schemas import ChatCompletionRequest, CompletionRequest
from llmsim.engine import GenerationRequest, RequestGroup, Sequence
from llmsim.engine.pacer import RelaySink, TokenSink
from llmsim.engine.tokenizer import Tokenizer
from llmsim.service.generation import output_ids
from llmsim.settings.model import Settings

logger = logging.getLogger("llmsim.requests")

SAMPLING_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("presence_penalty", 0.0),
    ("frequency_penalty", 0.0),
    ("repetition_penalty", 1.0),
    ("temperature", 1.0),
    ("top_p", 1.0),
    ("top_k", 0),
    ("min_p", 0.0),
)
"""Sampling fields as vLLM's ``SamplingParams`` shows them, with its defaults."""


@dataclass(frozen=True, slots=True)
class RequestLogger:
    """One server's request log, as its settings ask."""

    max_log_len: int | None
    outputs: bool
    deltas: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLogger | None:
        if not settings.log_requests:
            return None
        return cls(settings.max_log_len, settings.log_outputs, settings.log_deltas)

    def stream_sink(self, sink: TokenSink, request_id: str, tokenizer: Tokenizer) -> TokenSink:
        """``sink``, logging each token it is handed when deltas are logged."""
        if not (self.outputs and self.deltas):
            return sink
        return DeltaLogSink(sink, self, request_id, tokenizer)

    def clip(self, items: Any) -> Any:
        return items if items is None or self.max_log_len is None else items[: self.max_log_len]

    def log_inputs(
        self,
        body: ChatCompletionRequest | CompletionRequest,
        generation: GenerationRequest,
        tokenizer: Tokenizer,
    ) -> None:
        request_id = generation.request_id
        adapter = generation.target.adapter
        lora = f"LoRARequest(lora_name={adapter!r})" if adapter is not None else None
        params = sampling_params(body, generation)
        logger.info("Received request %s: params: %s, lora_request: %s.", request_id, params, lora)
        if not logger.isEnabledFor(logging.DEBUG):
            return
        for prompt in generation.prompts:
            text = self.clip(prompt.echo_text)
            ids = prompt.token_ids
            if ids is None:  # the engine did not need them: tokenized for this line only
                ids = tokenizer.encode(prompt.echo_text)
            logger.debug(
                "Request %s details: prompt: %r, prompt_token_ids: %s, prompt_embeds shape: %s.",
                request_id,
                text,
                self.clip(list(ids)),
                None,
            )

    def log_outputs(self, request_id: str, group: RequestGroup, streaming: bool) -> None:
        """Each choice's answer, as vLLM logs it with ``--enable-log-outputs``."""
        if not self.outputs:
            return
        tokenizer = group.engine.tokenizer
        for sequence in group.sequences:
            text = self.clip("".join(sequence.output[: sequence.generated]))
            if streaming:  # vLLM logs a finished stream's text without ids or reason
                ids, reason, info = None, "streaming_complete", " (streaming complete)"
            else:
                ids = self.clip(output_ids(sequence, tokenizer))
                reason, info = sequence.api_finish_reason, ""
            logger.info(
                "Generated response %s%s: output: %r, output_token_ids: %s, finish_reason: %s",
                request_id,
                info,
                text,
                ids,
                reason,
            )


class DeltaLogSink(RelaySink):
    """Passes tokens through and logs each as vLLM logs a streamed delta: its text (a
    thought's as ``[reasoning: ...]``), its id, and the finish reason on the last one."""

    def __init__(
        self, inner: TokenSink, log: RequestLogger, request_id: str, tokenizer: Tokenizer
    ) -> None:
        super().__init__(inner)
        self._log = log
        self._request_id = request_id
        self._tokenizer = tokenizer

    def tokens(self, sequence: Sequence, start: int, texts: Seq[str]) -> bool:
        backed_up = self._inner.tokens(sequence, start, texts)
        last = len(sequence.output) - 1
        ids = output_ids(sequence, self._tokenizer, start, start + len(texts))
        clip = self._log.clip
        for position, (text, token_id) in enumerate(zip(texts, ids, strict=True), start):
            if position < sequence.reasoning_end:
                text = f"[reasoning: {text}]"
            logger.info(
                "Generated response %s (streaming delta): output: %r, output_token_ids: %s, "
                "finish_reason: %s",
                self._request_id,
                clip(text),
                [token_id],
                sequence.api_finish_reason if position == last else None,
            )
        return backed_up


def sampling_params(
    body: ChatCompletionRequest | CompletionRequest, generation: GenerationRequest
) -> str:
    """The request's sampling parameters in the shape of vLLM's ``SamplingParams`` repr."""
    fields: list[tuple[str, Any]] = [("n", generation.n)]
    for name, default in SAMPLING_DEFAULTS:
        value = getattr(body, name, None)
        fields.append((name, default if value is None else value))
    logprobs = getattr(body, "logprobs", None)
    if isinstance(logprobs, bool):  # chat: a flag, the count is top_logprobs
        logprobs = (getattr(body, "top_logprobs", None) or 0) if logprobs else None
    fields += [
        ("seed", generation.seed),
        ("stop", list(generation.stop)),
        ("stop_token_ids", list(body.stop_token_ids or [])),
        ("ignore_eos", generation.ignore_eos),
        ("max_tokens", generation.max_tokens),
        ("min_tokens", body.min_tokens or 0),
        ("logprobs", logprobs),
        ("prompt_logprobs", body.prompt_logprobs),
    ]
    return "SamplingParams(" + ", ".join(f"{name}={value!r}" for name, value in fields) + ")"
