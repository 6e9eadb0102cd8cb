"""``vllm serve``'s command line, checked as vLLM checks it and mapped onto settings.

The flags come from the table in :mod:`llmsim.settings.vllm_flags`; an ``argparse`` parser
is built from it, so values, prefixes (``--max-num-seq``), ``nargs`` and error messages
behave as vLLM's own argparse-based parser does. :mod:`llmsim.settings.vllm_rewrite` first
applies vLLM's rewriting (underscores, ``-O3``, dotted sub-keys, ``--config`` YAML).
Each flag then either sets a settings field or is listed as accepted without effect.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from llmsim.settings.vllm_flags import VLLM_FLAGS
from llmsim.settings.vllm_rewrite import rewrite_vllm_args

NO_EFFECT = "-"
USAGE = "llmsim serve [MODEL] [OPTIONS]"
PROG = "llmsim serve"


@dataclass(frozen=True)
class VllmFlag:
    """One flag of vLLM's parser: its spellings, how its value is checked, its mapping."""

    names: tuple[str, ...]
    off: tuple[str, ...]
    kind: str
    optional: bool
    choices: tuple[str, ...] | None
    nargs: str | None
    target: str
    group: str

    @property
    def primary(self) -> str:
        return self.names[0]

    @property
    def dest(self) -> str:
        return self.primary.lstrip("-").replace("-", "_")

    @property
    def takes_value(self) -> bool:
        return self.kind not in ("flag", "bool")


class VllmArgsError(Exception):
    """A vLLM command line that vLLM itself would refuse (argparse exits with status 2)."""


@dataclass
class VllmCommandLine:
    """A parsed ``vllm serve`` command line: settings values and flags without effect."""

    settings: dict[str, Any] = field(default_factory=dict)
    no_effect: list[str] = field(default_factory=list)


_KIND = re.compile(r"^(?P<opt>\?)?(?P<base>[a-z_]+)(?:\{(?P<choices>[^}]*)\})?(?P<nargs>[+?])?$")


@functools.cache
def vllm_flags() -> tuple[VllmFlag, ...]:
    """The table, parsed once."""
    flags = []
    group = ""
    for line in VLLM_FLAGS.splitlines():
        if not line.strip():
            continue
        if line.startswith("## "):
            group = line[3:].strip()
            continue
        names_text, kind_text, target = re.split(r"\s{2,}", line.strip())
        match = _KIND.match(kind_text)
        if match is None:  # pragma: no cover - the table is checked by the tests
            raise ValueError(f"bad kind in the vLLM flag table: {line}")
        names = names_text.split()
        choices = match["choices"]
        flags.append(
            VllmFlag(
                names=tuple(name for name in names if not name.startswith("!")),
                off=tuple(name[1:] for name in names if name.startswith("!")),
                kind=match["base"],
                optional=bool(match["opt"]),
                choices=tuple(choices.split("|")) if choices else None,
                nargs=match["nargs"],
                target=target,
                group=group,
            )
        )
    return tuple(flags)


# -- value types named and worded as vLLM's ------------------------------------------


def human_readable_int(value: str) -> int:
    """``25.6k`` -> 25600, ``1K`` -> 1024, as vLLM reads token counts and sizes."""
    value = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT])", value)
    if match:
        number, suffix = match.groups()
        if suffix.islower():
            return int(float(number) * 1000 ** ("kmgt".index(suffix) + 1))
        if "." in number:
            raise argparse.ArgumentTypeError(
                f"Decimals are not allowed with binary suffixes like {suffix}. "
                f"Did you mean to use {number}{suffix.lower()} instead?"
            )
        return int(number) << (10 * ("KMGT".index(suffix) + 1))
    return int(value)


def human_readable_int_or_auto(value: str) -> int:
    """Like :func:`human_readable_int`; ``auto`` and ``-1`` mean -1 (vLLM picks)."""
    value = value.strip()
    if value == "-1" or value.lower() == "auto":
        return -1
    return human_readable_int(value)


def _json_object(value: str) -> Any:
    """A config flag's value: a JSON object (vLLM then checks its keys)."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"Value {value} is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"Value {value} is not a JSON object")
    return parsed


def _json_object_or_level(value: str) -> Any:
    """``--compilation-config``: a JSON object, or older vLLM's bare level (``-cc 3``)."""
    if value.strip().isdigit():
        return {"level": int(value)}
    return _json_object(value)


def union_dict_and_str(value: str) -> Any:
    if not re.match(r"(?s)^\s*{.*}\s*$", value):
        return value
    return _checked(json.loads, "JSON")(value)


def _checked(convert: Callable[[str], Any], label: str) -> Callable[[str], Any]:
    """vLLM's ``parse_type``: a ValueError becomes 'Value X cannot be converted to T.'"""

    def _parse_type(value: str) -> Any:
        try:
            return convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"Value {value} cannot be converted to {label}."
            ) from None

    return _parse_type


def _optional(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """vLLM's ``optional_type``: an empty value or ``None`` means unset."""

    def _optional_type(value: str) -> Any:
        return None if value in ("", "None") else convert(value)

    return _optional_type


def _lower(value: str) -> str:
    return value.lower().replace("-", "_")


def _device_ids(value: str) -> list[int | str]:
    parts = (part.strip() for part in value.split(","))
    return [int(part) if part.isdigit() else part for part in parts]


_PLAIN_TYPES: dict[str, Callable[[str], Any]] = {
    "str": str,
    "int": int,
    "float": float,
    "hint": human_readable_int,
    "hint_auto": human_readable_int_or_auto,
    "loads": json.loads,
    "json": _checked(json.loads, "JSON"),
    "config": _json_object,
    "config_or_level": _json_object_or_level,
    "dict_or_str": union_dict_and_str,
    "lower": _lower,
    "ids": _device_ids,
}
_LABELS = {"str": "<class 'str'>", "int": "<class 'int'>", "float": "<class 'float'>"}


def _value_type(flag: VllmFlag) -> Callable[[str], Any]:
    convert = _PLAIN_TYPES[flag.kind]
    if not flag.optional:
        return convert
    if flag.kind in _LABELS:
        convert = _checked(convert, _LABELS[flag.kind])
    return _optional(convert)


def _choices(flag: VllmFlag) -> list[Any] | None:
    if flag.choices is None:
        return None
    convert = int if flag.kind == "int" else str
    return [convert(choice) for choice in flag.choices] + ([None] if flag.optional else [])


# -- the parser ---------------------------------------------------------------------


class _Record(argparse.Action):
    """Stores ``(option string, value)`` so the flag can be shown as it was given."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        self.off: tuple[str, ...] = kwargs.pop("off", ())
        self.kind: str = kwargs.pop("kind")
        super().__init__(option_strings, dest, **kwargs)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if self.kind in ("flag", "bool"):
            values = option_string not in self.off
        elif self.kind == "append":
            previous: list[Any] = getattr(namespace, self.dest, (None, []))[1]
            values = [*previous, values]
        setattr(namespace, self.dest, (option_string, values))


class _VllmParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise VllmArgsError(message)


@functools.cache
def _parser() -> _VllmParser:
    parser = _VllmParser(prog=PROG, usage=USAGE, add_help=False, allow_abbrev=True)
    parser.add_argument("model_tag", nargs="?", default=argparse.SUPPRESS)
    for flag in vllm_flags():
        options: dict[str, Any] = {"dest": flag.dest, "default": argparse.SUPPRESS}
        options.update(action=_Record, kind=flag.kind)
        if flag.kind in ("flag", "bool"):
            options.update(nargs=0, off=flag.off)
        else:
            options.update(type=_value_type(flag) if flag.kind != "append" else str)
            options.update(choices=_choices(flag), nargs=flag.nargs)
            if flag.nargs == "?":
                options["const"] = True
        parser.add_argument(*flag.names, *flag.off, **options)
    return parser


def known_option_strings() -> frozenset[str]:
    """Every option string vLLM's parser registers (without prefixes)."""
    return frozenset(_parser()._option_string_actions)


def parse_vllm_args(args: Sequence[str]) -> VllmCommandLine:
    """Parse a ``vllm serve`` command line (without ``vllm serve``), or raise
    :class:`VllmArgsError` with argparse's message."""
    parser = _parser()
    rewritten = rewrite_vllm_args(list(args), known_option_strings())
    namespace = vars(parser.parse_args(rewritten))
    return map_onto_settings(namespace)


def map_onto_settings(namespace: dict[str, Any]) -> VllmCommandLine:
    """Turn parsed values into settings values and the list of flags without effect."""
    from llmsim.settings.vllm_mapping import map_flags

    by_dest = {flag.dest: flag for flag in vllm_flags()}
    _check_flag_pairs(namespace)
    result = VllmCommandLine()
    model = namespace.pop("model_tag", None)
    if model is not None:
        result.settings["model"] = model
    given = {by_dest[dest]: recorded for dest, recorded in namespace.items()}
    map_flags(given, result)
    return result


FLAG_PAIRS = (
    ("enable_auto_tool_choice", "tool_call_parser", "--enable-auto-tool-choice"),
    ("enable_log_outputs", "enable_log_requests", "--enable-log-outputs"),
)
"""On/off flags that vLLM refuses at start-up without a second flag."""


def _check_flag_pairs(namespace: dict[str, Any]) -> None:
    for first, needed, flag in FLAG_PAIRS:
        if namespace.get(first, (None, False))[1] and not namespace.get(needed, (None, None))[1]:
            needed_flag = "--" + needed.replace("_", "-")
            raise VllmArgsError(f"{flag} requires {needed_flag}")


def show_flag(option: str, value: Any, kind: str) -> str:
    """``--dtype half``, ``--enforce-eager``, ``-cc {"level": 3}``: a flag as it was given."""
    if kind in ("flag", "bool"):
        return option
    if value is None:
        return f"{option} None"
    if isinstance(value, (dict, list)) and kind not in ("append",) and not _is_list(kind, value):
        return f"{option} {json.dumps(value, separators=(',', ':'))}"
    if isinstance(value, list):
        return f"{option} " + " ".join(_text(item) for item in value)
    return f"{option} {_text(value)}"


def _is_list(kind: str, value: Any) -> bool:
    return isinstance(value, list) and kind not in ("loads", "json", "dict_or_str")


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)
