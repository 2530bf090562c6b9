"""Tiny models of real architectures, built locally, for tests, the benchmark and smoke runs."""
