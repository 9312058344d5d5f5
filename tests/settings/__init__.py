"""Tests of bridge.settings (mirrors the package)."""
