"""Benchmark of `probe.compare` against the plain approach (run `python -m bench`)."""
