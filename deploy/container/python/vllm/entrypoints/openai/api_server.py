"""``python3 -m vllm.entrypoints.openai.api_server ARGS``: llmsim serves with those ARGS.

The entry point of older ``vllm/vllm-openai`` images, still written in many manifests.
"""

from __future__ import annotations

import sys

from vllm.entrypoints.cli.main import exec_serve

if __name__ == "__main__":
    exec_serve(sys.argv[1:])
