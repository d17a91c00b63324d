"""What the profile times against what a worker runs, side by side in one process (issue 7).

    python benchmarks/handle_vs_inference.py [--model resnet50] [--batch 64] [--threads 2]
        [--rounds 8]

(with the project's venv active). The profiler times `handler.inference` on one stacked batch,
reused run after run; a worker serving a batch runs `handler.handle` on the requests (stack,
inference, split). Served ResNet-50 batches of 32 and 64 took 11-25% longer end to end than
their profiled cells (docs/contention.md); this checks whether the handler's pre- and
post-processing account for it. Each round times, one after the other: `inference` on the
stacked batch, `handle` on the requests, and `handle` on fresh copies of them (as a worker
receives them, unpickled). Prints each round and the medians of the rounds' ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from packrat.models import ZooSource

    torch.set_num_threads(args.threads)
    handler = ZooSource(args.model).load()
    handler.initialize()
    requests = handler.example_requests(args.batch)
    batch = handler.preprocess(requests)
    handler.inference(batch)  # warm-up
    handler.handle(requests)

    def timed(run: Callable[[], object]) -> float:
        started = time.perf_counter()
        run()
        return (time.perf_counter() - started) * 1000.0

    rows = []
    for r in range(args.rounds):
        fresh = [x.clone() for x in requests]
        row = (
            timed(lambda: handler.inference(batch)),
            timed(lambda: handler.handle(requests)),
            timed(lambda fresh=fresh: handler.handle(fresh)),
        )
        rows.append(row)
        print(
            f"round {r + 1}: inference {row[0]:.0f} ms, handle {row[1]:.0f} ms, "
            f"handle on fresh copies {row[2]:.0f} ms",
            flush=True,
        )
    print(
        f"{args.model}, {args.threads} threads, batch {args.batch}, {args.rounds} rounds: "
        f"handle / inference {statistics.median(b / a for a, b, _ in rows):.3f}, "
        f"on fresh copies {statistics.median(c / a for a, _, c in rows):.3f} "
        "(medians of the rounds' ratios)"
    )


if __name__ == "__main__":
    main()
