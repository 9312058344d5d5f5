"""Tests of bridge.audio (mirrors the package)."""
