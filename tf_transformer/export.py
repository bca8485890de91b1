"""Export to a SavedModel for TF Serving: text in, text out (needs TensorFlow).

`export` writes `EXPORT_DIR/<version>/` (the next free integer, as TF
Serving expects) atomically: everything goes to a temporary directory beside
it, renamed into place only once complete, so a server never sees half a
model. The graph holds the tokenizers and the decoding loop; signatures:

* `serving_default`: `text` tf.string `[None]` → `translation` tf.string `[None]`
  (greedy search with the key/value cache);
* `beam_search`: the same with beam search;
* `n_best`: `text` `[None]` → `translations` tf.string `[None, N]` (best
  first) and `scores` float32 `[None, N]`, the length-penalised
  log-probabilities beam search ranks by (N = the beam size);
* `sample`: `text`, `temperature` float32, `top_k` int32 (0: off),
  `top_p` float32 (1: off), `seed` int32, each `[None]` → `translation`
  tf.string and `score` float32 (the sample's log-probability), `[None]`;
* `score`: `text` and `translation` `[None]` → `score` float32 (the sum of
  the translation's token log-probabilities, end token included) and
  `tokens` int32, `[None]` (forced decoding).

Every input has the batch first, as TF Serving's row format needs; an
option out of range fails the request with an `InvalidArgumentError` that
names it.

Inputs longer than the model's `max_length` tokens are truncated; an empty
(or blank) string translates to an empty string. The trained `.keras` model,
the tokenizers and any extra files go to `assets.extra/` (TF Serving ignores
that directory), for fine-tuning and inspection.
"""

import json
import os
import shutil
import tempfile
import time

import keras
import tensorflow as tf

from tf_transformer import decoding
from tf_transformer.special_tokens import END, PAD, START
from tf_transformer.tokenizers import save_tokenizers

SERVING_KEY = "serving_default"
BEAM_KEY = "beam_search"
N_BEST_KEY = "n_best"
SAMPLE_KEY = "sample"
SCORE_KEY = "score"


class Translator(tf.Module):
    """The exported module: tokenizers, model and decoding in one graph.

    Args:
        model: a `Transformer`.
        source_tokenizer, target_tokenizer: tokenizers from
            `tf_transformer.tokenizers`.
        max_output_length: longest output in tokens (default: the model's).
        beam_size: the beam of `translate_beam`.
        postprocess: optional function of tf.string tensors
            `(text [B], translation [B]) → translation [B]`, traced into both
            signatures: a check the translations must pass (e.g. that the
            dates model's output is a real calendar date, else "").
        jit_compile: compile the decoding loops (model and search, not the
            tokenizers, whose ops XLA lacks) with XLA. Several times faster
            on small models, whose steps are hundreds of tiny ops; XLA
            compiles once per input shape, so the shapes are few: source ids
            are padded to a multiple of 8 tokens and the rows to a power of
            two (at least 2; rows are repeated, then dropped), the sizes TF
            Serving's batching pads to with `training.serving_config`'s
            allowed batch sizes. `export` warms up every such shape up to
            `XLA_WARMUP_LARGEST_BATCH` rows. TF Serving runs such an export
            only with XLA enabled (`--xla_cpu_compilation_enabled=true` on
            CPU), hence off by default.

    Example (what `export` writes; here called in process):

    >>> from tf_transformer import Transformer, TransformerConfig
    >>> from tf_transformer.tokenizers import CharacterTokenizer
    >>> source, target = CharacterTokenizer.train(["25 juin 2009"]), CharacterTokenizer.train(["2009-06-25"])
    >>> model = Transformer(TransformerConfig.preset(
    ...     "tiny", source_vocab_size=source.vocab_size, target_vocab_size=target.vocab_size, max_length=16))
    >>> translator = Translator(model, source, target, max_output_length=12)
    >>> outputs = translator.translate(tf.constant(["25 juin 2009", "   "]))["translation"].numpy()
    >>> len(outputs), outputs[1]  # one string per input; blank in, blank out
    (2, b'')
    """

    def __init__(self, model, source_tokenizer, target_tokenizer, max_output_length=None, beam_size=4,
                 postprocess=None, jit_compile=False):
        super().__init__(name="translator")
        self.postprocess = postprocess
        self.jit_compile = bool(jit_compile)
        self.model = model
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.max_length = model.max_length
        self.max_output_length = min(max_output_length or self.max_length, self.max_length)
        self.beam_size = beam_size
        text = tf.TensorSpec([None], tf.string, name="text")
        self.translate = tf.function(self._greedy, input_signature=[text])
        self.translate_beam = tf.function(self._beam, input_signature=[text])
        # The decoding options' signatures run without XLA (their per-example options would multiply the programs).
        self.translate_n_best = tf.function(self._n_best, input_signature=[text])
        self.translate_sample = tf.function(self._sample, input_signature=[
            text, tf.TensorSpec([None], tf.float32, name="temperature"), tf.TensorSpec([None], tf.int32, name="top_k"),
            tf.TensorSpec([None], tf.float32, name="top_p"), tf.TensorSpec([None], tf.int32, name="seed")])
        self.score = tf.function(self._score, input_signature=[text, tf.TensorSpec([None], tf.string, name="translation")])
        if self.jit_compile:
            ids = [tf.TensorSpec([None, None], tf.int32, name="source_ids")]
            self._compiled_greedy = tf.function(self._greedy_search, input_signature=ids, jit_compile=True)
            self._compiled_beam = tf.function(self._beam_search, input_signature=ids, jit_compile=True)

    def _encode(self, text):
        ids = self.source_tokenizer.tokenize(text)[:, : self.max_length]  # truncate long inputs
        dense = ids.to_tensor(default_value=PAD)  # [B, S]
        length = tf.shape(dense)[1]
        return tf.pad(dense, [[0, 0], [0, tf.maximum(self.source_width(length) - length, 0)]])

    def source_width(self, length):
        """Positions the source ids of a batch whose longest source has `length` tokens are padded to.

        At least one, so a batch of empty strings still has a shape; under
        XLA a multiple of 8 (at least 8, at most `max_length`), so that a few
        source lengths share one compiled program (padding changes no
        output: the padding-invariance property). `length` may be a tensor.
        """
        multiple = SOURCE_MULTIPLE if self.jit_compile else 1
        rounded = (tf.minimum(length, self.max_length) + multiple - 1) // multiple * multiple
        return tf.minimum(tf.maximum(rounded, multiple), self.max_length)

    def _decode(self, text, ids):
        translation = self.target_tokenizer.detokenize(ids)
        if self.postprocess is not None:
            translation = self.postprocess(text, translation)
        return {"translation": tf.where(_blank(text), tf.constant(""), translation)}

    def _n_best(self, text):
        source_ids = self._encode(text)
        ids, scores = decoding.beam_search(self.model, source_ids, START, END, self.max_output_length,
                                           beam_size=self.beam_size, num_hypotheses=self.beam_size, return_scores=True)
        rows, n = tf.shape(ids)[0], self.beam_size
        flat_text = tf.reshape(tf.repeat(text[:, None], n, axis=1), [-1])
        translations = self._decode(flat_text, tf.reshape(ids, [rows * n, -1]))["translation"]
        return {"translations": tf.reshape(translations, [rows, n]),
                "scores": tf.where(_blank(text)[:, None], 0.0, scores)}

    def _sample(self, text, temperature, top_k, top_p, seed):
        rows = tf.shape(text)[0]
        checks = [tf.debugging.assert_equal(tf.shape(option)[0], rows, message=f"sample: `{name}` must have one value per text")
                  for name, option in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p), ("seed", seed))]
        checks += [
            tf.debugging.assert_greater_equal(temperature, 0.0, message="sample: `temperature` must be ≥ 0 (0: greedy)"),
            tf.debugging.assert_greater_equal(top_k, 0, message="sample: `top_k` must be ≥ 0 (0: off)"),
            tf.debugging.assert_greater(top_p, 0.0, message="sample: `top_p` must be in (0, 1] (1: off)"),
            tf.debugging.assert_less_equal(top_p, 1.0, message="sample: `top_p` must be in (0, 1] (1: off)"),
        ]
        with tf.control_dependencies(checks):
            source_ids = self._encode(text)
        ids, scores = decoding.sample(self.model, source_ids, START, END, self.max_output_length, temperature=temperature,
                                      top_k=top_k, top_p=top_p, seed=seed, return_scores=True)
        return {"translation": self._decode(text, ids)["translation"], "score": tf.where(_blank(text), 0.0, scores)}

    def _score(self, text, translation):
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.shape(translation)[0], tf.shape(text)[0], message="score: `translation` must have one value per text")]):
            source_ids = self._encode(text)
        ids = self.target_tokenizer.tokenize(translation)[:, : self.max_output_length - 2]  # room for start and end
        rows = ids.nrows()
        ids = tf.concat([tf.fill([rows, 1], START), ids, tf.fill([rows, 1], END)], axis=1)
        _, scores = decoding.score(self.model, source_ids, ids.to_tensor(default_value=PAD))
        return {"score": scores, "tokens": tf.cast(ids.row_lengths() - 1, tf.int32)}

    def _greedy_search(self, source_ids):
        return decoding.greedy_search(self.model, source_ids, START, END, self.max_output_length)

    def _beam_search(self, source_ids):
        return decoding.beam_search(
            self.model, source_ids, START, END, self.max_output_length, beam_size=self.beam_size
        )

    def _greedy(self, text):
        return self._decode(text, self._search(self._compiled_greedy if self.jit_compile else self._greedy_search, text))

    def _beam(self, text):
        return self._decode(text, self._search(self._compiled_beam if self.jit_compile else self._beam_search, text))

    def _search(self, search, text):
        source_ids = self._encode(text)
        if not self.jit_compile:
            return search(source_ids)
        # Rows repeated up to a power of two, so that batch sizes share a few
        # compiled programs, which the warm-up records can cover; at least
        # two, as XLA on a CPU compiles a batch of one row into slower code
        # than a batch of two (measured in benchmarks/README.md, "Serving").
        rows = tf.shape(source_ids)[0]
        return search(tf.gather(source_ids, tf.range(compiled_rows(rows)) % tf.maximum(rows, 1)))[:rows]


def _blank(text):
    """Whether each text is empty or whitespace: it translates to "" (and scores 0)."""
    return tf.equal(tf.strings.length(tf.strings.strip(text)), 0)


SOURCE_MULTIPLE = 8  # under XLA, source ids are padded to a multiple of this many tokens


def compiled_rows(rows):
    """The rows an XLA-compiled export decodes a batch of `rows` in: the next power of two, at least 2 (0 for 0).

    Works on Python ints and int32 tensors alike.

    >>> [int(compiled_rows(n)) for n in (0, 1, 2, 3, 8, 9, 128, 129)]
    [0, 2, 2, 4, 8, 16, 128, 256]
    """
    rows = tf.convert_to_tensor(rows, tf.int32)
    # An integer loop, not 2 ** ceil(log2(rows)): float rounding sends exact powers of two one size up.
    power = tf.while_loop(lambda p: p < rows, lambda p: (p * 2,), (tf.constant(2),))[0]
    return tf.where(rows > 0, power, 0)


def _archive(model, translator):
    """Keras's `ExportArchive` of the translator's two signatures.

    Why not `tf.saved_model.save(translator)`: with the Keras model as a
    child of the saved module, the graph that TensorFlow's session loader
    (`saved_model_cli run`, TF Serving) imports reads variables that its
    restore op never writes ("Could not find variable …";
    tensorflow/serving#2250, keras-team/keras#20095). `ExportArchive` tracks
    the variables the signatures use directly, which both loaders restore.
    The tokenizers are tracked for their resources (hash table,
    SentencePiece model).
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.track(translator.source_tokenizer)
    if translator.target_tokenizer is not translator.source_tokenizer:
        archive.track(translator.target_tokenizer)
    for name, function in signatures(translator).items():
        function.get_concrete_function()  # traced once (its input signature is fixed)
        archive.add_endpoint(name, function)
    return archive


def signatures(translator):
    """The exported signatures by key, as `tf.function`s of the translator."""
    return {SERVING_KEY: translator.translate, BEAM_KEY: translator.translate_beam, N_BEST_KEY: translator.translate_n_best,
            SAMPLE_KEY: translator.translate_sample, SCORE_KEY: translator.score}


STAGING_PREFIX = ".export-"
_OWNER_FILE = ".owner.json"  # in a staging dir: the exporting process, so a later export can tell it is stale


def _process_start(pid):
    """When process `pid` started (clock ticks since boot, from /proc), None where /proc has no answer."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as file:
            return int(file.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid, start):
    """Whether the process that wrote an owner marker still runs (the same pid and start time)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return start is None or _process_start(pid) in (None, start)


def remove_stale_staging(export_dir):
    """Removes the staging dirs of exports whose process has ended (killed mid-export); returns their paths.

    Each staging dir holds an owner marker (pid and start time); one
    without a marker is left alone unless it is older than a day, since a
    live exporter may not have written its marker yet.
    """
    removed = []
    if not os.path.isdir(export_dir):
        return removed
    for name in os.listdir(export_dir):
        path = os.path.join(export_dir, name)
        if not name.startswith(STAGING_PREFIX) or not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, _OWNER_FILE), encoding="utf-8") as file:
                owner = json.load(file)
            stale = not _alive(int(owner["pid"]), owner.get("start"))
        except (OSError, ValueError, KeyError, TypeError):
            stale = time.time() - os.path.getmtime(path) > 86400
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _staging_dir(export_dir):
    """A new staging dir beside the versions (same file system: the rename is atomic), marked with its owner.

    Its mode is a normal directory's under the process umask (0755 by
    default), not `mkdtemp`'s 0700: it becomes the published version, which
    a TF Serving process running as another user must read.
    """
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=export_dir)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    with open(os.path.join(staging, _OWNER_FILE), "w", encoding="utf-8") as file:
        json.dump({"pid": os.getpid(), "start": _process_start(os.getpid())}, file)
    return staging


def next_version(export_dir):
    """The next free integer version under `export_dir` (1 for a new one)."""
    versions = [int(name) for name in os.listdir(export_dir) if name.isdigit()] if os.path.isdir(export_dir) else []
    return max(versions, default=0) + 1


def export(
    model,
    source_tokenizer,
    target_tokenizer,
    export_dir,
    max_output_length=None,
    beam_size=4,
    extra_files=None,
    translator=None,
    check=None,
    description=None,
    warmup_texts=None,
    jit_compile=False,
    warmup_largest_batch=None,
):
    """Writes the model as `export_dir/<next version>/` and returns that path.

    Args:
        model: a `Transformer`.
        source_tokenizer, target_tokenizer: tokenizers from
            `tf_transformer.tokenizers`.
        export_dir: the model's directory in TF Serving's layout.
        max_output_length: longest output in tokens (default: the model's).
        beam_size: the beam of the `beam_search` signature.
        extra_files: dict of file name → JSON-serialisable content written
            to `assets.extra/` (e.g. evaluation results).
        translator: a `Translator` of this model already used (e.g. to
            evaluate it), so its traced functions are reused, not traced again.
        description: what the model answers (e.g. "" for text that is not a
            date), written with each signature's inputs and outputs to
            `assets.extra/signatures.json`, where clients look it up.
        warmup_texts: texts for TF Serving's warm-up records
            (`assets.extra/tf_serving_warmup_requests`, replayed by the server
            at load so the first request does not pay for initialisation;
            see `warmup_batches`); default: a few generic strings of
            different lengths.
        check: called with the path of the complete SavedModel before it is
            published (e.g. to reload it in another process and evaluate
            it); returns more extra files (a dict as `extra_files`) or
            raises, and then nothing is published.
        jit_compile: compile the decoding loops with XLA (see `Translator`);
            ignored when `translator` is given (it was built with or without).
        warmup_largest_batch: under XLA, the warm-up records compile every
            program for batches of up to this many texts (default
            `XLA_WARMUP_LARGEST_BATCH`); each program costs a second or two
            of the server's load and some 20 MB of its memory.

    Example (a tiny untrained model; its translations are arbitrary, their shape is not):

    >>> import tempfile
    >>> from tf_transformer import Transformer, TransformerConfig
    >>> from tf_transformer.tokenizers import CharacterTokenizer
    >>> source, target = CharacterTokenizer.train(["25 juin 2009"]), CharacterTokenizer.train(["2009-06-25"])
    >>> model = Transformer(TransformerConfig.preset(
    ...     "tiny", source_vocab_size=source.vocab_size, target_vocab_size=target.vocab_size, max_length=16))
    >>> export_dir = tempfile.mkdtemp()
    >>> path = export(model, source, target, export_dir)
    >>> path == latest_version(export_dir) == f"{export_dir}/1", next_version(export_dir)
    (True, 2)
    >>> served = tf.saved_model.load(path).signatures["serving_default"]
    >>> served(text=tf.constant(["25 juin 2009", ""]))["translation"].shape.as_list()
    [2]
    >>> non_core_ops(path)  # a stock TF Serving binary runs it
    {'custom': [], 'xla': []}
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("Exporting a SavedModel needs the TensorFlow backend (KERAS_BACKEND=tensorflow).")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise NotADirectoryError(f"The export directory {export_dir} is a file, not a directory.")
    os.makedirs(export_dir, exist_ok=True)
    remove_stale_staging(export_dir)
    if translator is None:
        translator = Translator(model, source_tokenizer, target_tokenizer, max_output_length, beam_size,
                                jit_compile=jit_compile)
    staging = _staging_dir(export_dir)
    try:
        _archive(model, translator).write_out(staging, verbose=False)
        extra = os.path.join(staging, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        model.save(os.path.join(extra, "model.keras"))
        save_tokenizers(extra, source_tokenizer, target_tokenizer)
        warmup = warmup_batches(translator, warmup_texts, warmup_largest_batch or XLA_WARMUP_LARGEST_BATCH)
        write_warmup_requests(os.path.join(extra, WARMUP_FILE), warmup, os.path.basename(os.path.normpath(export_dir)),
                              option_requests(warmup_texts))
        _write_json(extra, {"signatures.json": _signature_docs(translator, description), **(extra_files or {})})
        if check is not None:
            _write_json(extra, check(staging) or {})
        os.remove(os.path.join(staging, _OWNER_FILE))
        while True:  # another exporter may have taken the version meanwhile
            target = os.path.join(export_dir, str(next_version(export_dir)))
            try:
                os.rename(staging, target)
                return target
            except OSError:
                if not os.path.exists(target):
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


WARMUP_FILE = "tf_serving_warmup_requests"
XLA_WARMUP_LARGEST_BATCH = 128  # also training.serving_config's default largest batch, which reads it from here
_DEFAULT_WARMUP_TEXTS = ["", "a", "Hello.", "25 septembre 2009", "A longer request of several words, with punctuation."]


def warmup_batches(translator, texts=None, largest_batch=XLA_WARMUP_LARGEST_BATCH):
    """The requests of the warm-up records, each a list of texts.

    Without XLA: the last text alone, the first two, all of them (the first
    call of a signature runs TensorFlow's graph optimisations; sizes and
    lengths differ). With XLA (`translator.jit_compile`), one request per
    program XLA compiles: every power-of-two batch size from 2 to
    `largest_batch` with a text of every source width, so that once the
    server has replayed them no request of up to `largest_batch` texts
    waits for a compilation.

    Example:

    >>> from tf_transformer import Transformer, TransformerConfig
    >>> from tf_transformer.tokenizers import CharacterTokenizer
    >>> source = target = CharacterTokenizer.train(["25 juin 2009"])
    >>> model = Transformer(TransformerConfig.preset(
    ...     "tiny", source_vocab_size=source.vocab_size, target_vocab_size=target.vocab_size, max_length=20))
    >>> [len(batch) for batch in warmup_batches(Translator(model, source, target), ["a", "bb", "ccc"])]
    [1, 2, 3]
    >>> batches = warmup_batches(Translator(model, source, target, jit_compile=True), ["25 juin 2009"], 8)
    >>> [(len(batch), len(batch[0])) for batch in batches]  # source widths 8, 16 and 20 (max_length)
    [(2, 1), (4, 1), (8, 1), (2, 9), (4, 9), (8, 9), (2, 17), (4, 17), (8, 17)]
    """
    texts = list(texts or _DEFAULT_WARMUP_TEXTS)
    if not translator.jit_compile:
        return [texts[-1:], texts[:2], texts]
    sizes = [size for size in (2**k for k in range(1, 31)) if size <= max(largest_batch, 2)]
    return [[text] * size for text in _text_of_each_source_width(translator, texts) for size in sizes]


def _text_of_each_source_width(translator, texts):
    """The shortest prefix of the texts joined (repeated as needed) for each width `source_width` gives."""
    pool = " ".join(text.strip() for text in texts if text.strip()) or "a"
    tokenize = translator.source_tokenizer.tokenize
    joined = pool
    def tokens(text):
        return int(tokenize(tf.constant([text])).row_lengths()[0])

    while tokens(joined) <= translator.max_length and len(joined) < 10_000:
        joined += " " + pool
    while tokens(joined[: len(joined) // 2]) > translator.max_length:  # long samples: fewer prefixes to try
        joined = joined[: len(joined) // 2]
    prefixes = [joined[:end] for end in range(1, len(joined) + 1)]
    widths = translator.source_width(tokenize(tf.constant(prefixes)).row_lengths()).numpy()
    found = {}
    for prefix, width in zip(prefixes, widths):
        found.setdefault(int(width), prefix)
    return [found[width] for width in sorted(found)]


def option_requests(texts=None):
    """Warm-up requests `(signature, inputs)` of the decoding options' signatures: three batches each, as without XLA."""
    texts = list(texts or _DEFAULT_WARMUP_TEXTS)
    requests = []
    for batch in (texts[-1:], texts[:2], texts):
        rows = len(batch)
        requests += [
            (N_BEST_KEY, {"text": batch}),
            (SAMPLE_KEY, {"text": batch, "temperature": [1.0] * rows, "top_k": [0] * rows, "top_p": [1.0] * rows,
                          "seed": list(range(rows))}),
            (SCORE_KEY, {"text": batch, "translation": batch}),
        ]
    return requests


_INPUT_DTYPES = {"text": tf.string, "translation": tf.string, "temperature": tf.float32, "top_k": tf.int32,
                 "top_p": tf.float32, "seed": tf.int32}


def write_warmup_requests(path, batches, model_name="", other_requests=()):
    """TF Serving's warm-up file: a TFRecord of `PredictionLog`s, each batch for both translation signatures.

    Then `other_requests`, `(signature, inputs)` pairs (`option_requests`).
    At most 1,000 records, as TF Serving accepts. Built with
    tensorflow-serving-api's protos.

    Example:

    >>> import os, tempfile
    >>> from tensorflow_serving.apis import prediction_log_pb2
    >>> path = os.path.join(tempfile.mkdtemp(), WARMUP_FILE)
    >>> write_warmup_requests(path, [["25 juin 2009"], ["Je t'aime.", "a"]], "dates")
    >>> logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    >>> [(log.predict_log.request.model_spec.signature_name, len(log.predict_log.request.inputs["text"].string_val))
    ...  for log in logs]
    [('serving_default', 1), ('serving_default', 2), ('beam_search', 1), ('beam_search', 2)]
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    requests = [(signature, {"text": batch}) for signature in (SERVING_KEY, BEAM_KEY) for batch in batches]
    requests += list(other_requests)
    if len(requests) > 1000:
        raise ValueError(f"TF Serving replays at most 1,000 warm-up records; {len(batches)} batches and "
                         f"{len(other_requests)} other requests make {len(requests)}.")

    def tensor(name, values):
        dtype = _INPUT_DTYPES[name]
        return tf.make_tensor_proto([v.encode("utf-8") for v in values] if dtype == tf.string else values, dtype=dtype)

    with tf.io.TFRecordWriter(path) as writer:
        for signature, inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature),
                inputs={name: tensor(name, values) for name, values in inputs.items()},
            )
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _signature_docs(translator, description):
    text = {"text": "tf.string [None]: UTF-8 text, one per example"}
    translation = {"translation": "tf.string [None]: one per input, in order"}
    beam = f"beam search (beam {translator.beam_size}) with the key/value cache"
    documented = {
        SERVING_KEY: (text, translation, "greedy search with the key/value cache"),
        BEAM_KEY: (text, translation, beam),
        N_BEST_KEY: (text, {
            "translations": f"tf.string [None, {translator.beam_size}]: the beam's hypotheses per input, best first",
            "scores": f"float32 [None, {translator.beam_size}]: log P(translation | text) / ((5 + tokens) / 6) ** 0.6, "
                      "what beam search ranks by (tokens: the translation's, end token included); 0 for a blank text",
        }, beam),
        SAMPLE_KEY: ({
            **text,
            "temperature": "float32 [None]: ≥ 0; the log-probabilities are divided by it (0: the most probable token)",
            "top_k": "int32 [None]: ≥ 0; draw among the k most probable tokens (0: all)",
            "top_p": "float32 [None]: in (0, 1]; then among the fewest of them whose probability reaches p (1: all)",
            "seed": "int32 [None]: the same seed gives the same translation of the same text, whatever the batch",
        }, {**translation, "score": "float32 [None]: the translation's log-probability under the model (at "
                                    "temperature 1, without the cut-offs), end token included; 0 for a blank text"},
            "sampling with the key/value cache, one token at a time"),
        SCORE_KEY: ({**text, "translation": "tf.string [None]: the translation to score, one per text"}, {
            "score": "float32 [None]: log P(translation | text), the sum over its tokens, end token included",
            "tokens": "int32 [None]: how many tokens were scored (the translation's, end included; cut to "
                      f"{translator.max_output_length - 2} before the end)",
        }, "forced decoding: the model's log-probability of a given translation"),
    }
    return {
        name: {
            "inputs": inputs,
            "outputs": outputs,
            "decoding": decoding,
            "max_input_tokens": translator.max_length,
            "max_output_tokens": translator.max_output_length,  # start and end included
            **({"beam_size": translator.beam_size} if name in (BEAM_KEY, N_BEST_KEY) else {}),
            # TF Serving runs an XLA-compiled export on CPU only with --xla_cpu_compilation_enabled=true.
            "compiled_with_xla": translator.jit_compile and name in (SERVING_KEY, BEAM_KEY),
            "description": description or "",
        }
        for name, (inputs, outputs, decoding) in documented.items()
    }


def _write_json(directory, files):
    for name, content in files.items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as file:
            json.dump(content, file, indent=2, ensure_ascii=False)


def latest_version(export_dir):
    """The newest version under `export_dir`; `export_dir` itself if it is one version."""
    if os.path.exists(os.path.join(export_dir, "saved_model.pb")):
        return export_dir
    version = next_version(export_dir) - 1
    if version == 0:
        raise FileNotFoundError(f"No exported version under {export_dir} (expected {export_dir}/<version>/).")
    return os.path.join(export_dir, str(version))


def graph_ops(saved_model_dir):
    """Every op type used by a SavedModel's graphs and functions.

    Example:

    >>> import tempfile
    >>> module = tf.Module()
    >>> module.double = tf.function(lambda x: 2 * x, input_signature=[tf.TensorSpec([None], tf.float32)])
    >>> directory = tempfile.mkdtemp()
    >>> tf.saved_model.save(module, directory)
    >>> "Mul" in graph_ops(directory)
    True
    """
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as file:
        proto.ParseFromString(file.read())
    ops = set()
    for meta_graph in proto.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def non_core_ops(saved_model_dir):
    """The ops a stock TF Serving build may lack, by kind.

    Returns:
        dict with `"custom"`: ops not registered by core TensorFlow (e.g.
        tensorflow-text's `SentencepieceOp`; this must run in a process that
        has not loaded tensorflow-text, or they count as registered) and
        `"xla"`: XLA-only ops (`Xla*`, e.g. `XlaDynamicUpdateSlice`), which a
        server built without XLA cannot run.
    """
    from tensorflow.python.framework import op_def_registry

    ops = graph_ops(saved_model_dir)
    return {
        "custom": sorted(op for op in ops if op_def_registry.get(op) is None),
        "xla": sorted(op for op in ops if op.startswith("Xla")),
    }
