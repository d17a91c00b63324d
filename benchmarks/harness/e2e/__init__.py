"""The helpers of the end-to-end suite, benchmarks/e2e.py."""
