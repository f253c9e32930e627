"""Replay policies: Ollama's keep-alive, LRU, static top-N, the hybrid histogram, this project's forecast, and the oracle."""
