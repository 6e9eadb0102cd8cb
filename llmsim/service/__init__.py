"""The protocol-neutral steps between a front door and the engine.

From "a validated request" to "a :class:`~llmsim.engine.GenerationRequest` submitted to the
engine": prompt counting with the server's tokenizer, sampling limits, constrained answers,
the readiness and fault checks, and the engine's refusals. Failures are
:class:`~llmsim.service.errors.ServiceError`\\ s that each door maps to its own status codes.

Imports neither aiohttp nor grpc (an import-linter contract checks it); sits below ``api``
and above ``proxy``, and may import ``answers``, ``runtime``, ``observability``, ``engine``
and ``settings``.
"""
