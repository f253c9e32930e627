"""The transparent proxy: Ollama /api/*, OpenAI-compatible /v1/*, streaming passthrough."""
