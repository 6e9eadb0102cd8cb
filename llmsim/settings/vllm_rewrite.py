"""The rewriting vLLM's ``FlexibleArgumentParser`` applies before argparse sees the flags.

In vLLM's order: ``--model X`` becomes the positional model, ``--config FILE.yaml`` is
spread into flags (the command line after it still wins), ``--flag_name`` becomes
``--flag-name``, ``-O3`` becomes ``--optimization-level 3``, and dotted sub-keys of a
JSON flag (``--speculative-config.method mtp``, ``-cc.pass_config.x=True``,
``--x.list+ a,b``) are gathered into one JSON value for that flag.
"""

from __future__ import annotations

import json
import re
from argparse import ArgumentTypeError
from collections import defaultdict
from pathlib import Path
from typing import Any

YAML_SUFFIXES = (".yaml", ".yml")
_OPTIMIZATION_LEVELS = {"0", "1", "2", "3"}


class VllmConfigFileError(Exception):
    """A vLLM YAML config file that cannot be read."""


def rewrite_vllm_args(args: list[str], known: frozenset[str]) -> list[str]:
    """``args`` as vLLM's argparse would receive them; ``known`` are its option strings."""
    args = _model_first(args)
    args = _spread_yaml_config(args, known)
    return _fold_dotted_keys(_normalised(args))


def _model_first(args: list[str]) -> list[str]:
    """``--model X`` (or ``--model=X``) moves to the front as the positional model."""
    for index, arg in enumerate(args):
        if arg == "--model" and index + 1 < len(args):
            return [args[index + 1], *args[:index], *args[index + 2 :]]
        if arg.startswith("--model="):
            return [arg.removeprefix("--model="), *args[:index], *args[index + 1 :]]
    return args


def is_yaml_config(path: str) -> bool:
    """vLLM's ``--config`` takes YAML; llmsim's takes TOML. The suffix tells them apart."""
    return path.lower().endswith(YAML_SUFFIXES)


def _spread_yaml_config(args: list[str], known: frozenset[str]) -> list[str]:
    if "--config" not in args:
        return args
    index = args.index("--config")
    if index == len(args) - 1:
        raise VllmConfigFileError("--config: no config file given")
    from_file = yaml_config_args(args[index + 1], known)
    rest = args[:index] + args[index + 2 :]
    if rest and not rest[0].startswith("-"):  # the positional model stays first
        return [rest[0], *from_file, *rest[1:]]
    return [*from_file, *rest]


def yaml_config_args(path: str, known: frozenset[str]) -> list[str]:
    """A vLLM YAML config as flags: ``key: value`` -> ``--key value``, true ->
    ``--key``, false -> ``--no-key`` (when vLLM has it), lists -> several values,
    mappings -> JSON."""
    if not is_yaml_config(path):
        suffix = path.rsplit(".", 1)[-1]
        raise VllmConfigFileError(f"--config: a vLLM config file must be YAML, not .{suffix}")
    config = _read_yaml(Path(path))
    flags: list[str] = []
    for key, value in config.items():
        name = f"--{key}"
        if isinstance(value, bool):
            if value:
                flags.append(name)
            elif f"--no-{key}" in known:
                flags.append(f"--no-{key}")
        elif isinstance(value, list):
            if value:
                flags.extend([name, *(str(item) for item in value)])
        elif isinstance(value, dict):
            flags.extend([name, json.dumps(value)])
        else:
            flags.extend([name, str(value)])
    return flags


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise VllmConfigFileError("--config: reading a YAML file needs PyYAML") from None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VllmConfigFileError(f"--config: file not found: {path}") from None
    except OSError as exc:
        raise VllmConfigFileError(f"--config: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise VllmConfigFileError(f"--config: {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VllmConfigFileError(f"--config: {path} must hold a mapping of flags to values")
    return {str(key): value for key, value in data.items()}


_KEY_BEFORE_DOT = re.compile(r"(?<=--)[^.]*")


def _dashes(match: re.Match[str]) -> str:
    return match.group(0).replace("_", "-")


def _normalised(args: list[str]) -> list[str]:
    """Underscores to dashes in flag names (not in sub-keys), ``-O`` forms spelled out."""
    out: list[str] = []
    for index, arg in enumerate(args):
        if arg.startswith("--"):
            key, equals, value = arg.partition("=")
            out.append(_KEY_BEFORE_DOT.sub(_dashes, key, count=1) + equals + value)
        elif arg.startswith("-O") and arg != "-O":
            out.extend(["--optimization-level", arg[3:] if arg[2] == "=" else arg[2:]])
        elif arg == "-O" and index + 1 < len(args) and args[index + 1] in _OPTIMIZATION_LEVELS:
            out.append("--optimization-level")
        else:
            out.append(arg)
    return out


def _fold_dotted_keys(args: list[str]) -> list[str]:
    """``--x.a.b 1 --x.c=2`` -> ``--x {"a": {"b": 1}, "c": 2}`` (appended at the end)."""
    skip: set[int] = set()
    gathered: defaultdict[str, dict[str, Any]] = defaultdict(dict)
    for index, arg in enumerate(args):
        if index in skip or not arg.startswith("-") or "." not in arg:
            continue
        if "=" in arg:
            name, value_text = arg.split("=", 1)
            if "." not in name:
                continue
        elif index + 1 < len(args):
            name, value_text = arg, args[index + 1]
            skip.add(index + 1)
        else:
            continue
        if name.endswith("+"):
            name, value_text = name[:-1], json.dumps(value_text.split(","))
        flag, *keys = name.split(".")
        _merge(gathered[flag], _nested(keys, _sub_value(value_text)))
        skip.add(index)
    kept = [arg for index, arg in enumerate(args) if index not in skip]
    for flag, value in gathered.items():
        kept.extend([flag, json.dumps(value)])
    return kept


def _sub_value(text: str) -> Any:
    """JSON if it parses, else a human-readable integer (``4k``), else the text."""
    from llmsim.settings.vllm_args import human_readable_int

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return human_readable_int(text)
    except (ValueError, ArgumentTypeError):
        return text


def _nested(keys: list[str], value: Any) -> dict[str, Any]:
    nested: Any = value
    for key in reversed(keys):
        nested = {key: nested}
    return dict(nested)


def _merge(original: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(original.get(key), dict):
            _merge(original[key], value)
        elif isinstance(value, list) and isinstance(original.get(key), list):
            original[key] += value
        else:
            original[key] = value
