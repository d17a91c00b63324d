"""The helpers of benchmarks/reconfigure.py."""
