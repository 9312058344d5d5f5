"""Tests of the benchmarks in bench/ (their load generator and stand-ins)."""
