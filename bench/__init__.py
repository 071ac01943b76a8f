"""Benchmarks: each prints its figures (run as `python -m bench.NAME`); none of them asserts a time."""
