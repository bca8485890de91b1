"""Training speed on real batches: the token-budget pipeline's batches, written here, replayed anywhere.

    python -m benchmarks.real_batches write [--batches 200] [--batch-tokens 12288]   # here (needs TensorFlow)
    KERAS_BACKEND=jax python -m benchmarks.real_batches replay benchmarks/results/real_batches.npz [--gpu]

`write` builds a realistic corpus — the shared Tatoeba pairs read
French → English, numbered (" (n)" after both sides, so repeats are
distinct sentences) and repeated to `--pairs` lines in gzip shards —
learns SentencePiece vocabularies from a sample as training does, and
keeps `--batches` batches of the streamed token-budget pipeline
(`pipeline.training_stream` over `pipeline.examples_from_files`: the same
shapes, padding and order a run gets) in one `.npz`. The GPU machine has
JAX but no TensorFlow: the file is what travels.

`replay` trains each model (ours, KerasHub's blocks, the
`keras.layers.MultiHeadAttention` model of `benchmarks.peers`; same
widths, the file's vocabulary) on those batches with `model.fit`, in
rounds interleaved across the models after one warm-up pass that
compiles every shape. It reports real (non-pad) target tokens/s, all
target positions/s (what a dense synthetic figure counts), the padding
fraction and model FLOPs utilisation of the matmuls that ran (`mfu`) and
of the real tokens only (`mfu_real_tokens`, the former × the real
fraction). The peers' loss is Keras's unmasked cross-entropy, as in
`benchmarks.run`: the same work for every model. Results go to
`benchmarks/results/real_batches.json`.
"""

import argparse
import gzip
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_TATOEBA = os.path.join(ROOT, "..", "shared", "data", "tatoeba-eng-fra.tsv")
NPZ = os.path.join(ROOT, "benchmarks", "results", "real_batches.npz")
RESULTS = os.path.join(ROOT, "benchmarks", "results", "real_batches.json")


def numbered_corpus(directory, pairs, source=SHARED_TATOEBA, shard_pairs=100_000):
    """The source file's pairs numbered and repeated to `pairs` lines, in gzip shards."""
    with open(source, encoding="utf-8") as file:
        rows = [line.rstrip("\n").split("\t")[:2] for line in file if line.count("\t") >= 1]
    os.makedirs(directory, exist_ok=True)
    for shard, start in enumerate(range(0, pairs, shard_pairs)):
        with gzip.open(os.path.join(directory, f"part-{shard:04d}.tsv.gz"), "wt", encoding="utf-8", compresslevel=1) as out:
            for n in range(start, min(start + shard_pairs, pairs)):
                english, french = rows[n % len(rows)]
                out.write(f"{english} ({n})\t{french} ({n})\n")
    return directory


def write(batches=200, batch_tokens=12288, max_length=128, pairs=400_000, vocab_size=8000, sample=100_000, seed=0,
          output=NPZ, log=print):
    """Writes `batches` streamed token-budget batches to `output`; returns its summary."""
    import tensorflow as tf  # noqa: F401  (the pipeline's ops)

    from tf_transformer.tokenizers import SentencePieceTokenizer
    from training import pipeline, tsv

    with tempfile.TemporaryDirectory(prefix="real-batches-") as work:
        files = tsv.corpus_files(numbered_corpus(os.path.join(work, "corpus"), pairs))
        scan = tsv.scan(files, reverse=True, sample_size=sample, seed=seed, log=log)
        sources, targets = scan["sample"]
        tokenizers = (SentencePieceTokenizer.train(sources, vocab_size), SentencePieceTokenizer.train(targets, vocab_size))
        stream = pipeline.training_stream(
            lambda offset: pipeline.examples_from_files(files, *tokenizers, max_length, reverse=True, seed=seed,
                                                        skip_lines=offset),
            max_length, steps_per_epoch=batches, examples_per_epoch=pairs, epochs=1, shuffle_buffer=16384, seed=seed,
            batch_tokens=batch_tokens)
        arrays = {}
        for index, (inputs, labels) in enumerate(stream):
            arrays[f"encoder_tokens_{index:04d}"] = inputs["encoder_tokens"].numpy()
            arrays[f"decoder_tokens_{index:04d}"] = inputs["decoder_tokens"].numpy()
            arrays[f"labels_{index:04d}"] = labels.numpy()
    labels = [v for k, v in arrays.items() if k.startswith("labels_")]
    summary = {
        "batches": len(labels), "batch_tokens": batch_tokens, "max_length": max_length, "pairs": pairs,
        "vocab_size": max(t.vocab_size for t in tokenizers),
        "real_target_tokens": int(sum(np.count_nonzero(l) for l in labels)),
        "target_positions": int(sum(l.size for l in labels)),
        "shapes": sorted({str(l.shape) for l in labels}),
    }
    summary["padding_fraction"] = round(1 - summary["real_target_tokens"] / summary["target_positions"], 4)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    np.savez_compressed(output, summary=json.dumps(summary), **arrays)
    log(f"Wrote {output} ({os.path.getsize(output) / 2**20:.1f} MiB): {json.dumps(summary)}")
    return summary


def load(path):
    """`(summary, [(inputs, labels), ...])` of a file `write` made."""
    with np.load(path) as data:
        summary = json.loads(str(data["summary"]))
        batches = [
            ({"encoder_tokens": data[f"encoder_tokens_{i:04d}"], "decoder_tokens": data[f"decoder_tokens_{i:04d}"]},
             data[f"labels_{i:04d}"])
            for i in range(summary["batches"])
        ]
    return summary, batches


def batch_flops(size, inputs):
    """`benchmarks.run.training_flops` of one batch's own shape."""
    from benchmarks import run

    rows, length = inputs["encoder_tokens"].shape
    return run.training_flops({**size, "batch": rows, "length": length})


def replay(path, gpu=False, names=None, rounds=3, policy=None, log=print):
    """Each model trained on the file's batches; real target tokens/s, MFU and ratios to KerasHub's best."""
    import keras

    from benchmarks import peers, run

    summary, batches = load(path)
    size = dict(run.GPU_SIZE if gpu else run.CPU_SIZE)
    size.update(vocab=summary["vocab_size"], length=summary["max_length"], positions=summary["max_length"] + 1)
    policy = policy or ("mixed_bfloat16" if gpu else "float32")
    keras.config.set_dtype_policy(policy)
    names = names or list(peers.BUILDERS)
    jit = True
    real = sum(int(np.count_nonzero(labels)) for _, labels in batches[1:])  # StepTimer times steps 2..n
    positions = sum(labels.size for _, labels in batches[1:])
    flops = sum(batch_flops(size, inputs) for inputs, _ in batches[1:])
    peak = run.matmul_flops_per_second(keras.config.dtype_policy().compute_dtype)
    shapes = {}
    for inputs, labels in batches:
        shapes.setdefault(inputs["encoder_tokens"].shape, (inputs, labels))

    def feed(items):
        while True:  # Keras's generator adapter may read one batch ahead
            yield from items

    models = {}
    for name in names:
        model = run.compiled_peer(name, size, jit)
        model.fit(feed(list(shapes.values())), steps_per_epoch=len(shapes), epochs=1, verbose=0,
                  shuffle=False)  # compiles each shape
        models[name] = model
    counts = peers.check_same_size(models)
    rates = {name: [] for name in names}
    timer = run.StepTimer()
    for _ in range(rounds):
        for name in names:
            models[name].fit(feed(batches), steps_per_epoch=len(batches), epochs=1, verbose=0, callbacks=[timer],
                             shuffle=False)
            seconds = (len(timer.ends) - 1) / timer.steps_per_second()
            rates[name].append(real / seconds)
    reference = run.best_keras_hub(rates)
    rows = run.summarise(rates, reference)
    for name, row in rows.items():
        seconds = real / row["median"]
        row.update(positions_per_second=positions / seconds, mfu=flops / seconds / peak,
                   mfu_real_tokens=flops / seconds / peak * real / positions, parameters=counts[name])
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "backend": keras.backend.backend(), "policy": policy,
              "size": size, "batches": summary, "matmul_flops_per_second": peak, "training": rows,
              "training_reference": reference}
    run.print_table(f"Training on {len(batches)} real batches ({summary['padding_fraction']:.1%} padding): "
                    "real target tokens/s", rows, "tokens/s", reference)
    log("  " + ", ".join(f"{n}: MFU {r['mfu']:.1%} ({r['mfu_real_tokens']:.1%} on real tokens)" for n, r in rows.items()))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_batches", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    writer = commands.add_parser("write", help="stream the pipeline's batches into an .npz (needs TensorFlow)")
    writer.add_argument("--batches", type=int, default=200)
    writer.add_argument("--batch-tokens", type=int, default=12288)
    writer.add_argument("--max-length", type=int, default=128)
    writer.add_argument("--pairs", type=int, default=400_000)
    writer.add_argument("--vocab-size", type=int, default=8000)
    writer.add_argument("--output", default=NPZ)
    player = commands.add_parser("replay", help="train each model on the file's batches (any backend)")
    player.add_argument("path", nargs="?", default=NPZ)
    player.add_argument("--gpu", action="store_true", help="the base size, mixed_bfloat16")
    player.add_argument("--models", nargs="*", default=None)
    player.add_argument("--rounds", type=int, default=3)
    player.add_argument("--policy", default=None)
    player.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    if args.command == "write":
        return write(args.batches, args.batch_tokens, args.max_length, args.pairs, args.vocab_size, output=args.output)
    report = replay(args.path, gpu=args.gpu, names=args.models, rounds=args.rounds, policy=args.policy)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2, default=float)
    print(f"Wrote {args.output}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
