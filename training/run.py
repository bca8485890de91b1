"""One training run, importable: corpus → config → tokenizers → stream → model → training → export.

`train_and_evaluate(**options)` is what `python -m training.train` runs
(its options are the flags, named with underscores); `prepare_run` is its
first half, for benchmarks that need the run's data without training. The
dataset comes from `training.datasets`, the recipe from `training.configs`,
the stream from `training.pipeline`, the trainer from `training.trainers`,
and every figure from the export reloaded in a fresh process
(`training.evaluate`).
"""

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import shutil
import time
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import tf_transformer  # noqa: E402
from tf_transformer import fast_paths, losses, metrics, schedules  # noqa: E402
from tf_transformer.tokenizers import CharacterTokenizer, SentencePieceTokenizer, load_tokenizers, save_tokenizers  # noqa: E402
from training import callbacks as callbacks_lib  # noqa: E402
from training import configs, datasets, distributed, evaluate, pipeline  # noqa: E402
from training.configs import CONFIGS  # noqa: E402
from training.trainers import make_strategy, train_multi_worker, train_single  # noqa: E402

def check_dataset(args):
    """Raises SystemExit, before anything is read, when `--dataset` names nothing usable."""
    try:
        datasets.check(args.dataset)
    except datasets.DatasetError as error:
        raise SystemExit(str(error)) from None


def resolve(args, corpus_config):
    """The training config after the command-line overrides, and its name.

    Without `--config`, `corpus_config` (the corpus's `default_config`). A flag the user passed wins over the config;
    `--preset` replaces the config's model size (`configs.SIZE_FIELDS`).
    """
    config_name = args.config or corpus_config
    config = CONFIGS[config_name]
    overrides = {
        "preset": args.preset,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "batch_tokens": args.batch_tokens if args.batch_tokens else 0 if args.batch_size else None,
        "train_size": args.train_size,
        "vocab_size": args.vocab_size,
        "max_length": args.max_length,
        "warmup_steps": args.warmup_steps,
        "learning_rate_scale": args.learning_rate_scale,
        "select_by": args.select_by,
        "average_last": args.average_last,
        "shuffle_buffer": args.shuffle_buffer,
        "name_swap": args.name_swap,
        "mixed_precision": args.mixed_precision,
    }
    if config.subword_nbest_size and config.tokenizer != "sentencepiece":
        raise SystemExit(f"Config {config_name!r} samples subword segmentations, which needs the sentencepiece tokenizer, "
                         f"not {config.tokenizer!r}.")
    if args.preset:
        overrides["model_overrides"] = {k: v for k, v in config.model_overrides.items() if k not in configs.SIZE_FIELDS}
    config = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    return config, config_name


def cpu_multiplies_bfloat16():
    """Whether this CPU has bfloat16 matmul units (AVX512-BF16 or AMX), read from Linux's /proc/cpuinfo; False elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            flags = next((line.split(":", 1)[1].split() for line in file if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def set_precision(config, asked):
    """Sets the process's precision to `config.mixed_precision`; returns the config with the precision it got.

    A config's "bfloat16-matmuls" (not one the user `asked` for) becomes
    "off" on a machine with neither a GPU nor CPU bfloat16 units, where the
    bfloat16 products would be emulated, slower than float32's.
    """
    precision = config.mixed_precision
    if (precision == "bfloat16-matmuls" and not asked and not tf.config.list_physical_devices("GPU")
            and not cpu_multiplies_bfloat16()):
        print("Precision: float32, as neither a GPU nor a CPU with AVX512-BF16 or AMX was found; the config's epochs "
              "were sized for its bfloat16-matmuls, so training takes about 1.3x as long (--epochs sets fewer)",
              flush=True)
        precision = "off"
        config = dataclasses.replace(config, mixed_precision=precision)
    keras.config.set_dtype_policy(f"mixed_{precision}" if precision in ("bfloat16", "float16") else "float32")
    fast_paths.set_training_matmul_dtype("bfloat16" if precision == "bfloat16-matmuls" else None)
    return config


def batching(config):
    """`pipeline.batches`' keyword: a token budget or a fixed number of examples."""
    return {"batch_tokens": config.batch_tokens} if config.batch_tokens else {"batch_size": config.batch_size}


def make_tokenizers(config, sample, work_dir):
    """Learned from the training pairs' sample; reused from the work dir when resuming."""
    saved = os.path.join(work_dir, "tokenizers")
    if os.path.exists(os.path.join(saved, "tokenizers.json")):
        return load_tokenizers(saved)
    sources, targets = sample
    try:
        source, target = _train_tokenizers(config, sources, targets)
    except RuntimeError as error:
        found = re.search(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", str(error))
        if not found:
            raise
        raise SystemExit(
            f"A vocabulary of {found.group(1)} pieces is too small for this corpus: SentencePiece needs one piece "
            f"for each of its characters plus 260 reserved ones (4 special tokens, 256 bytes), {found.group(2)} in "
            f"all. Pass --vocab-size {found.group(2)} or more.") from None
    save_tokenizers(saved, source, target)
    return source, target


def _train_tokenizers(config, sources, targets):
    if config.tokenizer == "character":
        source = CharacterTokenizer.train(sources, fold=config.fold_source)
        target = CharacterTokenizer.train([t for t in targets if t])
    elif config.shared_vocabulary:
        source = target = SentencePieceTokenizer.train(list(sources) + list(targets), config.vocab_size)
    else:
        source = SentencePieceTokenizer.train(sources, config.vocab_size)
        target = SentencePieceTokenizer.train(targets, config.vocab_size)
    return source, target


def token_lengths(pairs, tokenizers):
    """Source lengths and target lengths with the start and end tokens, of `(sources, targets)`."""
    source, target = (tokenizer.tokenize(tf.constant(list(side))).row_lengths().numpy()
                      for tokenizer, side in zip(tokenizers, pairs))
    return source, target + 2


def refuse_if_nothing_fits(source_lengths, target_lengths, max_length):
    """Raises SystemExit, before training, when no pair (lengths of `token_lengths`) fits `max_length` tokens per side."""
    if len(source_lengths) and not np.any(pipeline.fits(source_lengths, target_lengths, max_length)):
        needed = np.maximum(source_lengths, target_lengths)
        raise SystemExit(
            f"No training pair fits --max-length {max_length}: the shortest pair needs {int(needed.min())} tokens "
            f"per side (the target with its start and end), half of them need {int(np.median(needed))} or more, and "
            f"all but 1 % fit in {int(np.percentile(needed, 99))}. Pass --max-length {int(np.percentile(needed, 99))} "
            "or more.")


class TrainingData:
    """The training stream's parts: where examples come from, epoch length, batch shapes.

    In memory the training pairs are tokenised once (`pipeline.encode_pairs`)
    and reshuffled every pass; streamed, lines are read and tokenised as
    they are trained on. The epoch length, when `--steps-per-epoch` does not
    give it, is about `config.epoch_passes` of a pass, estimated from the
    token lengths of a random part of the tokenizers' sample, kept with the
    scan (`LENGTH_SAMPLE` pairs), or of the in-memory pairs.
    """

    def __init__(self, corpus, config, args, tokenizers):
        self.config, self.args, self.tokenizers = config, args, tokenizers
        # What training reads: sampled segmentations when the config asks (evaluation and export keep the best one).
        self.training_tokenizers = tokenizers
        if config.subword_nbest_size:
            self.training_tokenizers = tuple(t.sampled(config.subword_nbest_size, config.subword_alpha) for t in tokenizers)
        self.files, self.batching, self.carved = corpus.files, batching(config), corpus.carved
        self.names, self.name_swap = corpus.copied_names, config.name_swap
        if self.files is None:
            source_ids, target_ids, self.dropped = pipeline.encode_pairs(
                *corpus.splits["train"], *tokenizers, config.max_length)
            if not int(source_ids.nrows()):  # every pair was too long: say by how much
                refuse_if_nothing_fits(*token_lengths([side[:datasets.LENGTH_SAMPLE] for side in corpus.sample], tokenizers),
                                       config.max_length)
            if config.subword_nbest_size or self.name_swap:  # tokenised again every pass, each time anew
                self.examples = pipeline.examples_in_memory_text(*corpus.splits["train"], *self.training_tokenizers,
                                                                 config.max_length, seed=args.seed, names=self.names,
                                                                 name_swap=self.name_swap)
            else:
                self.examples = pipeline.examples_in_memory(source_ids, target_ids, config.max_length, seed=args.seed)
            lengths = (source_ids.row_lengths().numpy(), target_ids.row_lengths().numpy())
            train_pairs = int(source_ids.nrows())
        else:
            sample = corpus.length_sample or [list(side) for side in corpus.splits["validation"]]  # an older work dir
            lengths = token_lengths(sample, tokenizers)
            refuse_if_nothing_fits(*lengths, config.max_length)
            train_pairs, self.dropped = corpus.train_pairs, None
        self.sample_target_lengths = lengths[1]
        self.shuffle_buffer = config.shuffle_buffer or configs.auto_shuffle_buffer(train_pairs)
        self.one_pass, per_step = pipeline.steps_for_one_pass(*lengths, train_pairs, config.max_length, **self.batching)
        self.steps_per_epoch = args.steps_per_epoch or max(1, round(self.one_pass * config.epoch_passes))
        examples_per_epoch = self.steps_per_epoch * per_step
        if self.files is not None:  # the offsets are raw lines: held-out, malformed and too-long lines included
            fit = np.mean(pipeline.fits(*lengths, config.max_length))
            examples_per_epoch *= corpus.lines / corpus.train_pairs / max(fit, 1e-6)
        self.examples_per_epoch = int(math.ceil(examples_per_epoch))

    def examples_from(self, offset, input_context=None):
        if self.files is None:
            examples = self.examples
            if input_context is not None and input_context.num_input_pipelines > 1:
                examples = examples.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
            return examples.skip(offset)
        return pipeline.examples_from_files(
            self.files, *self.training_tokenizers, self.config.max_length, reverse=self.args.reverse, seed=self.args.seed,
            skip_lines=offset, input_context=input_context, carved=self.carved, names=self.names,
            name_swap=self.name_swap)

    def stream(self, first_epoch=0, skip_steps=0, epochs=None, input_context=None, num_replicas=1):
        """`pipeline.training_stream` from epoch `first_epoch`, step `skip_steps` on."""
        return pipeline.training_stream(
            lambda offset: self.examples_from(offset, input_context), self.config.max_length, self.steps_per_epoch,
            self.examples_per_epoch, first_epoch=first_epoch, epochs=epochs, skip_steps=skip_steps,
            shuffle_buffer=0 if self.files is None else self.shuffle_buffer, seed=self.args.seed,
            num_replicas=num_replicas, **self.batching)


def fingerprint(corpus, tokenizers):
    """A checksum of the training data and vocabularies, compared across workers."""
    train = corpus.splits.get("train", ([], []))
    text = json.dumps([train[0][:100], train[1][-100:], corpus.train_pairs, corpus.files])
    for tokenizer in tokenizers:
        text += "\n".join(tokenizer.id_to_token(range(tokenizer.vocab_size)))
    return zlib.crc32(text.encode("utf-8"))


HELD_OUT_TRANSLATED = 500  # validation sources translated after every epoch


def held_out_scores(translate, kind, validation):
    """The per-epoch validation scores through the export's greedy decoding: BLEU and chrF, or exact match for dates."""

    def score(hypotheses, references):
        metrics = evaluate.evaluate(kind, hypotheses, references)
        keep = ("bleu", "chrf") if kind == "text" else ("exact_match",)
        return {key: metrics[key] for key in keep}

    sources, references = (list(side[:HELD_OUT_TRANSLATED]) for side in validation)
    return callbacks_lib.HeldOutTranslation(lambda texts: evaluate.translate_all(translate, texts), sources, references, score,
                                            monitor="val_bleu" if kind == "text" else "val_exact_match")


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

    def __init__(self, translator, kind, samples, test, beam, started, held_out=None, extra_metrics=None):
        self.kind, self.samples, self.beam, self.started = kind, samples, beam, started
        self.extra_metrics = extra_metrics or {}
        self.test_sources, self.test_references = test
        self.held_out = held_out or {}  # name → (sources, references), greedy only
        self.probe = list(samples) + list(self.test_sources[: self.PROBE_SIZE])
        self.signatures = {
            tf_transformer.export.SERVING_KEY: translator.translate,
            tf_transformer.export.BEAM_KEY: translator.translate_beam,
        }
        self.in_process = {name: evaluate.translate_all(function, self.probe) for name, function in self.signatures.items()}
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
        self.metrics.update(self.extra_metrics)
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


RUN_FILE = "run.json"  # in the work dir: the options of the run whose resumable state it holds
# Options a resumed run may change: how long it trains and where and how it writes.
RESUMABLE_CHANGES = ("epochs", "backup_every", "export_xla", "export_dir", "work_dir", "jit_compile")
# What a finished run leaves behind besides its TensorBoard logs (the export has the rest).
RUN_STATE = ("backup", "checkpoints", "tokenizers", "corpus.json", RUN_FILE)


def check_writable(path, what):
    """Raises SystemExit, before training, when `path` cannot become a directory this process writes."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise SystemExit(f"The {what} {path} is a file, not a directory; name another with --{what.replace(' ', '-')}.")
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(os.path.abspath(parent))
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SystemExit(f"The {what} {path} cannot be written ({parent} is not writable by this user).")


def claim_work_dir(work_dir, args):
    """Records this run's options in the work dir; refuses one that holds an unfinished run with other options.

    A resumed run must train what the interrupted one trained: its
    backup, tokenizers and corpus scan are reused. Options in
    `RESUMABLE_CHANGES` may differ.
    """
    options = {k: v for k, v in sorted(vars(args).items()) if k not in RESUMABLE_CHANGES}
    path = os.path.join(work_dir, RUN_FILE)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as file:
            before = json.load(file)
        changed = [f"{k} {before.get(k)!r} -> {options.get(k)!r}" for k in sorted(set(before) | set(options))
                   if before.get(k) != options.get(k)]
        if changed:
            raise SystemExit(
                f"The work dir {work_dir} holds an unfinished run with other options ({'; '.join(changed)}). "
                "Run the same command to resume it, or delete the work dir (or pass another --work-dir) to start over.")
        return
    elif any(os.path.exists(os.path.join(work_dir, name)) for name in ("backup", "checkpoints")):
        return  # a work dir of an earlier version without RUN_FILE: resumed as before
    callbacks_lib.write_json(path, options)


def finish_run(work_dir):
    """The export is published: the run's resumable state goes, so the same command later starts a new run."""
    for name in RUN_STATE:
        path = os.path.join(work_dir, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


@dataclasses.dataclass
class Run:
    """What a run trains on, resolved from its options before any model exists (`prepare_run`)."""

    args: argparse.Namespace  # the options, as the flags' parser gives them
    config: configs.TrainingConfig  # after the flags' overrides
    config_name: str
    name: str  # the dataset's name: the export dir's default
    strategy: tf.distribute.Strategy
    export_dir: str
    work_dir: str  # the chief's; `own_work_dir` is where this worker writes
    own_work_dir: str
    corpus: datasets.Corpus
    tokenizers: tuple  # (source, target)
    data: "TrainingData"
    started: float


def options_to_args(options):
    """The command line's `Namespace` for keyword options named as the flags (`export_dir=...`)."""
    from training.train import build_parser  # the flags' defaults are the options' defaults

    args = build_parser().parse_args([])
    unknown = sorted(set(options) - set(vars(args)))
    if unknown:
        raise TypeError(f"Unknown option(s) of train_and_evaluate: {', '.join(unknown)} (see `python -m training.train --help`)")
    for option, value in options.items():
        setattr(args, option, value)
    return args


def prepare_run(**options):
    """The corpus read (or scanned), the config chosen for it, the tokenizers learned and the training stream made.

    Takes `train_and_evaluate`'s options. The config is chosen after the
    corpus is counted (`configs.for_corpus`) unless `config=` names one.
    """
    args = options_to_args(options)
    check_dataset(args)
    strategy = make_strategy(args.strategy)
    named = args.config or datasets.config_before_reading(args.dataset)
    name = datasets.name(args.dataset, args.reverse)
    export_dir = args.export_dir or os.path.join("saved_models", name)
    work_dir = args.work_dir or export_dir.rstrip("/") + ".work"
    check_writable(export_dir, "export dir")
    check_writable(work_dir, "work dir")
    # Multi-worker: only the chief writes work_dir; the others write a twin they delete.
    own_work_dir = distributed.write_path(work_dir, strategy)
    os.makedirs(own_work_dir, exist_ok=True)
    claim_work_dir(own_work_dir, args)
    keras.utils.set_random_seed(args.seed)
    started = time.time()
    try:
        corpus = datasets.load(args.dataset, own_work_dir, reverse=args.reverse, seed=args.seed,
                               train_size=args.train_size or (CONFIGS[named].train_size if named else 0),
                               tokenizer_sample=args.tokenizer_sample, validation=args.validation, test=args.test)
    except datasets.DatasetError as error:
        raise SystemExit(str(error)) from None
    config, config_name = resolve(args, corpus.default_config())
    config = set_precision(config, asked=args.mixed_precision is not None)
    tokenizers = make_tokenizers(config, corpus.sample, own_work_dir)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        distributed.check_same_on_every_worker(strategy, fingerprint(corpus, tokenizers), "data or vocabularies")
    data = TrainingData(corpus, config, args, tokenizers)
    return Run(args, config, config_name, name, strategy, export_dir, work_dir, own_work_dir, corpus, tokenizers, data,
               started)


class StorageError(Exception):
    """A full disk or an I/O failure while writing, said in one line (`storage_problem`)."""


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}
_STORAGE_MESSAGES = ("No space left on device", "Disk quota exceeded", "Read-only file system", "Input/output error")


def storage_problem(error, where=None):
    """One line naming the path and the cause when `error` is a storage failure (full disk, I/O error), else None.

    Python's `OSError`s carry the errno and the path; h5py's and
    TensorFlow's (`ResourceExhaustedError` from a SavedModel write) only a
    message, from which the cause and a path are read (one under `where`,
    the directory being written, when the message names one).
    """
    message = str(error)
    cause = error.strerror if isinstance(error, OSError) and error.errno in _STORAGE_ERRNOS else next(
        (text for text in _STORAGE_MESSAGES if text in message), None)
    if cause is None:
        return None
    path = getattr(error, "filename", None)
    if not path:  # the first path in the message under `where`, or else one whose folder exists ("/job:…" is no path)
        found = re.findall(r"(/[^\s'\",;:()]+)", message)
        path = next((p for p in found if where and p.startswith(os.path.abspath(where))), None) or next(
            (p for p in found if os.path.dirname(p) not in ("", "/") and os.path.isdir(os.path.dirname(p))),
            where or "a file")
    return f"{cause} while writing {path}"


@contextlib.contextmanager
def writing(directory):
    """Storage failures inside the block become a `StorageError` naming the path (under `directory` where known)."""
    try:
        yield
    except (OSError, tf.errors.OpError) as error:
        problem = storage_problem(error, where=directory)
        if problem is None:
            raise
        raise StorageError(problem) from None


def build_model(config, tokenizers, strategy, jit_compile=False):
    """The model the config describes, sized to the tokenizers' vocabularies, compiled for training under `strategy`.

    Returns `(model, its TransformerConfig)`. Both trainers take it as it is:
    the paper's optimizer and schedule, the label-smoothed masked loss, and
    the metrics `callbacks.Throughput` reads.
    """
    source_tokenizer, target_tokenizer = tokenizers
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
            metrics=[metrics.MaskedAccuracy(), metrics.TargetTokens(real=True), metrics.TargetTokens(real=False)],
            jit_compile=jit_compile,
        )
    return model, model_config


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
    run = prepare_run(**options)
    args, config, name, corpus, data = run.args, run.config, run.name, run.corpus, run.data
    strategy, export_dir, work_dir = run.strategy, run.export_dir, run.work_dir
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    splits = corpus.splits
    source_tokenizer, target_tokenizer = run.tokenizers
    started = run.started
    validation = pipeline.encode_pairs(*splits["validation"], source_tokenizer, target_tokenizer, config.max_length)
    where = "in memory" if not corpus.streamed else f"streamed from {len(corpus.files)} file(s)"
    dropped = "" if data.dropped is None else f" ({data.dropped} too long for max_length {config.max_length}, dropped)"
    epoch = "about one pass" if config.epoch_passes == 1 else f"about {config.epoch_passes:.2g} of a pass"
    print(
        f"Data: {name}, {corpus.train_pairs} train{dropped} / {len(splits['validation'][0])} validation / "
        f"{len(splits['test'][0])} test pairs, {where}; config {run.config_name}; vocabularies "
        f"{source_tokenizer.vocab_size} / {target_tokenizer.vocab_size}; {data.steps_per_epoch} steps an epoch of "
        + (f"about {config.batch_tokens} tokens" if config.batch_tokens else f"{config.batch_size} examples")
        + ("" if args.steps_per_epoch else f" ({epoch})"),
        flush=True,
    )

    model, model_config = build_model(config, run.tokenizers, strategy, args.jit_compile)
    print(f"Model: {model.count_params():,} parameters ({model_config}); precision {config.mixed_precision}; "
          f"work dir {work_dir}", flush=True)

    kind, samples = corpus.kind, corpus.samples
    translator = tf_transformer.export.Translator(
        model, source_tokenizer, target_tokenizer, max_output_length=config.max_output_length or None,
        postprocess=corpus.postprocess,
        jit_compile=args.export_xla,
    )
    held_out_translation = held_out_scores(translator.translate, kind, splits["validation"])
    # Either trainer, then the same selection and averaging (`--select-by`, `--average-last`).
    if multi_worker:
        trained = train_multi_worker(model, strategy, config, data, validation[:2], args, work_dir,
                                     held_out_translation)
    else:
        validation_data = pipeline.evaluation_batches(*validation[:2], config.max_length, **data.batching)
        trained = train_single(model, data, validation_data, config, args, work_dir, held_out_translation)

    def kept_epoch_score():  # the kept epoch's score, to set beside the averaged export's
        return {
            "measured": "in the training process, greedy, with the Translator the export is made of, on the test split",
            "kept_epoch": trained.best_epoch,
            **evaluate.evaluate(kind, evaluate.translate_all(translator.translate, list(splits["test"][0])),
                                splits["test"][1]),
        }

    averaged, without_averaging = callbacks_lib.keep_chosen(model, trained, kept_epoch_score)
    if averaged:
        without_averaging["averaged_epochs"] = averaged
        print(f"Averaged the weights of epochs {averaged}", flush=True)

    evaluation = ExportEvaluation(translator, kind, samples, splits["test"], beam=config.eval_beam_size > 1,
                                  started=started, held_out=splits.get("held_out"),
                                  extra_metrics={"without_averaging": without_averaging} if without_averaging else None)
    with writing(export_dir):
        path = tf_transformer.export.export(
            model, source_tokenizer, target_tokenizer, distributed.write_path(export_dir, strategy), translator=translator,
            extra_files={"training_config.json": {"training": dataclasses.asdict(config), "model": model_config.to_dict()}},
            # Every figure comes from the export reloaded in a fresh process; only the chief's export is kept.
            check=evaluation.check if distributed.is_chief(strategy) else None,
            description=corpus.description,
            warmup_texts=samples,
        )
    held_out = evaluation.metrics
    if not multi_worker:
        finish_run(work_dir)
    if multi_worker:  # every worker exported (saving may need them all); only the chief's remains
        if not distributed.is_chief(strategy):
            path = "a temporary folder, deleted (only the chief's export is kept)"
        for temporary in (export_dir, work_dir):
            distributed.remove_temporary(temporary, strategy)
    if held_out is not None:
        print(f"Held-out metrics (the export reloaded in a fresh process; all of them, with sacreBLEU's signatures, in "
              f"{os.path.join(path, 'assets.extra', 'evaluation.json')}):\n"
              + evaluate.summary_table(held_out, beam_size=4), flush=True)
        for source, output in zip(samples, evaluation.sample_outputs):
            print(f"  {source!r} -> {output!r}")
    print(f"Exported to {path}")
    return {"export": path, "metrics": held_out}
