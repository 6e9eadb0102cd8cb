"""``/v1/models`` and runtime LoRA management, with vLLM's bodies and messages."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from llmsim.api.http.errors import APIError
from llmsim.api.http.jsonio import dumps
from llmsim.api.http.keys import ENGINE, ENGINES, SETTINGS
from llmsim.api.http.requests import parse_body
from llmsim.api.openai.schemas import LoadLoraAdapterRequest, UnloadLoraAdapterRequest
from llmsim.engine import Adapter, AdapterExistsError, AdapterNotFoundError


def _card(
    model_id: str, root: str, parent: str | None, max_model_len: int | None
) -> dict[str, Any]:
    created = int(time.time())
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": root,
        "parent": parent,
        "max_model_len": max_model_len,
        "permission": [
            {
                "id": f"modelperm-{model_id}",
                "object": "model_permission",
                "created": created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }


async def list_models(request: web.Request) -> web.Response:
    settings, engine = request.app[SETTINGS], request.app[ENGINE]
    base = settings.served_names
    cards = [_card(name, settings.model, None, settings.max_model_len) for name in base]
    cards += [
        _card(adapter.name, adapter.path, adapter.base_model_name or base[0], None)
        for adapter in engine.loras.adapters
    ]
    return web.Response(
        body=dumps({"object": "list", "data": cards}), content_type="application/json"
    )


async def load_lora_adapter(request: web.Request) -> web.Response:
    body = await parse_body(request, LoadLoraAdapterRequest)
    if not body.lora_name or not body.lora_path:
        raise APIError(400, "Both 'lora_name' and 'lora_path' must be provided.", "lora_name")
    if body.lora_name in request.app[SETTINGS].served_names:
        raise APIError(400, f"The name '{body.lora_name}' is the base model's name.", "lora_name")
    try:  # every data-parallel engine loads it, as vLLM's API server asks all of them
        request.app[ENGINES].register_adapter(Adapter(body.lora_name, body.lora_path))
    except AdapterExistsError:
        raise APIError(
            400, f"The lora adapter '{body.lora_name}' has already been loaded.", "lora_name"
        ) from None
    return web.Response(text=f"Success: LoRA adapter '{body.lora_name}' added successfully.")


async def unload_lora_adapter(request: web.Request) -> web.Response:
    body = await parse_body(request, UnloadLoraAdapterRequest)
    if not body.lora_name:
        raise APIError(400, "The 'lora_name' field must be provided.", "lora_name")
    try:
        request.app[ENGINES].unregister_adapter(body.lora_name)
    except AdapterNotFoundError:
        raise APIError(
            404, f"The lora adapter '{body.lora_name}' cannot be found.", "lora_name"
        ) from None
    return web.Response(text=f"Success: LoRA adapter '{body.lora_name}' removed successfully.")
