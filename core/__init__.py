"""LLMConnect core: conversations, engine, stream rendering; no platform imports."""
