"""Train a Transformer, evaluate it on held-out data and export it for TF Serving.

    python -m training.train                      # the embedded dates dataset
    python -m training.train --dataset ../shared/data/tatoeba-eng-fra.tsv --reverse

Run the same command again after a crash or a kill: it resumes from the
backup in `--work-dir`.
"""

import argparse
import dataclasses
import json
import os
import sys
import time
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_transformer  # noqa: E402
from tf_transformer import losses, metrics, schedules  # noqa: E402
from tf_transformer.tokenizers import CharacterTokenizer, SentencePieceTokenizer, load_tokenizers, save_tokenizers  # noqa: E402
from training import callbacks as callbacks_lib  # noqa: E402
from training import dates, distributed, evaluate, pipeline, tsv  # noqa: E402
from training.configs import CONFIGS  # noqa: E402

DESCRIPTIONS = {
    "dates": "A human-readable date (en, fr, es, de, it, pt, nl; any case, spacing and commas; numeric dates "
    "day-first, two-digit years 1950-2049) -> ISO YYYY-MM-DD. Text that is not a date, including partial and "
    "impossible dates (31 April), gets the empty string. Blank input gets the empty string.",
    "text": "Source-language text -> its translation. Inputs longer than max_input_tokens are truncated; "
    "blank input gets the empty string.",
}

SAMPLES = {
    "dates": [
        "25 septembre 2009", "Tuesday, June 25, 2009", "25/06/2009", "25.06.09", "3 de abril de 1975",
        # As people type them, and texts that are not dates (answered "").
        "25 SEPTEMBRE 2009", "  25 septembre 2009  ", "tuesday june 25 2009", "2009/09/25", "June 25, 09",
        "xxxxxxxxxxxxxxxx", "Jane visite l'Afrique en septembre.", "31 février 2009", "juin 2009",
    ],
    "text": [
        "Jane visite l'Afrique en septembre.",
        "Je t'aime.",
        "Où est la gare ?",
        "Il fait beau aujourd'hui.",
        "Nous avons besoin d'aide.",
    ],
}


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description="Train an encoder-decoder Transformer with model.fit, evaluate it and export it "
        "to EXPORT_DIR/<version>/ for TF Serving.",
    )
    parser.add_argument("--dataset", default="dates", help="'dates' (embedded, default) or a source<TAB>target .tsv file")
    parser.add_argument("--reverse", action="store_true", help="read the TSV columns as target<TAB>source")
    parser.add_argument("--config", choices=sorted(CONFIGS), help="named training config (default: 'dates' or 'tsv' by dataset)")
    parser.add_argument("--preset", choices=["tiny", "small", "base", "big"], help="model size (TransformerConfig preset)")
    parser.add_argument("--epochs", type=positive_int, help="training epochs")
    parser.add_argument("--batch-size", type=positive_int, help="examples per batch (global, across replicas)")
    parser.add_argument("--train-size", type=positive_int, help="use at most this many training examples")
    parser.add_argument("--vocab-size", type=positive_int, help="subword vocabulary size per side (sentencepiece)")
    parser.add_argument("--warmup-steps", type=positive_int, help="warm-up steps of the learning-rate schedule")
    parser.add_argument("--learning-rate-scale", type=float, help="factor on the paper's learning-rate schedule")
    parser.add_argument("--export-dir", help="export to EXPORT_DIR/<version>/ (default: saved_models/<dataset name>)")
    parser.add_argument("--work-dir", help="checkpoints, TensorBoard logs and the resume backup (default: EXPORT_DIR.work)")
    parser.add_argument("--strategy", default="auto", choices=["auto", "one-device", "mirrored", "multi-worker"],
                        help="tf.distribute strategy (auto: mirrored when several GPUs are visible)")
    parser.add_argument("--mixed-precision", default="off", choices=["off", "bfloat16", "float16"],
                        help="compute dtype (float16 adds loss scaling); every softmax stays float32")
    parser.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--seed", type=int, default=0, help="seed of data splits, shuffling and initialisation")
    return parser


def resolve(args):
    """The training config after the command-line overrides, and the dataset's name."""
    is_dates = args.dataset == "dates"
    if not is_dates and not args.dataset.endswith((".tsv", ".txt")) and not os.path.isfile(args.dataset):
        raise SystemExit(f"Unknown dataset {args.dataset!r}: use 'dates' or the path of a .tsv file.")
    config = CONFIGS[args.config or ("dates" if is_dates else "tsv")]
    overrides = {
        "preset": args.preset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "train_size": args.train_size,
        "vocab_size": args.vocab_size,
        "warmup_steps": args.warmup_steps,
        "learning_rate_scale": args.learning_rate_scale,
    }
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    name = "dates" if is_dates else os.path.splitext(os.path.basename(args.dataset))[0] + ("-reversed" if args.reverse else "")
    return config, name


# Sentences the dates model never sees, to measure how it refuses text that is not a date.
SHARED_TATOEBA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                              "tatoeba-eng-fra.tsv")


def load_splits(args, config):
    if args.dataset == "dates":
        return dates.load(num_examples=(config.train_size or 48000) * 21 // 20, seed=args.seed,
                          tatoeba_path=SHARED_TATOEBA)
    try:
        return tsv.load(args.dataset, reverse=args.reverse, seed=args.seed, train_size=config.train_size or None)
    except tsv.DatasetError as error:
        raise SystemExit(str(error)) from None


def make_tokenizers(config, splits, work_dir):
    """Learned from the training split; reused from the work dir when resuming."""
    saved = os.path.join(work_dir, "tokenizers")
    if os.path.exists(os.path.join(saved, "tokenizers.json")):
        return load_tokenizers(saved)
    sources, targets = splits["train"]
    if config.tokenizer == "character":
        source = CharacterTokenizer.train(sources, fold=config.fold_source)
        target = CharacterTokenizer.train([t for t in targets if t])
    elif config.shared_vocabulary:
        source = target = SentencePieceTokenizer.train(sources + targets, config.vocab_size)
    else:
        source = SentencePieceTokenizer.train(sources, config.vocab_size)
        target = SentencePieceTokenizer.train(targets, config.vocab_size)
    save_tokenizers(saved, source, target)
    return source, target


def make_strategy(name):
    """The tf.distribute strategy; `auto` is mirrored over several GPUs, else Keras's default."""
    if name == "multi-worker":
        return distributed.make_strategy()  # first: it must exist before TensorFlow runs any op
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()  # the default: no distribution wrapper around the data


def fingerprint(splits, tokenizers):
    """A checksum of the training data and vocabularies, compared across workers."""
    text = json.dumps([splits["train"][0][:100], splits["train"][1][-100:], len(splits["train"][0])])
    for tokenizer in tokenizers:
        text += "\n".join(tokenizer.id_to_token(range(tokenizer.vocab_size)))
    return zlib.crc32(text.encode("utf-8"))


def train_multi_worker(model, strategy, config, encoded, args, work_dir):
    """`model.fit`'s part under MultiWorkerMirroredStrategy (training.distributed says why)."""

    def make_dataset(split, input_context):
        return pipeline.make_dataset(
            *encoded[split][:2], config.batch_size, config.max_length,
            shuffle=split == "train", seed=args.seed, input_context=input_context,
        )

    return distributed.fit(
        model, strategy, make_dataset,
        epochs=config.epochs,
        steps_per_epoch=distributed.steps(int(encoded["train"][0].nrows()), config.batch_size),
        validation_steps=distributed.steps(int(encoded["validation"][0].nrows()), config.batch_size),
        work_dir=work_dir,
        best_weights=os.path.join(work_dir, "best.weights.h5"),
        early_stopping_patience=config.early_stopping_patience,
        jit_compile=args.jit_compile,
    )


def translate_all(translate, texts, batch_size=256):
    """`translate` (a Translator signature function) over `texts` in batches, as strings."""
    outputs = []
    for start in range(0, len(texts), batch_size):
        batch = tf.constant(texts[start : start + batch_size])
        outputs += [t.decode("utf-8") for t in translate(batch)["translation"].numpy()]
    return outputs


def _examples(sources, references, translations, count):
    return [{"source": s, "reference": r, "translation": t} for s, r, t in zip(sources, references, translations)][:count]


class ExportEvaluation:
    """Held-out figures of an export, taken through the export reloaded in a fresh process.

    `check` (given to `export`, which calls it before publishing) translates
    the test split with the staged SavedModel in a process that cannot
    import this project (`training/reloaded_export.py`), and a probe — the
    samples and the first test sources — with both signatures through both
    loaders (`tf.saved_model.load` and TensorFlow's session loader, TF
    Serving's path). The probe must give the training process's strings
    exactly, or nothing is published. Why: figures taken inside the
    training process once hid an export that translated garbage.
    """

    PROBE_SIZE = 32

    def __init__(self, translator, kind, samples, test, beam, started, held_out=None):
        self.kind, self.samples, self.beam, self.started = kind, samples, beam, started
        self.test_sources, self.test_references = test
        self.held_out = held_out or {}  # name → (sources, references), greedy only
        self.probe = list(samples) + list(self.test_sources[: self.PROBE_SIZE])
        self.signatures = {
            tf_transformer.export.SERVING_KEY: translator.translate,
            tf_transformer.export.BEAM_KEY: translator.translate_beam,
        }
        self.in_process = {name: translate_all(function, self.probe) for name, function in self.signatures.items()}
        self.metrics = self.sample_outputs = None

    def check(self, saved_model_dir):
        greedy, beam = tf_transformer.export.SERVING_KEY, tf_transformer.export.BEAM_KEY
        held_out_sources = [source for sources, _ in self.held_out.values() for source in sources]
        tests = {greedy: list(self.test_sources) + held_out_sources, beam: self.test_sources if self.beam else []}
        request = {
            "saved_model_load": {name: self.probe + list(tests[name]) for name in self.signatures},
            "session_loader": {name: self.probe for name in self.signatures},
        }
        result = evaluate.translate_reloaded(saved_model_dir, request)
        n = len(self.probe)
        for loader, outputs in result.items():
            for name, expected in self.in_process.items():
                mismatches = [(t, e, o) for t, e, o in zip(self.probe, expected, outputs[name][:n]) if e != o]
                if mismatches:
                    text, expected_output, output = mismatches[0]
                    raise RuntimeError(
                        f"The export translates differently once reloaded ({loader}, {name}): {len(mismatches)} "
                        f"of {n} probes differ, e.g. {text!r} -> {output!r} instead of {expected_output!r}. "
                        "Nothing was published."
                    )
        reloaded = result["saved_model_load"]
        test_outputs = reloaded[greedy][n : n + len(self.test_sources)]
        held_out = evaluate.split_outputs(self.held_out, reloaded[greedy][n + len(self.test_sources) :])
        self.metrics = evaluate.evaluate(self.kind, test_outputs, self.test_references)
        if held_out:
            self.metrics["held_out"] = evaluate.held_out_sets(held_out)
        if self.beam:
            self.metrics["beam_search"] = evaluate.evaluate(self.kind, reloaded[beam][n:], self.test_references)
        self.metrics["train_seconds"] = round(time.time() - self.started, 1)
        self.sample_outputs = reloaded[greedy][: len(self.samples)]
        examples = _examples(self.test_sources, self.test_references, test_outputs, 10)
        held_out_examples = {name: _examples(*split, 5) for name, split in held_out.items()}
        return {
            "evaluation.json": {
                "measured": "through this export reloaded in a fresh process that cannot import tf_transformer "
                "(tf.saved_model.load); the session loader (TF Serving's path) and the training process gave the "
                f"same strings on {n} probes with both signatures",
                "metrics": self.metrics,
                "test_examples": examples,
                "held_out_examples": held_out_examples,
                "samples": dict(zip(self.samples, self.sample_outputs)),
                # The training process's own strings, against which the reloaded export was checked.
                "in_process_probe": {"texts": self.probe, **self.in_process},
            }
        }


def main(argv=None):
    """The command line: flags parsed, then `train_and_evaluate`."""
    return train_and_evaluate(**vars(build_parser().parse_args(argv)))


def train_and_evaluate(**options):
    """Trains, evaluates through the reloaded export and exports; what the command line runs.

    Takes the command line's options as keyword arguments, named as the
    flags with underscores (`dataset="dates"`, `export_dir=...`,
    `jit_compile=True`, ...; unnamed ones keep the flags' defaults), so a
    script or a test runs exactly the command's code in its own process.

    Returns:
        dict with `"export"`: the path of the exported version, and
        `"metrics"`: the held-out figures measured through it (None on a
        multi-worker worker that is not the chief).

    Example (a tiny run, about a minute on a laptop CPU):

        result = train_and_evaluate(preset="tiny", epochs=1, train_size=600, export_dir="/tmp/dates")
    """
    args = build_parser().parse_args([])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise TypeError(f"Unknown option(s) of train_and_evaluate: {', '.join(unknown)} (see `python -m training.train --help`)")
    for option, value in options.items():
        setattr(args, option, value)
    config, name = resolve(args)
    strategy = make_strategy(args.strategy)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    export_dir = args.export_dir or os.path.join("saved_models", name)
    work_dir = args.work_dir or export_dir.rstrip("/") + ".work"
    # Multi-worker: only the chief writes work_dir; the others write a twin they delete.
    own_work_dir = distributed.write_path(work_dir, strategy)
    os.makedirs(own_work_dir, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    if args.mixed_precision != "off":
        keras.config.set_dtype_policy(f"mixed_{args.mixed_precision}")
    started = time.time()

    splits = load_splits(args, config)
    source_tokenizer, target_tokenizer = make_tokenizers(config, splits, own_work_dir)
    if multi_worker:
        distributed.check_same_on_every_worker(
            strategy, fingerprint(splits, (source_tokenizer, target_tokenizer)), "data or vocabularies"
        )
    encoded = {
        split: pipeline.encode_pairs(*splits[split], source_tokenizer, target_tokenizer, config.max_length)
        for split in ("train", "validation")
    }
    print(
        f"Data: {name}, {len(splits['train'][0])} train / {len(splits['validation'][0])} validation / "
        f"{len(splits['test'][0])} test pairs ({encoded['train'][2]} too long for max_length "
        f"{config.max_length}, dropped); vocabularies {source_tokenizer.vocab_size} / {target_tokenizer.vocab_size}",
        flush=True,
    )
    if not multi_worker:
        train_data = pipeline.make_dataset(*encoded["train"][:2], config.batch_size, config.max_length, shuffle=True, seed=args.seed)
        validation_data = pipeline.make_dataset(*encoded["validation"][:2], config.batch_size, config.max_length)

    model_config = tf_transformer.TransformerConfig.preset(
        config.preset,
        **{
            **config.model_overrides,
            "source_vocab_size": source_tokenizer.vocab_size,
            "target_vocab_size": target_tokenizer.vocab_size,
            "max_length": config.max_length,
        },
    )
    with strategy.scope():
        model = tf_transformer.build_transformer(model_config)
        model.compile(
            optimizer=schedules.paper_optimizer(model_config.d_model, config.warmup_steps, config.learning_rate_scale),
            loss=losses.MaskedSparseCategoricalCrossentropy(label_smoothing=config.label_smoothing),
            metrics=[metrics.MaskedAccuracy()],
            jit_compile=args.jit_compile,
        )
    print(f"Model: {model.count_params():,} parameters ({model_config}); work dir {work_dir}", flush=True)
    if multi_worker:
        train_multi_worker(model, strategy, config, encoded, args, work_dir)  # ends with the best weights
    else:
        best_weights = os.path.join(work_dir, "best.weights.h5")
        callbacks = [
            callbacks_lib.BackupAndRestore(os.path.join(work_dir, "backup")),
            keras.callbacks.ModelCheckpoint(best_weights, monitor="val_loss", save_best_only=True, save_weights_only=True),
            keras.callbacks.TensorBoard(os.path.join(work_dir, "logs")),
        ]
        if config.early_stopping_patience:
            callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.early_stopping_patience))
        # shuffle=False: the pipeline shuffles (and buckets) the data itself.
        model.fit(train_data, validation_data=validation_data, epochs=config.epochs, callbacks=callbacks, shuffle=False)
        if os.path.exists(best_weights):
            model.load_weights(best_weights)

    kind = "dates" if args.dataset == "dates" else "text"
    samples = SAMPLES[kind]
    translator = tf_transformer.export.Translator(
        model, source_tokenizer, target_tokenizer, max_output_length=config.max_output_length or None,
        postprocess=dates.valid_date_or_empty if kind == "dates" else None,  # "" for what is not a calendar date
    )
    evaluation = ExportEvaluation(translator, kind, samples, splits["test"], beam=config.eval_beam_size > 1,
                                  started=started, held_out=splits.get("held_out"))
    path = tf_transformer.export.export(
        model, source_tokenizer, target_tokenizer, distributed.write_path(export_dir, strategy), translator=translator,
        extra_files={"training_config.json": {"training": dataclasses.asdict(config), "model": model_config.to_dict()}},
        # Every figure comes from the export reloaded in a fresh process; only the chief's export is kept.
        check=evaluation.check if distributed.is_chief(strategy) else None,
        description=DESCRIPTIONS[kind],
        warmup_texts=samples,
    )
    held_out = evaluation.metrics
    if multi_worker:  # every worker exported (saving may need them all); only the chief's remains
        if not distributed.is_chief(strategy):
            path = "a temporary folder, deleted (only the chief's export is kept)"
        for temporary in (export_dir, work_dir):
            distributed.remove_temporary(temporary, strategy)
    if held_out is not None:
        print(f"Held-out metrics (the export reloaded in a fresh process): {json.dumps(held_out)}")
        for source, output in zip(samples, evaluation.sample_outputs):
            print(f"  {source!r} -> {output!r}")
    print(f"Exported to {path}")
    return {"export": path, "metrics": held_out}


if __name__ == "__main__":
    main()
