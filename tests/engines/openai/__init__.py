"""Tests of bridge.engines.openai (mirrors the package)."""
