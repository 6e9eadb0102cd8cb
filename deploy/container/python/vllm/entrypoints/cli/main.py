"""The image's ``vllm`` command: ``vllm serve ARGS`` runs ``llmsim serve ARGS``.

The process is replaced (``exec``), so llmsim is the container's main process and gets
Kubernetes' ``SIGTERM`` itself. The arguments are passed as they are: llmsim reads
vLLM's flags and environment variables. For the image's own earlier interface, a first
argument that names an llmsim command (``serve``, ``fleet``, ...) runs that command, so
``docker run IMAGE serve --lora a`` and ``args: ["serve"]`` keep working. ``vllm``'s
other sub-commands need a real model and are refused with status 2, as ``vllm`` refuses
an unknown one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

LLMSIM_COMMANDS = frozenset({"serve", "fleet", "config", "profiles", "record", "ctl"})
SHIM_PATH = Path(__file__).resolve().parents[3]
"""The directory the image puts on PYTHONPATH (the one holding this ``vllm`` package)."""
USAGE = "usage: vllm serve [model_tag] [options]   (this image runs llmsim, a vLLM simulator)"


def exec_serve(args: Sequence[str]) -> NoReturn:
    """Become ``llmsim serve ARGS`` (or ``llmsim ARGS`` when ARGS start with its command)."""
    command = list(args) if args and args[0] in LLMSIM_COMMANDS else ["serve", *args]
    exec_llmsim(command)


def exec_llmsim(argv: Sequence[str]) -> NoReturn:
    """Replace this process with llmsim, without this shim on its PYTHONPATH."""
    env = dict(os.environ)
    kept = [
        entry
        for entry in env.get("PYTHONPATH", "").split(os.pathsep)
        if entry and Path(entry).resolve() != SHIM_PATH
    ]
    if kept:
        env["PYTHONPATH"] = os.pathsep.join(kept)
    else:
        env.pop("PYTHONPATH", None)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "llmsim", *argv], env)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "serve":
        exec_serve(args[1:])
    if args and args[0] in ("-v", "--version"):
        from llmsim import __version__

        print(f"{__version__} (llmsim, a vLLM simulator)")
        return
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0 if args else 2)
    print(USAGE, file=sys.stderr)
    print(f"vllm: error: only 'vllm serve' is available here, not {args[0]!r}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
