"""prewarm: a predictive prewarming proxy for Ollama and vLLM."""

__version__ = "0.1.0"
