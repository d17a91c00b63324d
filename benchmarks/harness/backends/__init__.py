"""The helpers of benchmarks/backends_side_by_side.py."""
