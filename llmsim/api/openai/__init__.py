"""vLLM's OpenAI-compatible HTTP routes and their vLLM extensions.

Chat and text completions (:mod:`.inference` drives both), embeddings and the pooling
routes (score, rerank, classify, Cohere's ``/v2/embed``), ``/v1/models`` with runtime
LoRA loading, tokenize and detokenize, render and derender, the tokens-in ``generate``
endpoint; the request schemas, logprobs, constrained answers and answer sources they read.
"""
