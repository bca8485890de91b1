"""The tf.data input pipeline: examples → length buckets → teacher-forcing batches, an endless stream cut in epochs.

Examples — padded rows of ids, `_padded` — come from memory
(`examples_in_memory`: a small corpus tokenised once) or from shard files (`examples_from_files`: lines read with a
parallel interleave, parsed and tokenised in parallel maps, never held
whole). Either way `training_stream` turns them into the batches `fit`
trains on: shuffled (a bounded buffer), grouped by length into a small
fixed set of shapes (`bucket_lengths`, `bucket_rows`), one epoch being a
fixed number of steps of an endless stream. Each epoch's stream is a
function of the seed and the epoch's number alone, so a run resumed at
step S of epoch E rebuilds that epoch's stream and skips its first S
batches: the data continue after what was already trained.
"""

import math

import numpy as np
import tensorflow as tf

from tf_transformer.special_tokens import END, PAD, START
from training import tsv

# Padded lengths: every length up to 16 (short sentences are most of a
# corpus like Tatoeba's, where padding to multiples of 8 left 23 % of the
# target positions padding), then steps of about 12 %. The batch rows are
# multiples of 8 instead, so every matmul's row count (rows × length) is.
_LENGTH_LADDER = (4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 22, 24, 27, 30, 34, 38, 43, 48, 54, 61,
                  68, 76, 86, 96, 108, 122, 137, 154, 173, 194, 218, 245, 276, 310, 349, 392, 441, 496, 512)


def bucket_lengths(max_length):
    """The padded lengths of batches (each is a shape compiled once under XLA), the last `max_length`."""
    return [length for length in _LENGTH_LADDER if length < max_length] + [max_length]


# The data rules, each in its Python (NumPy) form and its graph form side by
# side; tests/test_data.py checks that the two agree on random lengths.

def padded_length(source_length, target_length):
    """The length a pair is padded to before bucketing: its source, or its decoder input (target with start, less end).

    `target_length` counts the start and end tokens; the decoder reads the
    target less its last token and predicts it less its first.
    """
    return np.maximum(source_length, np.asarray(target_length) - 1)


def bucket_index(source_length, target_length, lengths):
    """The bucket of each pair: the smallest of `lengths` that holds `padded_length` (NumPy)."""
    return np.searchsorted(lengths, padded_length(source_length, target_length), side="left")


def bucket_index_graph(source, target, lengths):
    """`bucket_index` in the graph, of padded rows of ids (0 is padding); `lengths` an int tensor."""
    length = tf.maximum(tf.math.count_nonzero(source, -1, dtype=lengths.dtype),
                        tf.math.count_nonzero(target, -1, dtype=lengths.dtype) - 1)
    return tf.searchsorted(lengths, tf.reshape(length, [-1]), side="left", out_type=lengths.dtype)


def fits(source_length, target_length, max_length):
    """Whether a pair fits `max_length` tokens per side (`target_length` with its start and end tokens)."""
    return (np.asarray(source_length) <= max_length) & (np.asarray(target_length) <= max_length)


def bucket_rows(lengths, batch_size=None, batch_tokens=None):
    """Rows per batch of each padded length: `batch_size` always, or about `batch_tokens` tokens.

    With a token budget a batch of length L has `batch_tokens // L` rows,
    rounded down to a multiple of 8 and at least 8, so it holds at most
    `batch_tokens` tokens per side, padding included (more only where 8
    rows of the longest length exceed the budget).
    """
    if (batch_size is None) == (batch_tokens is None):
        raise ValueError("Give exactly one of batch_size and batch_tokens.")
    if batch_size is not None:
        return [int(batch_size)] * len(lengths)
    return [max(8, batch_tokens // length // 8 * 8) for length in lengths]


def encode_pairs(sources, targets, source_tokenizer, target_tokenizer, max_length):
    """Token ids of every pair, dropping pairs longer than `max_length`.

    Tokenised once, in batches, in the graph (the same ops the export runs).

    Returns:
        `(source_ids, target_ids, dropped)`: ragged int32 tensors, target
        ids wrapped in start/end, and how many pairs were too long.
    """
    source_ids, target_ids, keep = _tokenize(tf.constant(sources), tf.constant(targets), source_tokenizer,
                                             target_tokenizer, max_length)
    dropped = int(tf.size(keep)) - int(tf.reduce_sum(tf.cast(keep, tf.int32)))
    return tf.ragged.boolean_mask(source_ids, keep), tf.ragged.boolean_mask(target_ids, keep), dropped


def _tokenize(sources, targets, source_tokenizer, target_tokenizer, max_length):
    source_ids = source_tokenizer.tokenize(sources)
    target_ids = target_tokenizer.tokenize(targets)
    rows = target_ids.nrows()
    target_ids = tf.concat([tf.fill([rows, 1], START), target_ids, tf.fill([rows, 1], END)], axis=1)
    keep = (source_ids.row_lengths() <= max_length) & (target_ids.row_lengths() <= max_length)
    return source_ids, target_ids, keep


def _tokenized_rows(sources, targets, source_tokenizer, target_tokenizer, max_length):
    """`_padded` rows of the pairs that fit `max_length`, tokenised in the graph."""
    source_ids, target_ids, keep = _tokenize(sources, targets, source_tokenizer, target_tokenizer, max_length)
    return _padded(tf.ragged.boolean_mask(source_ids, keep), tf.ragged.boolean_mask(target_ids, keep), max_length)


def _padded(source_ids, target_ids, max_length):
    """Ragged ids as zero-padded rows of `max_length` (source) and `max_length + 1` (target) ids.

    Examples travel through tf.data as these fixed-width rows: slicing a
    ragged tensor one example at a time cost about 25 µs an example on
    one core, more than tokenising it; dense rows cost next to nothing.
    """
    return (source_ids.to_tensor(PAD, shape=[None, max_length]),
            target_ids.to_tensor(PAD, shape=[None, max_length + 1]))


def examples_in_memory(source_ids, target_ids, max_length, seed=0, repeat=True):
    """`(source, target)` padded rows (`_padded`) of a tokenised corpus: with `repeat`, endless and reshuffled every pass."""
    dataset = tf.data.Dataset.from_tensor_slices(_padded(source_ids, target_ids, max_length))
    if not repeat:
        return dataset
    return dataset.shuffle(int(source_ids.nrows()), seed=seed, reshuffle_each_iteration=True).repeat()


def examples_in_memory_text(sources, targets, source_tokenizer, target_tokenizer, max_length, seed=0, chunk=256,
                            names=(), name_swap=0.0):
    """`examples_in_memory`'s endless reshuffled rows from the pairs' text, tokenised anew every pass.

    For what changes from pass to pass: tokenizers whose pieces change from
    call to call (sampled subword segmentations), and `swap_names`.
    """
    def tokenize(sources, targets):
        sources, targets = swap_names(sources, targets, names, name_swap)
        return _tokenized_rows(sources, targets, source_tokenizer, target_tokenizer, max_length)

    dataset = tf.data.Dataset.from_tensor_slices((list(sources), list(targets)))
    dataset = dataset.shuffle(len(sources), seed=seed, reshuffle_each_iteration=True).repeat()
    return dataset.batch(chunk).map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


# A name: a capitalised word of three or more letters (RE2's \b is ASCII, as is this class).
_NAME = r"\b[A-Z][a-z]{2,}\b"
_CONSONANTS, _VOWELS = "bcdfghjklmnprstvz", "aeiou"


def copied_names(sources, targets, min_pairs):
    """The names a corpus copies from source to target: capitalised words found in both sides of `min_pairs` or more pairs.

    Most common first. On Anki these are Tom, Mary, Boston, Tokyo,
    New York, John, Paris, …: the words a model learns to copy only as
    themselves (`swap_names`).
    """
    import collections
    import re

    name = re.compile(_NAME)
    counts = collections.Counter()
    for source, target in zip(sources, targets):
        counts.update(set(name.findall(source)) & set(name.findall(target)))
    return [word for word, count in counts.most_common() if count >= min_pairs]


def _pseudo_name(seed):
    """A random pronounceable name: 1–3 consonant–vowel syllables, then a consonant (always after one syllable)."""
    letters = tf.random.stateless_uniform([7], seed, maxval=len(_CONSONANTS) * len(_VOWELS), dtype=tf.int32)
    consonants = tf.gather(tf.constant(list(_CONSONANTS)), letters[:4] % len(_CONSONANTS))
    vowels = tf.gather(tf.constant(list(_VOWELS)), letters[:3] % len(_VOWELS))
    syllables = 1 + letters[4] % 3
    name = tf.strings.reduce_join(tf.strings.join([consonants[:syllables], vowels[:syllables]]))
    final = (letters[5] % 2 == 0) | (syllables == 1)  # three letters at least: "Do" or "To" would read as words
    name = tf.strings.join([name, tf.where(final, consonants[3], "")])
    return tf.strings.join([tf.strings.upper(tf.strings.substr(name, 0, 1)), tf.strings.substr(name, 1, -1)])


@tf.autograph.experimental.do_not_convert  # Python loops over the names: one regex op per name and group
def swap_names(sources, targets, names, probability, groups=4):
    """Each pair, with `probability`, has every one of `names` replaced by a random pseudo-name, the same on both sides.

    Teaches the model to copy a name it never saw (a corpus like Anki
    writes almost every person "Tom" or "Mary", so a model trained on it
    translates an unknown name's first piece as a word: "Jane visite…" →
    "I visit…"). Pseudo-names are random syllables, not drawn from any
    list of real names. The draws are keyed by the batch's text, so a run
    resumed mid-epoch gets the same names again; the chosen pairs of a
    batch are split in `groups`, each with its own pseudo-names.
    """
    if not names or probability <= 0:
        return sources, targets
    key = tf.strings.to_hash_bucket_fast(tf.strings.reduce_join(sources[:8], separator="\n"), 2**62)
    seed = tf.stack([key, tf.constant(0, tf.int64)])
    draw = tf.random.stateless_uniform([tf.shape(sources)[0]], seed)
    group = tf.cast(draw * groups / probability, tf.int32)  # pairs drawn below `probability`: groups 0..groups-1
    for index, name in enumerate(names):
        pattern = r"\b" + name + r"\b"
        for g in range(groups):
            pseudo = _pseudo_name(seed + tf.constant([0, 1 + index * groups + g], tf.int64))
            chosen = tf.equal(group, g)
            sources = tf.where(chosen, tf.strings.regex_replace(sources, pattern, pseudo), sources)
            targets = tf.where(chosen, tf.strings.regex_replace(targets, pattern, pseudo), targets)
    return sources, targets


def examples_from_files(files, source_tokenizer, target_tokenizer, max_length, reverse=False, seed=0,
                        skip_lines=0, input_context=None, carved=("validation", "test"), cycle_length=8, chunk=256,
                        names=(), name_swap=0.0):
    """`(source, target)` padded rows (`_padded`) streamed from shard files, endless; the held-out buckets left out.

    Each pass visits the files in a new seeded order, `cycle_length` of
    them read at once (a parallel, deterministic interleave). Lines are
    parsed and tokenised `chunk` at a time in parallel maps; malformed
    lines (counted by `tsv.scan`), the sentences of the held-out splits
    `carved` from the corpus (`tsv`'s hash rule) and pairs longer than
    `max_length` are left out; `swap_names(names, name_swap)` then rewrites
    some of the pairs left. `skip_lines` raw lines
    are skipped first (cheap: before parsing). With a
    `tf.distribute.InputContext`, each input pipeline reads its share: whole
    files when there are at least as many files as pipelines, else every
    n-th line.
    """
    files = list(files)
    shards = tf.data.Dataset.from_tensor_slices(files)
    by_line = False
    if input_context is not None and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            shards = shards.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            by_line = True
    shards = shards.shuffle(len(files), seed=seed, reshuffle_each_iteration=True).repeat()

    def read(name):
        compression = tf.where(tf.strings.regex_full_match(name, r".*\.gz"), "GZIP", "")
        lines = tf.data.TextLineDataset(name, compression_type=compression)
        if by_line:  # every n-th line of each file: the shares stay disjoint pass after pass
            lines = lines.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        return lines

    lines = shards.interleave(read, cycle_length=min(cycle_length, len(files)), block_length=16,
                             num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    lines = lines.skip(skip_lines)

    def tokenize(batch):
        sources, targets, ok = tsv.parse_lines(batch, reverse)
        ok &= tsv.trained_on_graph(sources, carved)
        sources, targets = swap_names(tf.boolean_mask(sources, ok), tf.boolean_mask(targets, ok), names, name_swap)
        return _tokenized_rows(sources, targets, source_tokenizer, target_tokenizer, max_length)

    return lines.batch(chunk).map(tokenize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()


def batches(examples, max_length, batch_size=None, batch_tokens=None, drop_remainder=False, num_replicas=1, seed=0,
            chunk=8192):
    """Teacher-forcing batches of examples of similar length.

    Each element is `({"encoder_tokens": [B, L], "decoder_tokens": [B, L]},
    labels [B, L])` with `decoder_tokens = target[:-1]`, `labels =
    target[1:]` and L the smallest of `bucket_lengths(max_length)` that
    holds the source and the decoder tokens: a small fixed set of shapes.
    Rows per batch are `bucket_rows`' (divided among `num_replicas` when a
    distributed pipeline batches per replica).

    With `drop_remainder` (training: an endless stream) every batch of a
    length has the same rows, and bucketing runs on `chunk` examples at a
    time in a few vectorised ops (`_bucketed_chunks`): tf.data's
    per-example `group_by_window` (and `bucket_by_sequence_length`, built on
    it) cost 4.5 ms a batch of Tatoeba pairs on one core, more than reading,
    parsing and tokenising them. Without it (evaluation: every example once)
    `group_by_window` keeps each length's last, smaller batch.
    """
    lengths = bucket_lengths(max_length)
    rows = [max(1, r // num_replicas) for r in bucket_rows(lengths, batch_size, batch_tokens)]
    if drop_remainder:
        dataset = _bucketed_chunks(examples, max_length, lengths, rows, chunk, seed)
    else:
        lengths_t, rows_t = tf.constant(lengths, tf.int64), tf.constant(rows, tf.int64)

        def bucket(source, target):
            return bucket_index_graph(source, target, lengths_t)[0]

        def batch(key, window):
            length = lengths_t[key]
            return window.map(lambda s, t: (s[:length], t[: length + 1])).batch(rows_t[key])

        dataset = examples.group_by_window(bucket, batch, window_size_func=lambda key: rows_t[key])
    return dataset.map(lambda s, t: ({"encoder_tokens": s, "decoder_tokens": t[:, :-1]}, t[:, 1:]),
                       num_parallel_calls=tf.data.AUTOTUNE)


def _bucketed_chunks(examples, max_length, lengths, rows, chunk, seed):
    """Full batches of each length, bucketed `chunk` examples at a time; what a chunk leaves over waits for the next.

    Each chunk of padded rows joins the rows left over from the
    previous ones, is sorted by bucket (stably: the shuffled order stays
    within a bucket) and cut into every full batch it holds; the batches
    leave in a seeded random order, the rest (fewer than a batch per
    length) is carried in the scan's state. Same shapes and contents as
    grouping example by example, at a fraction of the cost.
    """
    lengths_t, rows_t = tf.constant(lengths, tf.int32), tf.constant(rows, tf.int32)
    buckets = len(lengths)
    padded = examples.batch(chunk)

    def cut(state, new):
        source, target = tf.concat([state[0], new[0]], 0), tf.concat([state[1], new[1]], 0)
        bucket = bucket_index_graph(source, target, lengths_t)
        order = tf.argsort(bucket, stable=True)
        source, target, bucket = tf.gather(source, order), tf.gather(target, order), tf.gather(bucket, order)
        counts = tf.math.bincount(bucket, minlength=buckets, maxlength=buckets)
        full = counts // rows_t  # full batches of each length
        first_row = tf.cumsum(counts, exclusive=True)
        batch_bucket = tf.repeat(tf.range(buckets), full)
        batch_number = tf.range(tf.size(batch_bucket)) - tf.repeat(tf.cumsum(full, exclusive=True), full)
        batch_start = tf.gather(first_row, batch_bucket) + batch_number * tf.gather(rows_t, batch_bucket)
        left = tf.range(tf.shape(bucket)[0]) - tf.gather(first_row, bucket) >= tf.gather(full * rows_t, bucket)
        order = tf.argsort(tf.random.stateless_uniform(tf.shape(batch_bucket), seed=tf.stack([seed, state[2]])))
        carried = (tf.boolean_mask(source, left), tf.boolean_mask(target, left), state[2] + 1)
        return carried, (source, target, tf.gather(batch_start, order), tf.gather(batch_bucket, order))

    def split(source, target, starts, bucket_ids):
        def one(start, bucket):
            rows_here, length = rows_t[bucket], lengths_t[bucket]
            return source[start : start + rows_here, :length], target[start : start + rows_here, : length + 1]

        return tf.data.Dataset.from_tensor_slices((starts, bucket_ids)).map(one)

    empty = (tf.zeros([0, max_length], tf.int32), tf.zeros([0, max_length + 1], tf.int32), tf.constant(0, tf.int64))
    return padded.scan(empty, cut).flat_map(split)


def training_stream(examples_from, max_length, steps_per_epoch, examples_per_epoch, first_epoch=0, epochs=None,
                    skip_steps=0, shuffle_buffer=0, seed=0, **batching):
    """The batches of epochs `first_epoch` … `epochs - 1`, `steps_per_epoch` each (`skip_steps` fewer in the first).

    Args:
        examples_from: `offset -> dataset`: the endless example stream
            from that many examples (or raw lines) on; epoch e starts at
            `e * examples_per_epoch`, so consecutive epochs continue the
            stream rather than restart it.
        shuffle_buffer: examples shuffled together (0: the examples come
            shuffled already, as `examples_in_memory`'s do).
        skip_steps: batches of `first_epoch` already trained (a resumed run).
        **batching: `batches`' `batch_size` or `batch_tokens`, `num_replicas`.
    """
    def epoch(index):
        examples = examples_from(index * examples_per_epoch)
        if shuffle_buffer:
            # A Python seed: tf.data's shuffle cannot take a symbolic one once a global seed is set
            # (keras.utils.set_random_seed). Each epoch reads other lines, so one pattern is enough.
            examples = examples.shuffle(shuffle_buffer, seed=seed)
        return batches(examples, max_length, drop_remainder=True, seed=tf.cast(seed, tf.int64) * 7919 + index,
                       **batching).take(steps_per_epoch)

    first = epoch(tf.constant(first_epoch, tf.int64)).skip(skip_steps)
    if epochs is not None and first_epoch + 1 >= epochs:
        return first.prefetch(tf.data.AUTOTUNE)
    rest = tf.data.Dataset.range(first_epoch + 1, epochs if epochs is not None else np.iinfo(np.int64).max)
    return first.concatenate(rest.flat_map(epoch)).prefetch(tf.data.AUTOTUNE)


def evaluation_batches(source_ids, target_ids, max_length, **batching):
    """Every held-out example (ragged ids) once, in `batches`' shapes (remainders kept), its number of batches known.

    Keras reads a dataset of unknown length until it ends and then warns
    "Your input ran out of data" after every validation; counted once here
    (the held-out set is small) and asserted, it is read to its end silently.
    """
    examples = examples_in_memory(source_ids, target_ids, max_length, repeat=False)
    dataset = batches(examples, max_length, drop_remainder=False, **batching)
    count = int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))
    return dataset.apply(tf.data.experimental.assert_cardinality(count)).prefetch(tf.data.AUTOTUNE)


def steps_for_one_pass(source_lengths, target_lengths, examples, max_length, **batching):
    """About how many training steps visit `examples` examples once, from a sample's token lengths.

    `target_lengths` include start and end. Returns `(steps, examples per step)`.
    """
    lengths = bucket_lengths(max_length)
    rows = bucket_rows(lengths, batching.get("batch_size"), batching.get("batch_tokens"))
    source_lengths, target_lengths = np.asarray(source_lengths), np.asarray(target_lengths)
    fit = fits(source_lengths, target_lengths, max_length)
    keys = bucket_index(source_lengths[fit], target_lengths[fit], lengths)
    if not len(keys):
        raise ValueError("No example of the sample fits max_length.")
    steps_per_example = np.mean(1.0 / np.asarray(rows)[keys])
    per_step = 1.0 / steps_per_example
    return max(1, math.floor(examples * fit.mean() / per_step)), per_step
