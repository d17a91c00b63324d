"""The helpers of benchmarks/profile_cost.py."""
