"""Tests of bridge.records (mirrors the package)."""
