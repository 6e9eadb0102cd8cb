"""vLLM's OpenAI-compatible server entry point, as the llmsim image answers it."""
