"""``llmsim serve`` takes a ``vllm serve`` command line as it is.

Before Typer sees the arguments they are split in two: llmsim's own options (exact
spellings of ``serve``'s options, with their values) stay for Typer; everything else (the
positional model, vLLM's flags, underscore spellings, prefixes, ``-tp``, ``-O3``, dotted
sub-keys, a YAML ``--config``) goes to vLLM's parser (:mod:`llmsim.settings.vllm_args`).
What it maps onto settings comes back as llmsim options placed before llmsim's own, so an
explicit llmsim option still wins. A command line with nothing for vLLM's parser never
loads its table, so llmsim's start-up does not get slower.
"""

from __future__ import annotations

import re
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from typer.models import OptionInfo

from llmsim.settings.model import option_flag

MULTI_VALUE_OPTIONS = ("--served-model-name", "--lora-modules")
"""llmsim options that take one or more values, like vLLM's ``nargs="+"`` flags."""
CONFIG_OPTIONS = ("--config", "-c")
HELP_OPTIONS = ("--help", "-h")
WITHOUT_EFFECT_OPTION = "--vllm-flags-without-effect"

VLLM_SEVERAL_VALUES = ("--api-key",)
"""Options that take one value on llmsim's side and one or more on vLLM's: given several,
they go to vLLM's parser (which keeps the first key)."""

_HUMAN_INT = r"\d+(\.\d+)?[kKmMgGtT]"
VLLM_VALUE_FORMS: dict[str, re.Pattern[str]] = {
    "--max-model-len": re.compile(rf"^({_HUMAN_INT}|auto|-1)$"),
    "--max-num-batched-tokens": re.compile(rf"^{_HUMAN_INT}$"),
    "--max-num-queued-tokens": re.compile(rf"^{_HUMAN_INT}$"),
    "--max-num-scheduled-tokens": re.compile(rf"^{_HUMAN_INT}$"),
    "--shutdown-timeout": re.compile(r"^\d+$"),
    "--sse-keep-alive-interval": re.compile(r"^-?\d+$"),
    "--data-parallel-backend": re.compile(r"^ray$"),
}
"""Options llmsim and vLLM share whose value, in this form, means what vLLM says: a token
count like ``32k``, ``--shutdown-timeout 30`` or ``--sse-keep-alive-interval 15`` in seconds,
vLLM's ``ray`` backend. Such a pair goes to vLLM's parser."""


def serve_option_shapes(command: Callable[..., Any]) -> dict[str, str]:
    """Each option string of a Typer command: ``flag`` (no value), ``value`` or ``multi``."""
    shapes = dict.fromkeys(HELP_OPTIONS, "flag")
    hints = typing.get_type_hints(command, include_extras=True)
    for hint in hints.values():
        for meta in getattr(hint, "__metadata__", ()):
            if not isinstance(meta, OptionInfo):
                continue
            # With Annotated, Typer reads the first positional argument (``default``) as the
            # first option name.
            first = [meta.default] if isinstance(meta.default, str) else []
            decls = [*first, *(meta.param_decls or ())]
            names = [name.strip() for decl in decls for name in decl.split("/")]
            is_flag = bool in typing.get_args(typing.get_args(hint)[0])
            for name in filter(None, names):
                multi = name in MULTI_VALUE_OPTIONS
                shapes[name] = "flag" if is_flag else "multi" if multi else "value"
    return shapes


def split_serve_args(args: Sequence[str], shapes: dict[str, str]) -> tuple[list[str], list[str]]:
    """``(llmsim's options with their values, everything for vLLM's parser)``, in order."""
    ours: list[str] = []
    theirs: list[str] = []
    dotted = _dotted_options(args)
    index = 0
    while index < len(args):
        arg = args[index]
        name, equals, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        shape = shapes.get(name)
        value = inline if equals else (args[index + 1] if index + 1 < len(args) else None)
        step = 1 if equals or shape in (None, "flag") else 2
        several = _several_values(args, index) if name in VLLM_SEVERAL_VALUES and not equals else []
        if shape is None:
            theirs.append(arg)
        elif name in dotted and shape == "value":  # vLLM merges the JSON and its sub-keys
            theirs.extend(args[index : index + step])
        elif several:
            theirs.extend([arg, *several])  # several keys: vLLM's nargs="+"
            step = 1 + len(several)
        elif _for_vllm(name, value):
            theirs.extend(["--config" if name in CONFIG_OPTIONS else name, str(value)])
            step = 1 if equals else 2
        else:
            ours.extend(args[index : index + step])
            if shape == "multi" and not equals:
                while index + step < len(args) and not args[index + step].startswith("-"):
                    ours.append(args[index + step])
                    step += 1
        index += step
    return ours, theirs


def _dotted_options(args: Sequence[str]) -> set[str]:
    """Options given with dotted sub-keys too (``--kv-transfer-config.kv_role``)."""
    names = (arg.partition("=")[0] for arg in args if arg.startswith("--"))
    return {name.partition(".")[0] for name in names if "." in name}


def _several_values(args: Sequence[str], index: int) -> list[str]:
    """The values after the option at ``index`` up to the next option, if more than one."""
    end = index + 1
    while end < len(args) and not args[end].startswith("-"):
        end += 1
    return list(args[index + 1 : end]) if end - index > 2 else []


def _for_vllm(name: str, value: str | None) -> bool:
    """A shared option whose value is in vLLM's form (a YAML config, ``32k``, seconds)."""
    if value is None:
        return False
    if name in CONFIG_OPTIONS:
        from llmsim.settings.vllm_rewrite import is_yaml_config

        return is_yaml_config(value)
    form = VLLM_VALUE_FORMS.get(name)
    return form is not None and form.match(value) is not None


def translate_serve_args(args: list[str], command: Callable[..., Any]) -> list[str]:
    """``llmsim serve`` / ``llmsim config show`` arguments with vLLM's flags turned into
    llmsim options; other commands unchanged. A bad vLLM flag exits with status 2."""
    if args[:1] == ["serve"]:
        head = 1
    elif args[:2] == ["config", "show"]:
        head = 2
    else:
        return args
    ours, theirs = split_serve_args(args[head:], serve_option_shapes(command))
    if not theirs:
        return args
    options = _vllm_as_llmsim_options(theirs)
    given = options + ours
    vllm_defaults = [*_auto_tool_choice(given), *_vllm_default_options(given)]
    return [*args[:head], *options, *vllm_defaults, *ours]


AUTO_TOOL_CHOICE = "--enable-auto-tool-choice"
NO_AUTO_TOOL_CHOICE = "--no-enable-auto-tool-choice"


def _auto_tool_choice(options: list[str]) -> list[str]:
    """A vLLM command line refuses ``tool_choice: "auto"`` unless it enables it (vLLM's
    rule), where llmsim's own default allows it; enabling it needs a tool-call parser."""
    if AUTO_TOOL_CHOICE in options and not any(
        option.startswith("--tool-call-parser") for option in options
    ):
        from llmsim.settings.vllm_args import USAGE

        sys.stderr.write(
            f"usage: {USAGE}\nllmsim serve: error: {AUTO_TOOL_CHOICE} requires --tool-call-parser\n"
        )
        raise SystemExit(2)
    if AUTO_TOOL_CHOICE in options or NO_AUTO_TOOL_CHOICE in options:
        return []
    return [NO_AUTO_TOOL_CHOICE]


VLLM_DEFAULTS = (
    (("--kv-transfer-config",), "--kv-transfer-config={}"),
    (("--log-stats", "--no-log-stats"), "--log-stats"),
    (
        ("--enable-server-load-tracking", "--no-enable-server-load-tracking"),
        "--no-enable-server-load-tracking",
    ),
    (("--enable-scale-out", "--no-enable-scale-out"), "--no-enable-scale-out"),
)
"""Where vLLM's default differs from llmsim's: a vLLM command line that does not set the
option gets vLLM's (no KV connector: ``kv_transfer_params`` ignored; stats logged; ``/load``
untracked; the scale-out routes answer 403)."""


def _vllm_default_options(options: list[str]) -> list[str]:
    """vLLM's defaults for the options in :data:`VLLM_DEFAULTS` that ``options`` leave unset."""
    return [
        default
        for names, default in VLLM_DEFAULTS
        if not any(option.split("=", 1)[0] in names for option in options)
    ]


def _vllm_as_llmsim_options(theirs: list[str]) -> list[str]:
    from llmsim.settings.vllm_args import USAGE, VllmArgsError, parse_vllm_args
    from llmsim.settings.vllm_rewrite import VllmConfigFileError

    try:
        parsed = parse_vllm_args(theirs)
    except VllmArgsError as exc:
        sys.stderr.write(f"usage: {USAGE}\nllmsim serve: error: {exc}\n")
        raise SystemExit(2) from None
    except VllmConfigFileError as exc:
        sys.stderr.write(f"llmsim serve: error: {exc}\n")
        raise SystemExit(2) from None
    options: list[str] = []
    for field, value in parsed.settings.items():
        options.extend(_as_options(field, value))
    options.extend(f"{WITHOUT_EFFECT_OPTION}={flag}" for flag in parsed.no_effect)
    return options


def _as_options(field: str, value: Any) -> list[str]:
    """``--name=value`` (the ``=`` keeps a value that starts with a dash a value)."""
    flag = option_flag(field)
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    if isinstance(value, list):
        return [f"{flag}={item}" for item in value]
    return [f"{flag}={value}"]
