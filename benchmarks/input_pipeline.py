"""The training input pipeline alone: real target tokens per second per CPU core, and how much of a batch is padding.

    python -m benchmarks.input_pipeline [--tsv ../shared/data/tatoeba-eng-fra.tsv] [--threads 1]

Runs what `training.train` runs before the model sees a batch, two ways:

* streamed (a corpus of any size): `pipeline.training_stream` over
  `pipeline.examples_from_files` — lines read from the file, parsed and
  tokenised in the graph every pass, shuffled in the bounded buffer,
  bucketed and batched (the config's token budget or batch size);
* in memory (one small TSV, the dates): pairs tokenised once
  (`pipeline.encode_pairs`), then the same stream over
  `pipeline.examples_in_memory`; the one-off tokenisation is counted
  once per pass, as if it were streamed.

on the shared Tatoeba pairs read French → English with the TSV config's
SentencePiece vocabularies, and on generated dates (written to a TSV for
the streamed figure) with the dates config's characters. Tokenizer
training is not timed (once per run, from a sample). tf.data runs on
`--threads` threads (its private thread pool), so the figure is per core
with the default 1.

Counts, as users count: real target tokens are the labels that are not
padding (what the loss is averaged over); the padding fraction is padded
label positions ÷ all label positions of the batches; `cores_for` is how
many cores at this rate feed the base model's 742,000 real target tokens/s
on an H200 (benchmarks/README.md). Results go to
`benchmarks/results/input_pipeline.json`.
"""

import argparse
import json
import os
import sys
import tempfile
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


H200_TOKENS_PER_S = 742_000  # the base model's training rate on one H200, real target tokens (benchmarks/README.md)


def batching_of(config):
    return {"batch_tokens": config.batch_tokens} if config.batch_tokens else {"batch_size": config.batch_size}


def count(dataset):
    """Iterates `dataset`; real and padded label positions, batches and seconds."""
    real = padded = batches = 0
    started = time.perf_counter()
    for _, labels in dataset:
        labels = labels.numpy()
        nonzero = int(np.count_nonzero(labels))
        real, padded, batches = real + nonzero, padded + labels.size - nonzero, batches + 1
    return real, padded, batches, time.perf_counter() - started


def summary(real, padded, batches, seconds, threads, extra=None):
    rate = real / seconds / threads
    return {
        "batches": batches, "real_target_tokens": real, "padding_fraction": round(padded / max(real + padded, 1), 4),
        "seconds": round(seconds, 3), "real_target_tokens_per_s_per_thread": round(rate, 1),
        "cores_for_h200": round(H200_TOKENS_PER_S / rate, 1), **(extra or {}),
    }


def measure(name, path, reverse, make_tokenizers, config, threads, epochs, shuffle_buffer=16384):
    """Both pipelines over the pairs of `path` for about `epochs` passes each."""
    sources, targets, _ = tsv.read_pairs(path, reverse=reverse)
    source_tokenizer, target_tokenizer = make_tokenizers(sources, targets)  # not timed: once per run
    tokenizers, max_length, batching = (source_tokenizer, target_tokenizer), config.max_length, batching_of(config)
    started = time.perf_counter()
    source_ids, target_ids, _ = pipeline.encode_pairs(sources, targets, *tokenizers, max_length)
    tokenize_seconds = time.perf_counter() - started
    steps, per_step = pipeline.steps_for_one_pass(source_ids.row_lengths().numpy(), target_ids.row_lengths().numpy(),
                                                  len(sources), max_length, **batching)
    examples = pipeline.examples_in_memory(source_ids, target_ids, max_length)
    in_memory = with_threads(pipeline.training_stream(lambda offset: examples.skip(offset), max_length, steps,
                                                      int(steps * per_step), epochs=epochs, **batching), threads)
    real, padded, batches, seconds = count(in_memory)
    results = {"pairs": len(sources), "threads": threads, "epochs": epochs, "steps_per_epoch": steps, **batching,
               "in_memory": summary(real, padded, batches, seconds + tokenize_seconds * epochs, threads,
                                    {"tokenize_once_seconds": round(tokenize_seconds, 3)})}
    streamed = with_threads(pipeline.training_stream(
        lambda offset: pipeline.examples_from_files([path], *tokenizers, max_length, reverse=reverse, skip_lines=offset),
        max_length, steps, int(steps * per_step), epochs=epochs, shuffle_buffer=shuffle_buffer, **batching), threads)
    results["streamed"] = summary(*count(streamed), threads, {"shuffle_buffer": shuffle_buffer})
    print(f"{name}: {json.dumps(results)}", flush=True)
    return results


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
        results["sentencepiece"] = measure(
            "sentencepiece (Tatoeba fr→en)", args.tsv, True,
            lambda s, t: (SentencePieceTokenizer.train(s, args.vocab_size),
                          SentencePieceTokenizer.train(t, args.vocab_size)),
            CONFIGS["tsv"], args.threads, args.epochs,
        )
    if args.dates:
        config = CONFIGS["dates"]
        with tempfile.TemporaryDirectory(prefix="dates-") as directory:
            path = os.path.join(directory, "dates.tsv")
            with open(path, "w", encoding="utf-8") as file:
                file.writelines(f"{source}\t{target}\n" for source, target in dates.generate(args.dates) if target)
            results["characters"] = measure(
                "characters (dates)", path, False,
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
