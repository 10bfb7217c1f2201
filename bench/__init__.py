"""Benchmark scripts (run by hand, or with ``--quick`` as CI smoke tests); see docs/benchmarks.md."""
