"""What vLLM's ``--reasoning-parser`` and ``--enable-auto-tool-choice`` change for a request.

Both are read only when the server was started with them (or from a vLLM command line), so
a plain chat request on llmsim's defaults pays one attribute check for each.
"""

from __future__ import annotations

from llmsim.api.http.errors import APIError
from llmsim.api.openai.schemas import ChatCompletionRequest
from llmsim.api.openai.structured_fields import NamedToolChoice
from llmsim.settings.model import Settings
from llmsim.settings.parsers import thinks

AUTO_NEEDS_FLAGS = (
    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
)


def reasoning_of(parser: str, body: object) -> tuple[bool, bool]:
    """``(the answer starts with a thought, the answer shows it)`` for a request to a server
    with a reasoning parser. Only chat requests (and the APIs translated into chat) think,
    as vLLM parses reasoning only there; ``chat_template_kwargs`` turns thinking on or off,
    ``include_reasoning: false`` keeps the thought out of the answer (it is still made,
    paced and counted)."""
    if not isinstance(body, ChatCompletionRequest):
        return False, True
    extras = body.__pydantic_extra__ or {}
    shown = extras.get("include_reasoning", True) is not False
    return thinks(parser, extras.get("chat_template_kwargs")), shown


def check_tool_choice(settings: Settings, body: ChatCompletionRequest) -> None:
    """vLLM without a tool parser (no ``--enable-auto-tool-choice``) refuses every tool
    choice but ``none``; ``auto`` is the choice of tools sent without one."""
    if settings.enable_auto_tool_choice is not False or not body.tools:
        return
    choice = body.tool_choice or "auto"
    if choice == "none":
        return
    if choice == "auto":
        raise APIError(400, AUTO_NEEDS_FLAGS)
    shown = _vllm_repr(choice) if isinstance(choice, NamedToolChoice) else choice
    raise APIError(400, f'tool_choice="{shown}" requires --tool-call-parser to be set')


def _vllm_repr(choice: NamedToolChoice) -> str:
    """A named tool choice as vLLM prints its request object in the message."""
    return f"function=ChatCompletionNamedFunction(name='{choice.function.name}') type='function'"
