"""The helpers of benchmarks/robustness.py."""
