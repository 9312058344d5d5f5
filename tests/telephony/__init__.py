"""Tests of bridge.telephony (mirrors the package)."""
