"""vLLM's ``vllm`` command, as the llmsim image answers it."""
