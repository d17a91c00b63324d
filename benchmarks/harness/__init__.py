"""What the benchmark scripts share. `python benchmarks/X.py` puts benchmarks/ on sys.path, so
the scripts import this package as `harness`; each file directly in benchmarks/ is a script to
run, and nothing here is.

- serve, torchserve: start `packrat serve` or TorchServe on free ports, always stop them and
  every process they started;
- client: a started server's model description, requests, warm-up, progress, metrics;
- rounds: the order of interleaved rounds, one more pass of a profile;
- stats: a statistic over rounds (median and 95% CI of the geometric mean);
- report: what every Markdown report has (the machine, versions, the kept analysis);
- one subpackage per script too long to stand alone, named after it (backends for
  backends_side_by_side.py): its records, runs and report.
"""
