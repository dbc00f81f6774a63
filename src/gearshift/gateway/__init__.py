"""The gateway: an OpenAI-compatible HTTP server that routes live traffic."""
