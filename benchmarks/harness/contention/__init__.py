"""The helpers of benchmarks/contention.py."""
