"""Chat templates rendered with Jinja2 the way ``transformers`` renders them.

Same environment options (``trim_blocks``, ``lstrip_blocks``, the loop-controls
extension, a sandbox), the same helpers (``raise_exception``, ``tojson``,
``strftime_now``) and the same variables (``messages``, ``add_generation_prompt``, the
special tokens of ``tokenizer_config.json``), so a model's template gives the prompt
text the model itself would see.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from llmsim.engine.tokenizer import TokenizerError


class ChatTemplate:
    """A compiled template plus the special tokens it may refer to."""

    def __init__(self, source: str, special_tokens: Mapping[str, str]) -> None:
        self.source = source
        try:
            from jinja2 import TemplateError
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError:
            raise TokenizerError(
                "chat templates need Jinja2: pip install 'llmsim[tokenizers]'"
            ) from None
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except TemplateError as exc:
            raise TokenizerError(f"the chat template does not compile: {exc}") from None
        self._special = dict(special_tokens)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> str:
        """The prompt text; a template error becomes :class:`ValueError` (a 400)."""
        from jinja2 import TemplateError

        variables = {**self._special, **kwargs}
        try:
            return self._template.render(
                messages=[dict(message) for message in messages],
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except TemplateError as exc:
            raise ValueError(f"the chat template failed: {exc}") from None


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, sort_keys: bool = False
) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    from jinja2 import TemplateError

    raise TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)
