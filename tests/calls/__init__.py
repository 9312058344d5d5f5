"""Tests of bridge.calls (mirrors the package)."""
