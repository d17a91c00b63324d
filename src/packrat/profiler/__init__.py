"""Profiling: measure L(threads, batch) cells, sweep a grid, read and write profile files."""
