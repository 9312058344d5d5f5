"""Tests of bridge.engines.soniox (mirrors the package)."""
