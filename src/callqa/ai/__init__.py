"""Language-model layer: providers (Anthropic, OpenAI-compatible), prompts, read-only tools, offline fallback."""
