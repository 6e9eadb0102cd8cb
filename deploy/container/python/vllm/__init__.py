"""Inside the llmsim image only: ``vllm`` commands that start llmsim instead.

This is not vLLM. The image puts this directory on ``PYTHONPATH`` (and ``bin/vllm`` on
``PATH``) so that a Deployment written for the ``vllm/vllm-openai`` image runs unchanged:
``vllm serve ...`` and ``python3 -m vllm.entrypoints.openai.api_server ...`` both become
``llmsim serve ...``. It is not part of the llmsim package: installing llmsim never
installs a ``vllm`` module or command.
"""
