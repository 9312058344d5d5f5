"""Tests of bridge.engines (mirrors the package)."""
