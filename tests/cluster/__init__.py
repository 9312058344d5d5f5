"""Tests of bridge.cluster (mirrors the package)."""
