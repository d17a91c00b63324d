"""The helpers of benchmarks/simulate_paper.py."""
