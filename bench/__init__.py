"""Benchmarks: each script prints Markdown tables (see the README's Benchmarks section)."""
