"""The tf.data input pipeline: tokenise, add start/end, bucket by length, batch."""

import tensorflow as tf

from tf_transformer.tokenizers import END, START


def encode_pairs(sources, targets, source_tokenizer, target_tokenizer, max_length):
    """Token ids of every pair, dropping pairs longer than `max_length`.

    Tokenised once, in batches, in the graph (the same ops the export runs).

    Returns:
        `(source_ids, target_ids, dropped)`: ragged int32 tensors, target
        ids wrapped in start/end, and how many pairs were too long.
    """
    source_ids = source_tokenizer.tokenize(tf.constant(sources))
    target_ids = target_tokenizer.tokenize(tf.constant(targets))
    batch = target_ids.nrows()
    target_ids = tf.concat([tf.fill([batch, 1], START), target_ids, tf.fill([batch, 1], END)], axis=1)
    keep = (source_ids.row_lengths() <= max_length) & (target_ids.row_lengths() <= max_length)
    dropped = int(tf.size(keep)) - int(tf.reduce_sum(tf.cast(keep, tf.int32)))
    return tf.ragged.boolean_mask(source_ids, keep), tf.ragged.boolean_mask(target_ids, keep), dropped


def make_dataset(source_ids, target_ids, batch_size, max_length, shuffle=False, seed=0, input_context=None):
    """Batches of `batch_size` teacher-forcing examples of similar lengths.

    Each element is `({"encoder_tokens": [B, S], "decoder_tokens": [B, T]},
    labels [B, T])` with `decoder_tokens = target[:-1]` and
    `labels = target[1:]`. Examples are bucketed by length and padded to
    their bucket's boundary: little padding, and a few batch shapes. With
    `shuffle` (training) each bucket's incomplete last batch is dropped, so
    every batch has `batch_size` rows.

    With a `tf.distribute.InputContext` (multi-worker training), the
    dataset is this input pipeline's shard of the examples, repeated without
    end (the loop runs a fixed number of steps on every worker), in full
    batches of the per-replica share of the global `batch_size` in every
    split.
    """
    dataset = tf.data.Dataset.from_tensor_slices((source_ids, target_ids))
    drop_remainder = shuffle
    if input_context is not None:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
        drop_remainder = True
    # Slices of a ragged tensor are typed ragged though they are plain vectors;
    # passing them through a map gives them a dense TensorSpec, as batching needs.
    dataset = dataset.map(lambda s, t: (tf.identity(s), tf.identity(t))).cache()
    if shuffle:
        dataset = dataset.shuffle(int(source_ids.nrows()), seed=seed, reshuffle_each_iteration=True)
    if input_context is not None:
        dataset = dataset.repeat()
    # Boundaries are exclusive upper bounds of lengths; the last admits max_length.
    boundaries = [b for b in (8, 12, 16, 20, 24, 32, 40, 48, 64, 96, 128) if b <= max_length] + [max_length + 1]
    bucket_batch_sizes = [batch_size] * (len(boundaries) + 1)
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda s, t: tf.maximum(tf.shape(s)[0], tf.shape(t)[0]),
        bucket_boundaries=boundaries,
        bucket_batch_sizes=bucket_batch_sizes,
        padded_shapes=([None], [None]),
        # Lengths padded to the bucket boundary: a few shapes, so every batch
        # reuses one of a few traced (and, with jit_compile, XLA-compiled)
        # steps; padding each batch to its own longest example instead gave
        # validation a new shape, and an XLA compile of the test step, for
        # nearly every batch. Training also drops each bucket's remainder
        # (batch_size rows, always); shuffling changes which examples fall in
        # it each epoch. Evaluation keeps every example: its remainders add
        # one shape per bucket, the same ones each epoch.
        pad_to_bucket_boundary=True,
        drop_remainder=drop_remainder,
    )
    dataset = dataset.map(
        lambda s, t: ({"encoder_tokens": s, "decoder_tokens": t[:, :-1]}, t[:, 1:]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)
