"""The helpers of benchmarks/serve_overhead.py."""
