"""Local HTTP servers that speak the OpenAI, Anthropic and Gemini wire formats, so tests drive the real SDKs.

Import from `tests.wire.servers` (this package stays empty so `python -m tests.wire.servers` runs cleanly).
"""
