"""Test suite of the interpreter bridge."""
