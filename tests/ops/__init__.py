"""Tests of bridge.ops (mirrors the package)."""
