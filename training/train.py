"""The command line of a training run: flags → `training.run.train_and_evaluate`.

    python -m training.train                      # the embedded dates dataset
    python -m training.train --dataset ../shared/data/tatoeba-eng-fra.tsv --reverse

Trains a Transformer, evaluates it on held-out data through its reloaded
export and exports it for TF Serving. Run the same command again after a
crash or a kill: it resumes from the backup in `--work-dir`.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

from training import configs  # noqa: E402
from training.configs import CONFIGS  # noqa: E402
from training.run import StorageError, storage_problem, train_and_evaluate  # noqa: E402


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def probability(text):
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a probability between 0 and 1, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train an encoder-decoder Transformer with model.fit, evaluate it and export it "
        "to EXPORT_DIR/<version>/ for TF Serving.",
    )
    parser.add_argument("--dataset", default="dates", help="'dates' (embedded, default) or a source<TAB>target .tsv file")
    parser.add_argument("--reverse", action="store_true", help="read the TSV columns as target<TAB>source")
    parser.add_argument("--config", choices=sorted(CONFIGS),
                        help="named training config (default: 'dates', or for a TSV corpus 'tsv' under "
                             f"{configs.MEDIUM_CORPUS_PAIRS:,} training pairs and 'tsv-medium' from there)")
    parser.add_argument("--preset", choices=["tiny", "small", "base", "big"], help="model size (TransformerConfig preset)")
    parser.add_argument("--epochs", type=positive_int, help="training epochs")
    parser.add_argument("--batch-size", type=positive_int, help="examples per batch (global, across replicas)")
    parser.add_argument("--train-size", type=positive_int, help="use at most this many training examples")
    parser.add_argument("--vocab-size", type=positive_int, help="subword vocabulary size per side (sentencepiece)")
    parser.add_argument("--max-length", type=positive_int,
                        help="tokens per side: longer training pairs are dropped, longer inputs truncated by the export")
    parser.add_argument("--warmup-steps", type=positive_int, help="warm-up steps of the learning-rate schedule")
    parser.add_argument("--learning-rate-scale", type=float, help="factor on the paper's learning-rate schedule")
    parser.add_argument("--export-dir", help="export to EXPORT_DIR/<version>/ (default: saved_models/<dataset name>)")
    parser.add_argument("--work-dir", help="checkpoints, TensorBoard logs and the resume backup (default: EXPORT_DIR.work)")
    parser.add_argument("--strategy", default="auto", choices=["auto", "one-device", "mirrored", "multi-worker"],
                        help="tf.distribute strategy (auto: mirrored when several GPUs are visible)")
    parser.add_argument("--mixed-precision", choices=configs.PRECISIONS,
                        help="off: float32; bfloat16, float16: Keras's mixed policies (float16 adds loss scaling; every "
                             "softmax stays float32); bfloat16-matmuls: training steps multiply by the weights in "
                             "bfloat16, the rest float32, fast on CPUs with bfloat16 units (default: the config's)")
    parser.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--export-xla", action="store_true",
                        help="compile the exported decoding loops with XLA (faster, most on small models; "
                             "TF Serving on CPU then needs --xla_cpu_compilation_enabled=true)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data splits, shuffling and initialisation")
    parser.add_argument("--validation", help="held-out pairs (.tsv or .tsv.gz) for validation, instead of carving them")
    parser.add_argument("--test", help="held-out pairs (.tsv or .tsv.gz) for the final figures, instead of carving them")
    parser.add_argument("--batch-tokens", type=positive_int,
                        help="batches of about N tokens per side, padding included (the paper: 25000)")
    parser.add_argument("--steps-per-epoch", type=positive_int,
                        help="an epoch is N steps of the endless shuffled stream (default: about one pass)")
    parser.add_argument("--tokenizer-sample", type=positive_int, default=1_000_000,
                        help="subword vocabularies are learned from a seeded sample of N training pairs")
    parser.add_argument("--shuffle-buffer", type=positive_int,
                        help="examples shuffled together when a corpus is streamed from files (default: the config's)")
    parser.add_argument("--name-swap", type=probability,
                        help="probability that a training pair's copied names become random pseudo-names, on both "
                             "sides, every pass (default: the config's; pipeline.swap_names)")
    parser.add_argument("--backup-every", type=positive_int,
                        help="a resume backup every N steps (default: every 3 minutes of training)")
    parser.add_argument("--average-last", type=positive_int,
                        help="average the last K epochs' weights before evaluation and export (the paper: 5)")
    parser.add_argument("--select-by", choices=["loss", "bleu"],
                        help="the epoch kept: lowest validation loss, or best validation BLEU (exact match on dates)")
    return parser


def main(argv=None):
    """The command line: flags parsed, then `train_and_evaluate`; a full disk or an I/O failure is one line and exit 1."""
    options = vars(build_parser().parse_args(argv))
    try:
        return train_and_evaluate(**options)
    except (OSError, tf.errors.OpError, StorageError) as error:
        problem = str(error) if isinstance(error, StorageError) else storage_problem(error)
        if problem is None:
            raise
        print(f"Error: {problem}. The previous backup and every published version are intact; "
              "run the same command again to resume once that is mended.", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # os._exit: h5py, interrupted by a full disk mid-write, can crash the interpreter's
        # normal shutdown (a segfault, exit 139) after the error was reported.
        os._exit(1)


if __name__ == "__main__":
    main()
