"""Tests of bridge.engines.bland (mirrors the package)."""
