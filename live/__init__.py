"""Real execution: the same scenario against OpenAI-compatible servers (vLLM), traced."""
