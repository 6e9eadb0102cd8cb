"""``GET /server_info`` (development mode): what vLLM reports of its configuration.

vLLM answers ``vllm_config`` (its configuration as one ``key=value, ...`` line, or with
``config_format=json`` as nested sections), ``vllm_env`` (the ``VLLM_*`` variables
without any whose name holds ``KEY``) and ``system_env``. llmsim answers the same keys
with the sections a client reads (model, cache, scheduler, parallel, LoRA) filled from
its settings, and its own settings under ``llmsim``.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from llmsim import __version__
from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import SETTINGS
from llmsim.settings.model import SECRET_FIELDS, Settings

CONFIG_FORMATS = ("text", "json")


def vllm_config(settings: Settings) -> dict[str, Any]:
    """vLLM's configuration sections, as far as the simulator has them."""
    adapters = settings.adapters
    return {
        "model_config": {
            "model": settings.model,
            "served_model_name": settings.served_names[0],
            "tokenizer": settings.tokenizer or settings.model,
            "max_model_len": settings.max_model_len,
            "seed": settings.seed,
            "max_logprobs": settings.max_logprobs,
        },
        "cache_config": {
            "block_size": settings.block_size,
            "enable_prefix_caching": settings.enable_prefix_caching,
            "prefix_caching_hash_algo": settings.prefix_caching_hash_algo,
            "num_gpu_blocks": settings.kv_cache_size // settings.block_size,
        },
        "scheduler_config": {
            "max_num_seqs": settings.max_running_requests,
            "max_num_batched_tokens": settings.max_num_batched_tokens,
            "max_model_len": settings.max_model_len,
        },
        "parallel_config": {"data_parallel_size": settings.data_parallel_size},
        "lora_config": None
        if not adapters
        else {"max_loras": settings.max_loras, "max_cpu_loras": settings.cpu_lora_capacity},
        "llmsim": settings.model_dump(mode="json", exclude=set(SECRET_FIELDS)),
    }


def config_text(settings: Settings) -> str:
    """The one-line form, like ``str(VllmConfig)``: ``model='m', max_seq_len=4096, ...``."""
    fields: list[tuple[str, object]] = [
        ("model", repr(settings.model)),
        ("tokenizer", repr(settings.tokenizer or settings.model)),
        ("max_seq_len", settings.max_model_len),
        ("data_parallel_size", settings.data_parallel_size),
        ("seed", settings.seed),
        ("served_model_name", settings.served_names[0]),
        ("enable_prefix_caching", settings.enable_prefix_caching),
        ("block_size", settings.block_size),
        ("max_num_seqs", settings.max_running_requests),
        ("max_num_batched_tokens", settings.max_num_batched_tokens),
    ]
    return ", ".join(f"{key}={value}" for key, value in fields)


def vllm_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``VLLM_*`` variables set, leaving out every one whose name holds ``KEY``."""
    return {
        name: value
        for name, value in sorted(environ.items())
        if name.startswith("VLLM_") and "KEY" not in name
    }


def system_env() -> dict[str, Any]:
    return {
        "os": platform.platform(),
        "python_version": sys.version.split()[0],
        "python_platform": platform.machine(),
        "is_cuda_available": False,
        "llmsim_version": __version__,
    }


async def server_info(request: web.Request) -> web.Response:
    config_format = request.query.get("config_format", "text")
    if config_format not in CONFIG_FORMATS:
        raise APIError(400, "config_format must be 'text' or 'json'", "config_format")
    settings = request.app[SETTINGS]
    body = {
        "vllm_config": config_text(settings) if config_format == "text" else vllm_config(settings),
        "vllm_env": vllm_env(os.environ),
        "system_env": system_env(),
    }
    return web.Response(body=dumps(body), content_type="application/json")
