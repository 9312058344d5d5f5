"""Tests of bridge.engines.gpt_translator (mirrors the package)."""
