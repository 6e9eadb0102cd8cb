"""What each of vLLM's flags means here: a settings value, or nothing.

A flag whose table target is a settings field passes its value on as text, for the settings
model to check like any other flag. A ``=name`` target is converted here (units that differ,
several flags that make one setting). A target field that this build of llmsim does not have
yet counts as accepted without effect, so adding the field is all it takes to switch it on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from llmsim.settings.model import Settings
from llmsim.settings.vllm_args import NO_EFFECT, show_flag

if TYPE_CHECKING:
    from llmsim.settings.vllm_args import VllmCommandLine, VllmFlag

Recorded = tuple[str, Any]
"""``(option string as given, converted value)``."""

DEFAULT_KV_CACHE_TOKENS = 131_072
"""llmsim's default KV cache size, taken to be what vLLM's default utilisation (0.9) gives."""
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9
KV_BYTES_PER_TOKEN = 131_072
"""Bytes of KV cache per token for --kv-cache-memory-bytes: a Llama-3-8B-like model in
16-bit (32 layers x 8 KV heads x 128 dims x 2 tensors x 2 bytes)."""
DEFAULT_BLOCK_SIZE = 16

KV_CACHE_FLAGS = ("num_gpu_blocks_override", "kv_cache_memory_bytes", "gpu_memory_utilization")
"""The flags that size the KV cache, strongest first (as vLLM lets them override each other)."""


def map_flags(given: dict[VllmFlag, Recorded], result: VllmCommandLine) -> None:
    """Fill ``result`` from every flag that was given, in the command line's order."""
    by_dest = {flag.dest: recorded for flag, recorded in given.items()}
    for flag, (option, value) in given.items():
        mapped = _mapped_values(flag, value, by_dest)
        if mapped is None:
            result.no_effect.append(show_flag(option, value, flag.kind))
            continue
        result.settings.update(mapped)


def _mapped_values(
    flag: VllmFlag, value: Any, by_dest: dict[str, Recorded]
) -> dict[str, Any] | None:
    """The settings this flag sets (values as command-line text), or None: no effect."""
    if flag.target == NO_EFFECT:
        return None
    if flag.target.startswith("="):
        return _CONVERSIONS[flag.dest](flag.dest, value, by_dest)
    if flag.target not in Settings.model_fields:
        return None  # a setting this build does not have yet: accepted, no effect
    if value is None or (flag.kind == "hint_auto" and value == -1):
        return {}  # vLLM's "unset" / "auto": llmsim's default applies
    return {flag.target: _as_text(value)}


def _as_text(value: Any) -> Any:
    """Values as a command line would give them to llmsim's own flags."""
    if isinstance(value, bool):
        return value
    if isinstance(value, list):
        return [_as_text(item) for item in value]
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


# -- conversions --------------------------------------------------------------------


def _uvicorn_log_level(_dest: str, value: Any, _: dict[str, Recorded]) -> dict[str, Any]:
    return {"log_level": "debug" if value == "trace" else str(value)}


def _uvicorn_access_log(_dest: str, value: Any, _: dict[str, Recorded]) -> dict[str, Any]:
    return {"access_log": not value}  # the flag is --disable-uvicorn-access-log


def _log_stats(_dest: str, value: Any, _: dict[str, Recorded]) -> dict[str, Any]:
    return {"log_stats": not value}  # the flag is --disable-log-stats


def _api_key(_dest: str, value: Any, _: dict[str, Recorded]) -> dict[str, Any] | None:
    keys = [key for key in value or [] if key]
    return {"api_key": keys[0]} if keys else {}


def _shutdown_timeout(_dest: str, value: Any, _: dict[str, Recorded]) -> dict[str, Any]:
    return {"shutdown_timeout": f"{int(value)}s"}  # vLLM counts seconds


def _sse_keep_alive(_dest: str, value: Any, _: dict[str, Recorded]) -> dict[str, Any]:
    return {"sse_keep_alive_interval": f"{int(value)}s"}  # vLLM counts seconds


def kv_cache_tokens(
    num_gpu_blocks: int | None,
    memory_bytes: int | None,
    utilization: float | None,
    block_size: int,
) -> int | None:
    """The KV cache size in tokens that vLLM's sizing flags describe, by this rule:

    * ``--num-gpu-blocks-override N``: N blocks of ``--block-size`` tokens;
    * else ``--kv-cache-memory-bytes B``: B / 128 KiB per token (a Llama-3-8B in 16 bits);
    * else ``--gpu-memory-utilization U``: llmsim's default 131072 tokens x U / 0.9.
    """
    if num_gpu_blocks is not None:
        return max(1, num_gpu_blocks * block_size)
    if memory_bytes is not None:
        return max(1, memory_bytes // KV_BYTES_PER_TOKEN)
    if utilization is not None:
        ratio = utilization / DEFAULT_GPU_MEMORY_UTILIZATION
        return max(1, round(DEFAULT_KV_CACHE_TOKENS * ratio))
    return None


def _kv_cache_size(dest: str, value: Any, by_dest: dict[str, Recorded]) -> dict[str, Any] | None:
    """Only the strongest sizing flag given sets the size; the weaker ones have no effect."""
    given = [dest for dest in KV_CACHE_FLAGS if by_dest.get(dest, (None, None))[1] is not None]
    if not given or given[0] != dest:
        return None if value is not None else {}
    block = by_dest.get("block_size", (None, None))[1]
    values = [by_dest.get(name, (None, None))[1] for name in KV_CACHE_FLAGS]
    tokens = kv_cache_tokens(
        num_gpu_blocks=values[0],
        memory_bytes=values[1],
        utilization=values[2],
        block_size=block if block is not None else DEFAULT_BLOCK_SIZE,
    )
    return {"kv_cache_size": str(tokens)} if tokens is not None else {}


def _tokens_only(_dest: str, value: Any, _: dict[str, Recorded]) -> dict[str, Any]:
    """A tokens-only server is dedicated to the scale-out routes: vLLM serves them."""
    return {"enable_scale_out": True} if value else {}


def _no_effect(_dest: str, value: Any, _: dict[str, Recorded]) -> dict[str, Any] | None:
    """Accepted without effect (``--config`` never gets here: it is read before parsing)."""
    return None


POOLING_TASKS = frozenset({"embed", "embedding", "classify", "score", "reward"})
"""``--task`` / ``--convert`` values that make a pooling model (older vLLM's ``--task``)."""


def _pooling_runner(_dest: str, value: Any, _: dict[str, Recorded]) -> dict[str, Any] | None:
    """``--convert embed`` or ``--task embed``: an embedding model; ``--task generate``: not."""
    if value in POOLING_TASKS:
        return {"runner": "pooling"}
    if value == "generate":
        return {"runner": "generate"}
    return None


CONVERSION_NOTES = {
    "uvicorn_log_level": "`log_level` (`trace` reads as `debug`)",
    "disable_uvicorn_access_log": "`access_log` turned off (`--enable-uvicorn-access-log`: on)",
    "disable_log_stats": "`log_stats` turned off (a vLLM command line has it on otherwise)",
    "api_key": "`api_key` (the first key given)",
    "shutdown_timeout": "`shutdown_timeout` in seconds",
    "sse_keep_alive_interval": "`sse_keep_alive_interval` in seconds",
    "tokens_only": "`enable_scale_out` (the render, derender and generate routes are served; "
    "the tokenizer stays)",
    "gpu_memory_utilization": "`kv_cache_size`: 131072 tokens x U / 0.9, unless a stronger flag "
    "sizes it",
    "kv_cache_memory_bytes": "`kv_cache_size`: bytes / 131072 per token, unless "
    "`--num-gpu-blocks-override` is given",
    "num_gpu_blocks_override": "`kv_cache_size`: blocks x `--block-size` tokens",
    "task": "`runner`: `embed`, `embedding`, `classify`, `score`, `reward` make it `pooling`, "
    "`generate` makes it `generate`",
    "convert": "`runner`: `embed` and `classify` make it `pooling`",
    "config": "reading vLLM's YAML config file (a `.yaml`/`.yml` name; other names are "
    "llmsim's TOML `--config`)",
}
"""How each conversion reads in the generated reference (None: accepted, no effect)."""


_CONVERSIONS: dict[str, Callable[[str, Any, dict[str, Recorded]], dict[str, Any] | None]] = {
    "uvicorn_log_level": _uvicorn_log_level,
    "disable_uvicorn_access_log": _uvicorn_access_log,
    "disable_log_stats": _log_stats,
    "api_key": _api_key,
    "shutdown_timeout": _shutdown_timeout,
    "sse_keep_alive_interval": _sse_keep_alive,
    "tokens_only": _tokens_only,
    "gpu_memory_utilization": _kv_cache_size,
    "kv_cache_memory_bytes": _kv_cache_size,
    "num_gpu_blocks_override": _kv_cache_size,
    "task": _pooling_runner,
    "convert": _pooling_runner,
    "config": _no_effect,
}
