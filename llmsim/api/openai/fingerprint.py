"""vLLM's ``system_fingerprint``: which server build and configuration answered.

vLLM 0.34 stamps every chat and completion answer ``vllm-<version>[-dpN]-<hash8>`` by default
(``--fingerprint-mode full``). The hash is of the configuration that shapes the computation,
so servers started alike answer alike and a changed setting shows; ``hash`` leaves out the
parallelism, ``custom`` sends ``--fingerprint-value`` (nothing when it is unset, as in vLLM),
``none`` sends null.
"""

from __future__ import annotations

import hashlib
import json

from llmsim.settings.model import Settings
from llmsim.settings.vllm_flags import VLLM_VERSION

HASHED = (
    "model",
    "tokenizer",
    "max_model_len",
    "block_size",
    "max_running_requests",
    "max_num_batched_tokens",
    "enable_prefix_caching",
    "prefix_caching_hash_algo",
    "max_loras",
)
"""The settings a simulated configuration hash covers (vLLM hashes its model, cache,
scheduler and LoRA configurations, among others)."""


def system_fingerprint(settings: Settings) -> str | None:
    """The fingerprint this server's answers carry."""
    mode = settings.fingerprint_mode
    if mode == "none":
        return None
    if mode == "custom":
        return settings.fingerprint_value
    factors = {name: str(getattr(settings, name)) for name in HASHED}
    text = json.dumps([VLLM_VERSION, factors], sort_keys=True)
    hash8 = hashlib.sha256(text.encode()).hexdigest()[:8]
    parts = [f"vllm-{VLLM_VERSION}"]
    if mode == "full" and settings.data_parallel_size > 1:
        parts.append(f"dp{settings.data_parallel_size}")
    parts.append(hash8)
    return "-".join(parts)
