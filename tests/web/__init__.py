"""Tests of bridge.web (mirrors the package)."""
