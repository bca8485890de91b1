"""Wall-clock helpers shared by `training.serving_config` (which measures to choose) and `benchmarks.serving` (which measures to report)."""

import statistics
import threading
import time

import numpy as np


def seconds_per_call(function, texts, min_seconds=1.0, min_calls=3, warmup=2):
    """Median wall time of `function(texts)`, after `warmup` calls (tracing, first allocations)."""
    for _ in range(warmup):
        function(texts)
    times, started = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - started < min_seconds:
        start = time.perf_counter()
        function(texts)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def in_threads(work, threads):
    """Runs `work(i)` in `threads` threads released together; the seconds until the last one ends."""
    barrier = threading.Barrier(threads)

    def run(i):
        barrier.wait()
        work(i)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def percentiles(seconds):
    """p50/p95/p99 of `seconds`, in milliseconds."""
    values = np.array(seconds) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)}
