"""Memory and time of training on a small and a 100× larger streamed corpus: they must not grow with it.

    python -m benchmarks.corpus_size [--small 20000] [--large 2000000] [--steps 30]

Writes two corpora of gzip shards from the shared Tatoeba pairs (repeated
to size; French → English), then runs `training.train` on each — the
tiny preset, one epoch of `--steps` steps, the same `--tokenizer-sample`
— each in its own process, and records its peak resident memory (the
training process alone: `ru_maxrss` of the process, not of the fresh
process that checks the export) and wall time, from the start to the
export. Results go to `benchmarks/results/corpus_size.json`.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TATOEBA = os.path.join(ROOT, "..", "shared", "data", "tatoeba-eng-fra.tsv")
RESULTS = os.path.join(ROOT, "benchmarks", "results", "corpus_size.json")

# Run in the child: the command's own code, then its peak memory on the last line.
_CHILD = """
import json, resource, sys, time
started = time.perf_counter()
from training.train import main
main(sys.argv[1:])
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - started}))
"""


def write_shards(directory, pairs, source=SHARED_TATOEBA, shard_pairs=250_000):
    """`pairs` lines of the source file, repeated, in gzip shards of at most `shard_pairs` lines."""
    with open(source, encoding="utf-8") as file:
        lines = [line if line.endswith("\n") else line + "\n" for line in file if line.strip()]
    os.makedirs(directory, exist_ok=True)
    written, shard = 0, 0
    while written < pairs:
        count = min(shard_pairs, pairs - written)
        with gzip.open(os.path.join(directory, f"part-{shard:05d}.tsv.gz"), "wt", encoding="utf-8", compresslevel=1) as out:
            for i in range(written, written + count):
                out.write(lines[i % len(lines)])
        written, shard = written + count, shard + 1
    return directory


def train(corpus, work, steps, tokenizer_sample, timeout=3600):
    """One `training.train` run on `corpus` in a fresh process; its peak memory and seconds."""
    args = ["--dataset", corpus, "--reverse", "--preset", "tiny", "--epochs", "1", "--steps-per-epoch", str(steps),
            "--tokenizer-sample", str(tokenizer_sample), "--export-dir", os.path.join(work, "export")]
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _CHILD, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"training on {corpus} failed:\n{result.stderr[-3000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    data_line = next(line for line in result.stdout.splitlines() if line.startswith("Data:"))
    return {"peak_rss_mib": round(figures["peak_rss_mib"], 1), "wall_seconds": round(wall, 1), "data": data_line}


def compare(small, large, steps=30, tokenizer_sample=20000, directory=None, log=print):
    """Trains on both corpora; returns their figures and the ratios large ÷ small."""
    with tempfile.TemporaryDirectory(prefix="corpus-size-", dir=directory) as work:
        results = {}
        for name, pairs in (("small", small), ("large", large)):
            started = time.perf_counter()
            corpus = write_shards(os.path.join(work, name, "corpus"), pairs)
            log(f"{name}: {pairs:,} pairs written in {time.perf_counter() - started:.1f} s")
            results[name] = {"pairs": pairs, **train(corpus, os.path.join(work, name), steps, tokenizer_sample)}
            log(f"{name}: {results[name]}")
    results["memory_ratio"] = round(results["large"]["peak_rss_mib"] / results["small"]["peak_rss_mib"], 3)
    results["time_ratio"] = round(results["large"]["wall_seconds"] / results["small"]["wall_seconds"], 3)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.corpus_size", description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=20_000, help="pairs of the small corpus")
    parser.add_argument("--large", type=int, default=2_000_000, help="pairs of the large corpus")
    parser.add_argument("--steps", type=int, default=30, help="training steps of each run")
    parser.add_argument("--tokenizer-sample", type=int, default=20_000, help="the same for both runs")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    results = compare(args.small, args.large, args.steps, args.tokenizer_sample)
    print(f"peak memory {results['small']['peak_rss_mib']} MiB ({args.small:,} pairs) vs "
          f"{results['large']['peak_rss_mib']} MiB ({args.large:,}): {results['memory_ratio']}x; wall "
          f"{results['small']['wall_seconds']} s vs {results['large']['wall_seconds']} s: {results['time_ratio']}x")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    return results


if __name__ == "__main__":
    main()
