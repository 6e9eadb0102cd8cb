"""HTTP plumbing shared by every HTTP door: the aiohttp app, its guard and errors.

The application factory (:mod:`.app`), typed app state (:mod:`.keys`), vLLM's error shape
(:mod:`.errors`), the per-route guard (API key, access log, error shaping), bodies and
JSON in and out, request validation, CORS, SSE writing, data-parallel routing, the
``--upstream`` forwarder, pod identity, and the OpenAPI document with the route inventory.
Nothing here knows one API's bodies beyond what the shared writers need.
"""
