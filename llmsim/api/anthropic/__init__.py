"""Anthropic's Messages API (``/v1/messages``), served over the chat pipeline.

:mod:`.routes` answers the HTTP requests (``count_tokens`` included), :mod:`.convert`
translates Messages shapes to and from chat as pure functions.
"""
