"""A prompt as the engine counts it: token ids taken as given, or text tokenized here.

Both are counted with the server's tokenizer (``--tokenizer`` included); text is encoded
with the model's special tokens, as vLLM encodes a completion prompt.
"""

from __future__ import annotations

from collections.abc import Sequence

from llmsim.engine import PromptInput
from llmsim.engine.tokenizer import Tokenizer, TokenizerError
from llmsim.service.errors import invalid


def token_prompt(
    ids: Sequence[int],
    tokenizer: Tokenizer,
    with_ids: bool,
    truncate: int | None = None,
    max_model_len: int = 0,
) -> PromptInput:
    """``ids`` as given (after ``truncate``); vLLM's 400 for an empty or out-of-vocabulary one."""
    if not ids:
        raise invalid("The prompt must not be empty.", "prompt")
    check_vocabulary(ids, tokenizer)
    kept = truncated(list(ids), truncate, max_model_len)
    return PromptInput(len(kept), prompt_text(kept, tokenizer), kept if with_ids else None)


def check_vocabulary(ids: Sequence[int], tokenizer: Tokenizer, param: str = "prompt") -> None:
    """vLLM's 400 for a token-id prompt with an id the tokenizer cannot have."""
    largest = max(ids)
    if largest > tokenizer.max_token_id:
        raise invalid(f"Token id {largest} is out of vocabulary", param)


def text_prompt(
    text: str,
    tokenizer: Tokenizer,
    with_ids: bool,
    truncate: int | None = None,
    max_model_len: int = 0,
    allow_empty: bool = False,
) -> PromptInput:
    """``text`` counted with the server's tokenizer (ids kept when the engine wants them).

    ``allow_empty``: an empty prompt is counted (OpenAI's completions accept one) rather than
    refused (gRPC's ``Generate``), and the echo is the text as given even when it has no ids.
    """
    if not text and not allow_empty:
        raise invalid("The prompt must not be empty.", "prompt")
    if with_ids or truncate is not None:
        ids = tokenizer.encode(text, True)
        if truncate is not None:
            ids = truncated(ids, truncate, max_model_len)
        echo = text if allow_empty or len(ids) else ""
        return PromptInput(len(ids), echo, ids if with_ids else None)
    return PromptInput(tokenizer.count(text, True), text)


def truncated(ids: list[int], truncate: int | None, max_model_len: int) -> list[int]:
    """vLLM's ``truncate_prompt_tokens``: keep the last ``truncate`` ids (-1: the context)."""
    if truncate is None:
        return ids
    if truncate == 0 or truncate < -1:
        raise invalid(
            f"truncate_prompt_tokens must be an integer >= 1 or -1, got {truncate}",
            "truncate_prompt_tokens",
        )
    keep = max_model_len if truncate == -1 else truncate
    return ids[-keep:] if len(ids) > keep else ids


def prompt_text(ids: Sequence[int], tokenizer: Tokenizer) -> str:
    """The text of a token-id prompt (what echo mode answers); unknown ids read as numbers."""
    try:
        return tokenizer.decode(ids)
    except TokenizerError:
        return " ".join(str(token_id) for token_id in ids)


def piece_id(tokenizer: Tokenizer, piece: str) -> int:
    """The id of one generated token's text (its first id when it encodes to several)."""
    ids = tokenizer.encode(piece)
    return ids[0] if ids else 0
