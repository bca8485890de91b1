"""Do the streamed shards mix? Sentence lengths of the first training batches of an epoch, against the whole corpus.

    python -m benchmarks.stream_mixing [--dataset '../shared/data/anki-eng-fra-2019/*.tsv.gz'] [--batches 1000]

A corpus cut into shards in its own order (the Anki file is sorted by
length, so its first shard holds only short sentences and its last only
long ones) must not reach the model in that order: the first batches of an
epoch would all be short, the last all long, and the learning-rate
schedule would meet them in that order. This runs `training.train`'s own
stream (the corpus's default config: tokenizers, token budget, shuffle
buffer) for `--batches` batches and reports, per tenth of them, the mean
real target length per sentence and the padding fraction, beside the same
figures of the whole training split (from the tokenizers' sample, drawn
uniformly from the corpus). Results go to `benchmarks/results/stream_mixing.json`.
"""

import argparse
import json
import os
import tempfile

import numpy as np

from training import run as training_run

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "stream_mixing.json")
ANKI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                    "anki-eng-fra-2019", "*.tsv.gz")


def measure(dataset, batches, reverse=True, work_dir=None, **flags):
    """Per tenth of the first `batches` batches: mean real target tokens per sentence and padding."""
    work_dir = work_dir or tempfile.mkdtemp(prefix="stream-mixing-")
    run = training_run.prepare_run(dataset=dataset, reverse=reverse, work_dir=work_dir, **flags)
    stream = run.data.stream().take(batches)  # epochs on end, as fit reads them
    per_batch = []
    for inputs, labels in stream.as_numpy_iterator():
        real = (labels != 0).sum(axis=1)
        per_batch.append((real.sum(), len(real), labels.size, labels.shape[1]))
    per_batch = np.array(per_batch, dtype=np.float64)
    tenths = np.array_split(per_batch, 10)
    sample_lengths = run.data.sample_target_lengths - 1  # without the start token: the labels' real length
    return {
        "dataset": dataset,
        "batches": len(per_batch),
        "config": run.config_name,
        "shuffle_buffer": run.data.shuffle_buffer,
        "steps_per_epoch": run.data.steps_per_epoch,
        "corpus_mean_target_tokens": round(float(np.mean(sample_lengths)), 2),
        "corpus_longest_target_tokens": int(np.max(sample_lengths)),
        # Means per sentence (real target tokens ÷ sentences), not per batch: short batches hold more sentences.
        "tenths": [{"mean_target_tokens": round(float(t[:, 0].sum() / t[:, 1].sum()), 2),
                    "padding": round(float(1 - t[:, 0].sum() / t[:, 2].sum()), 4),
                    "widest_batch": int(t[:, 3].max())} for t in tenths],
        "padding": round(float(1 - per_batch[:, 0].sum() / per_batch[:, 2].sum()), 4),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=ANKI)
    parser.add_argument("--batches", type=int, default=1000)
    parser.add_argument("--shuffle-buffer", type=int, help="override the config's shuffle buffer")
    args = parser.parse_args()
    flags = {"shuffle_buffer": args.shuffle_buffer} if args.shuffle_buffer else {}
    result = measure(args.dataset, args.batches, **flags)
    print(json.dumps(result, indent=1))
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as file:
        json.dump(result, file, indent=1)


if __name__ == "__main__":
    main()
