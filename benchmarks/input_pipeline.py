"""The training input pipeline alone: real target tokens per second per CPU core, and how much of a batch is padding.

    python -m benchmarks.input_pipeline [--tsv ../shared/data/tatoeba-eng-fra.tsv] [--threads 1]

Runs what `training.train` runs before the model sees a batch, on the
shared Tatoeba pairs read French → English with the TSV config's
SentencePiece vocabularies, and on generated dates with the dates
config's characters: read and parse the pairs (`training.tsv`,
`training.dates`), tokenise them in the graph (`pipeline.encode_pairs`),
then bucket, pad and batch them as training does (`pipeline.make_dataset`,
shuffled, the config's batch size), iterated for `--epochs` epochs.
Tokenizer training is not timed (it happens once per run, from a sample).
tf.data runs on `--threads` threads (its private thread pool), so the
figure is per core with the default 1.

Counts, as users count: real target tokens are the labels that are not
padding (what the loss is averaged over); the padding fraction is padded
label positions ÷ all label positions of the batches. The figures are
those of today's pipeline, which holds the corpus in memory (issue #16
replaces it with a streamed one). Results go to
`benchmarks/results/input_pipeline.json`.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

from tf_transformer.tokenizers import CharacterTokenizer, SentencePieceTokenizer
from training import dates, pipeline, tsv
from training.configs import CONFIGS

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "input_pipeline.json")
SHARED_TATOEBA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                              "tatoeba-eng-fra.tsv")


def with_threads(dataset, threads):
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def measure(name, read, make_tokenizers, config, threads, epochs):
    """Times read + parse, tokenise, and `epochs` passes of bucketing and batching; counts real and padded labels."""
    started = time.perf_counter()
    sources, targets = read()
    read_seconds = time.perf_counter() - started
    source_tokenizer, target_tokenizer = make_tokenizers(sources, targets)  # not timed: once per run
    started = time.perf_counter()
    source_ids, target_ids, _ = pipeline.encode_pairs(sources, targets, source_tokenizer, target_tokenizer,
                                                      config.max_length)
    tokenize_seconds = time.perf_counter() - started
    dataset = with_threads(
        pipeline.make_dataset(source_ids, target_ids, config.batch_size, config.max_length, shuffle=True), threads
    )
    real = padded = batches = 0
    started = time.perf_counter()
    for _ in range(epochs):
        for _, labels in dataset:
            labels = labels.numpy()
            real += int(np.count_nonzero(labels))
            padded += labels.size - int(np.count_nonzero(labels))
            batches += 1
    batch_seconds = time.perf_counter() - started
    total = read_seconds + tokenize_seconds * epochs + batch_seconds  # a real epoch reads and tokenises once
    result = {
        "pairs": len(sources),
        "threads": threads,
        "epochs": epochs,
        "batches": batches,
        "real_target_tokens": real,
        "padding_fraction": round(padded / max(real + padded, 1), 4),
        "seconds": {"read_and_parse": round(read_seconds, 3), "tokenize": round(tokenize_seconds, 3),
                    "bucket_and_batch": round(batch_seconds, 3)},
        # Read and tokenise once per epoch, as a streamed corpus would.
        "real_target_tokens_per_s_per_thread": round(real / total / threads, 1),
        "bucket_and_batch_only_tokens_per_s": round(real / batch_seconds, 1),
    }
    print(f"{name}: {json.dumps(result)}", flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.input_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--tsv", default=SHARED_TATOEBA, help="source<TAB>target pairs (read reversed, as fr→en)")
    parser.add_argument("--dates", type=int, default=20000, help="generated dates pairs ('0' to skip)")
    parser.add_argument("--threads", type=int, default=1, help="tf.data threads (1: the figure per core)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--vocab-size", type=int, default=CONFIGS["tsv"].vocab_size, help="SentencePiece pieces per side")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    results = {"cpu_cores": os.cpu_count(), "tensorflow": tf.__version__}

    if args.tsv:
        config = CONFIGS["tsv"]

        def read_tsv():
            sources, targets, _ = tsv.read_pairs(args.tsv, reverse=True)
            return sources, targets

        results["sentencepiece"] = measure(
            "sentencepiece (Tatoeba fr→en)", read_tsv,
            lambda s, t: (SentencePieceTokenizer.train(s, args.vocab_size),
                          SentencePieceTokenizer.train(t, args.vocab_size)),
            config, args.threads, args.epochs,
        )
    if args.dates:
        config = CONFIGS["dates"]

        def read_dates():
            pairs = dates.generate(args.dates)
            return [p[0] for p in pairs], [p[1] for p in pairs]

        results["characters"] = measure(
            "characters (dates)", read_dates,
            lambda s, t: (CharacterTokenizer.train(s, fold=config.fold_source), CharacterTokenizer.train(t)),
            config, args.threads, args.epochs,
        )
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    print(f"Wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
