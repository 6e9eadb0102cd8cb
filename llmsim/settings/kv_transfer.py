"""vLLM's ``--kv-transfer-config``: whether and how this instance takes part in P/D.

The keys are vLLM's ``KVTransferConfig`` (``vllm/config/kv_transfer.py``). What a simulator
means of them: ``kv_connector`` (any name: without one, vLLM ignores a request's
``kv_transfer_params``), ``kv_role`` (``kv_producer`` hands its prompts' blocks on,
``kv_consumer`` pulls them, ``kv_both`` does either) and ``engine_id`` (the
``remote_engine_id`` a prefill answer names). vLLM's other keys are accepted and kept.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, model_validator

KVRole = Literal["kv_producer", "kv_consumer", "kv_both"]
KV_ROLES: tuple[str, ...] = get_args(KVRole)
PRODUCER_ROLES = ("kv_producer", "kv_both")
CONSUMER_ROLES = ("kv_consumer", "kv_both")


class KVTransferConfig(BaseModel):
    """One instance's part in disaggregated prefill/decode."""

    model_config = ConfigDict(extra="allow", frozen=True)

    kv_connector: str | None = None
    kv_role: KVRole | None = None
    engine_id: str | None = None

    @model_validator(mode="after")
    def _role_with_connector(self) -> KVTransferConfig:
        # vLLM's own check, in its words.
        if self.kv_connector is not None and self.kv_role is None:
            raise ValueError(
                "Please specify kv_disagg_role when kv_connector is set, supported roles "
                f"are {KV_ROLES}"
            )
        return self

    @property
    def produces(self) -> bool:
        """Answers ``do_remote_decode`` with the blocks a decoder can pull."""
        return self.kv_connector is not None and self.kv_role in PRODUCER_ROLES

    @property
    def consumes(self) -> bool:
        """Serves ``do_remote_prefill`` by pulling the blocks instead of a prefill."""
        return self.kv_connector is not None and self.kv_role in CONSUMER_ROLES

    def describe(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)
