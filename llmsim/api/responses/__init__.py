"""OpenAI's Responses API (``/v1/responses``), served over the chat pipeline.

:mod:`.routes` answers the HTTP requests, :mod:`.convert` translates Responses shapes to
and from chat as pure functions, :mod:`.store` keeps stored responses for
``GET /v1/responses/{id}`` and ``previous_response_id``.
"""
