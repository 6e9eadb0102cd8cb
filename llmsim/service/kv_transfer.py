"""``kv_transfer_params`` as vLLM's NIXL connector reads and writes them (P/D serving).

A router (llm-d's routing sidecar, vLLM's disaggregated proxy) first sends the request to a
prefill instance with ``{"do_remote_decode": true}`` and ``max_tokens`` 1 (the router's job:
vLLM does not force it); that instance computes the prompt, answers and, when the answer
stopped on its length (vLLM's ``FINISHED_LENGTH_CAPPED``), adds ``kv_transfer_params``
naming where the KV blocks can be pulled: ``do_remote_prefill``, ``remote_engine_id``,
``remote_request_id``, ``remote_block_ids``, ``remote_host``, ``remote_port``, ``tp_size``.
The router passes that object on to a decode instance, which skips the prefill, waits the
transfer time and decodes. A decode request that lacks a field is served with an ordinary
prefill, as vLLM does.
"""

from __future__ import annotations

import math
import os
import random
import uuid
from dataclasses import dataclass
from typing import Any

from llmsim.engine import RequestGroup
from llmsim.engine.kv_transfer import kv_transfer_delay
from llmsim.settings.model import Settings

SIDE_CHANNEL_HOST_ENV = "VLLM_NIXL_SIDE_CHANNEL_HOST"
SIDE_CHANNEL_PORT_ENV = "VLLM_NIXL_SIDE_CHANNEL_PORT"
DEFAULT_SIDE_CHANNEL_PORT = 5600
REMOTE_FIELDS = ("remote_engine_id", "remote_block_ids", "remote_host", "remote_port")
DEFAULT_BLOCK_SIZE = 16
FIRST_BLOCK_ID = 1
"""vLLM keeps block 0 as its null block: the blocks it hands out start at 1."""
MAX_BLOCK_ID = 1_000_000


@dataclass(frozen=True)
class TransferRequest:
    """What a request's ``kv_transfer_params`` ask of this instance."""

    remote_decode: bool
    """Prefill side: compute the prompt, answer, keep the blocks for a decoder."""
    remote_prefill: bool
    """Decode side: pull the prompt's blocks instead of computing them."""


def read_transfer_params(
    params: dict[str, Any] | None, produces: bool = True, consumes: bool = True
) -> TransferRequest | None:
    """What the request's (validated) ``kv_transfer_params`` ask of an instance that
    ``produces`` (hands blocks on) and ``consumes`` (pulls them), if anything."""
    if params is None or not (produces or consumes):
        return None
    remote_prefill = bool(params.get("do_remote_prefill")) and bool(params.get("remote_block_ids"))
    remote_prefill = remote_prefill and all(params.get(key) is not None for key in REMOTE_FIELDS)
    remote_decode = produces and bool(params.get("do_remote_decode"))
    return TransferRequest(remote_decode, consumes and remote_prefill)


class KVTransferAgent:
    """One instance's side of the transfers: its engine id, side channel and block ids.

    Its role is ``--kv-transfer-config``'s: unset, it does both (llmsim's default); set, as
    vLLM's connector would (nothing at all without a ``kv_connector``)."""

    def __init__(self, settings: Settings, rank: int = 0) -> None:
        self.settings = settings
        config = settings.kv_transfer_config
        self.produces = config is None or config.produces
        self.consumes = config is None or config.consumes
        engine_id = config.engine_id if config is not None else None
        self.engine_id = engine_id or str(uuid.uuid4())
        if config is not None and settings.data_parallel_size > 1:
            self.engine_id += f"_dp{rank}"  # as vLLM tells its ranks' connectors apart
        self.host = os.environ.get(SIDE_CHANNEL_HOST_ENV, "localhost")
        port = os.environ.get(SIDE_CHANNEL_PORT_ENV, "")
        base = int(port) if port.strip().isdigit() else DEFAULT_SIDE_CHANNEL_PORT
        self.port = base + rank
        self.block_size = int(getattr(settings, "block_size", DEFAULT_BLOCK_SIZE))
        self._next_block = FIRST_BLOCK_ID
        self._rng = random.Random(None if settings.seed is None else settings.seed + 2)

    def read(self, params: dict[str, Any] | None) -> TransferRequest | None:
        """What ``params`` ask of this instance, as its role allows."""
        return read_transfer_params(params, self.produces, self.consumes)

    def decode_delay(
        self, transfer: TransferRequest | None, settings: Settings, prompt_tokens: int
    ) -> float | None:
        """How long a decode request waits for its prompt's blocks; None when it computes
        them (no transfer asked, or fields missing)."""
        if transfer is None or not transfer.remote_prefill:
            return None
        return kv_transfer_delay(settings, prompt_tokens, self._rng)

    def answer_params(
        self, transfer: TransferRequest | None, group: RequestGroup, request_id: str
    ) -> dict[str, Any] | None:
        """The ``kv_transfer_params`` a finished prefill request answers, if any."""
        if transfer is None or not transfer.remote_decode or not length_capped(group):
            return None
        return self.prefill_params(group.prompt_tokens, request_id)

    def prefill_params(self, prompt_tokens: int, request_id: str) -> dict[str, Any]:
        """What a prefill instance answers: where a decoder pulls the prompt's blocks."""
        count = max(1, math.ceil(prompt_tokens / self.block_size))
        if self._next_block + count > MAX_BLOCK_ID:
            self._next_block = FIRST_BLOCK_ID
        blocks = list(range(self._next_block, self._next_block + count))
        self._next_block += count
        return {
            "do_remote_prefill": True,
            "do_remote_decode": False,
            "remote_block_ids": blocks,
            "remote_engine_id": self.engine_id,
            "remote_request_id": request_id,
            "remote_host": self.host,
            "remote_port": self.port,
            "tp_size": 1,
        }


def length_capped(group: RequestGroup) -> bool:
    """vLLM's NIXL connector hands the blocks on only when generation stopped on its length
    (a prefill request's ``max_tokens``); a request that stopped otherwise keeps nothing."""
    return all(sequence.finish_reason == "length" for sequence in group.sequences)
