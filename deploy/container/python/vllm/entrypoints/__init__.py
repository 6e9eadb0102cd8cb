"""vLLM's entry points, as the llmsim image answers them (see :mod:`vllm`)."""
