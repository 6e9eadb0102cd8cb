"""llmsim: a vLLM-compatible OpenAI API server that simulates inference."""

__version__ = "0.1.0"

__all__ = ["__version__"]
