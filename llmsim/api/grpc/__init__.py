"""vLLM's gRPC service (``vllm.grpc.engine.VllmEngine``) beside the HTTP API, on one engine.

A thin door over :mod:`llmsim.service`: it reads vLLM's protobuf messages, maps service
errors to gRPC status codes and writes token ids back. Needs the ``grpc`` extra; nothing
here is imported unless ``--grpc-port`` is set (:mod:`.availability` checks for it first).
``generated/`` holds the modules protoc writes from vLLM's ``.proto``.
"""
