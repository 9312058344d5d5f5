"""Tests of bridge.sim (mirrors the package)."""
