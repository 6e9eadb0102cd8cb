"""A Hugging Face tokenizer (``--tokenizer``), loaded with the ``tokenizers`` library.

Accepts a ``tokenizer.json`` file, a directory holding one (and usually a
``tokenizer_config.json`` with the chat template and special tokens), or a hub id that
is looked up in the local Hugging Face cache and downloaded only when missing. Needs
the ``llmsim[tokenizers]`` extra; the built-in tokenizer needs nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llmsim.engine.chat_template import ChatTemplate
from llmsim.engine.tokenizer import TokenizerError, render_simple_chat

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token")
EXTRA_HINT = "pip install 'llmsim[tokenizers]'"


class HFTokenizer:
    """The :class:`~llmsim.engine.tokenizer.Tokenizer` interface over ``tokenizers.Tokenizer``."""

    def __init__(
        self, name: str, backend: Any, config: Mapping[str, Any], chat_template: str | None
    ) -> None:
        self.name = name
        self._backend = backend
        self.max_token_id = int(backend.get_vocab_size(with_added_tokens=True)) - 1
        special = {key: _token_text(config.get(key)) for key in SPECIAL_TOKEN_KEYS}
        self._config = config
        self._chat_template = chat_template
        template = chat_template if chat_template is not None else _config_template(config)
        self._template = (
            ChatTemplate(template, {k: v for k, v in special.items() if v is not None})
            if template is not None
            else None
        )

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int]) -> str:
        self._check(ids)
        return str(self._backend.decode(list(ids), skip_special_tokens=False))

    def count(self, text: str, add_special_tokens: bool = False) -> int:
        return len(self._backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def split(self, text: str) -> list[str]:
        """One piece per token from the character offsets; pieces join back to ``text``.

        Two tokens of one character (a byte-level split) give an empty piece and the
        character, so the piece count always equals the token count.
        """
        offsets = self._backend.encode(text, add_special_tokens=False).offsets
        if not offsets:
            return []
        starts = [0]
        for start, _ in offsets[1:]:
            starts.append(min(max(starts[-1], start), len(text)))
        ends = [*starts[1:], len(text)]
        return [text[start:end] for start, end in zip(starts, ends, strict=True)]

    def token_strs(self, ids: Sequence[int]) -> list[str]:
        self._check(ids)
        return [str(self._backend.id_to_token(token_id)) for token_id in ids]

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        **kwargs: Any,
    ) -> str:
        if self._template is None:
            return render_simple_chat(messages, add_generation_prompt)
        return self._template.render(messages, add_generation_prompt, **kwargs)

    def info(self) -> dict[str, Any]:
        """``tokenizer_config.json`` as Hugging Face loads it and vLLM shows it: without the
        vocabulary file names, added tokens as their text, the class vLLM wraps it in, and
        the ``--chat-template`` when one is set."""
        info = {
            key: _plain(value)
            for key, value in self._config.items()
            if key not in ("vocab_file", "merges_file")
        }
        named = str(self._config.get("tokenizer_class") or "PreTrainedTokenizer")
        info["tokenizer_class"] = "Cached" + (named if named.endswith("Fast") else named + "Fast")
        if self._chat_template is not None:
            info["chat_template"] = self._chat_template
        return info

    def _check(self, ids: Sequence[int]) -> None:
        for token_id in ids:
            if token_id < 0 or token_id > self.max_token_id:
                raise TokenizerError(f"token id {token_id} is out of vocabulary")


def load_hf_tokenizer(name: str, chat_template: str | None) -> HFTokenizer:
    """Load ``name`` (file, directory or cached hub id); one-line :class:`TokenizerError`."""
    try:
        from tokenizers import Tokenizer as Backend
    except ImportError:
        raise TokenizerError(f"--tokenizer needs the tokenizers library: {EXTRA_HINT}") from None
    tokenizer_file, config_file = _locate(name)
    try:
        backend = Backend.from_file(str(tokenizer_file))
    except Exception as exc:  # the library raises a bare Exception for bad files
        raise TokenizerError(f"cannot load the tokenizer {tokenizer_file}: {exc}") from None
    config: dict[str, Any] = {}
    if config_file is not None and config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TokenizerError(f"cannot read {config_file}: {exc}") from None
    return HFTokenizer(name, backend, config, chat_template)


def _locate(name: str) -> tuple[Path, Path | None]:
    path = Path(name).expanduser()
    if path.is_file():
        return path, path.with_name(CONFIG_FILE)
    if path.is_dir():
        if not (path / TOKENIZER_FILE).is_file():
            raise TokenizerError(f"the directory {path} holds no {TOKENIZER_FILE}")
        return path / TOKENIZER_FILE, path / CONFIG_FILE
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        raise TokenizerError(f"no tokenizer at {name}: no such file or directory")
    return _from_hub(name)


def _from_hub(repo_id: str) -> tuple[Path, Path | None]:
    """The hub id's files from the local cache; download them only when not cached."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        raise TokenizerError(
            f"{repo_id} is not a file or directory; loading hub ids needs huggingface_hub: "
            f"{EXTRA_HINT}"
        ) from None
    files: list[Path | None] = []
    for filename in (TOKENIZER_FILE, CONFIG_FILE):
        cached = try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            files.append(Path(cached))
            continue
        try:
            files.append(Path(hf_hub_download(repo_id, filename)))
        except Exception as exc:  # offline, unknown repo, gated model, ...
            if filename == CONFIG_FILE:
                files.append(None)
                continue
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TokenizerError(
                f"cannot load the tokenizer {repo_id}: not in the Hugging Face cache and "
                f"the download failed ({reason})"
            ) from None
    tokenizer_file, config_file = files
    assert tokenizer_file is not None
    return tokenizer_file, config_file


def _plain(value: Any) -> Any:
    """A configuration value as JSON shows an added token: its text."""
    if isinstance(value, dict):
        if isinstance(value.get("content"), str):  # an added token, as Hugging Face loads it
            return value["content"]
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _config_template(config: Mapping[str, Any]) -> str | None:
    template = config.get("chat_template")
    if isinstance(template, str):
        return template
    if isinstance(template, list):  # named templates: use the default one
        for item in template:
            if isinstance(item, dict) and item.get("name") == "default":
                return str(item.get("template"))
    return None
