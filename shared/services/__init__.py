"""Downstream MCP services: their registry, the client sessions to them, and which of their tools a request gets."""
