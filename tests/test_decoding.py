"""Greedy and beam search: cache == no cache == the full model, XLA, JAX."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from layer_test_helper import run_on_jax
from tf_transformer import TransformerConfig, build_transformer, decoding

START, END, MAX_LENGTH = 1, 2, 12


@pytest.fixture(scope="module")
def copy_model():
    """A tiny model trained for seconds to copy its input: outputs that end."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    source = np.zeros((512, 8), "int32")
    for row, length in zip(source, rng.integers(2, 8, size=512)):
        row[:length] = rng.integers(3, 16, size=length)
    target = np.zeros((512, 10), "int32")
    target[:, 0] = START
    target[:, 1:9] = source
    target[np.arange(512), 1 + (source != 0).sum(1)] = END
    config = TransformerConfig.preset("tiny", source_vocab_size=16, target_vocab_size=16, max_length=16, dropout=0.0)
    model = build_transformer(config)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit({"encoder_tokens": source, "decoder_tokens": target[:, :-1]}, target[:, 1:], batch_size=64, epochs=6, verbose=0)
    return model, source[:6]


def full_model_argmax(model, source):
    """Greedy by re-running the whole model on the prefix, in NumPy."""
    tokens = np.zeros((len(source), MAX_LENGTH), "int32")
    tokens[:, 0] = START
    finished = np.zeros(len(source), bool)
    for t in range(MAX_LENGTH - 1):
        logits = keras.ops.convert_to_numpy(model({"encoder_tokens": source, "decoder_tokens": tokens[:, : t + 1]}))[:, t]
        logits[:, 0] = -np.inf  # padding is never generated
        next_token = np.where(finished, 0, logits.argmax(-1))
        tokens[:, t + 1] = next_token
        finished |= next_token == END
    return tokens


def penalised_score(model, source, outputs, alpha=0.6):
    """log P(output | source) / ((5 + |y|) / 6) ** alpha, by teacher forcing."""
    logits = keras.ops.convert_to_numpy(model({"encoder_tokens": source, "decoder_tokens": outputs[:, :-1]}))
    logits[..., 0] = -1e9
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    labels = outputs[:, 1:]
    token_log_probs = np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    real = labels != 0
    lengths = real.sum(1)
    return (token_log_probs * real).sum(1) / ((5 + lengths) / 6) ** alpha


def test_cached_equals_uncached_equals_full_model(copy_model):
    model, source = copy_model
    cached = keras.ops.convert_to_numpy(decoding.greedy_search(model, source, START, END, MAX_LENGTH))
    uncached = keras.ops.convert_to_numpy(decoding.greedy_search(model, source, START, END, MAX_LENGTH, use_cache=False))
    np.testing.assert_array_equal(cached, uncached)
    np.testing.assert_array_equal(cached, full_model_argmax(model, source))
    assert cached.dtype == np.int32 and cached.shape == (6, MAX_LENGTH)
    # Every output ends once, then holds padding; they end at different steps.
    assert np.all((cached == END).sum(1) == 1)
    ends = np.argmax(cached == END, axis=1)
    assert len(set(ends)) > 1
    for row, end in zip(cached, ends):
        assert np.all(row[1:end] > 2) and np.all(row[end + 1 :] == 0)


def test_end_id_none_runs_to_max_length(copy_model):
    model, source = copy_model
    tokens = keras.ops.convert_to_numpy(decoding.greedy_search(model, source, START, None, MAX_LENGTH))
    assert np.all(tokens[:, 1:] != 0)


def test_beam_search(copy_model):
    model, source = copy_model
    greedy = keras.ops.convert_to_numpy(decoding.greedy_search(model, source, START, END, MAX_LENGTH))
    beam_one = keras.ops.convert_to_numpy(decoding.beam_search(model, source, START, END, MAX_LENGTH, beam_size=1))
    np.testing.assert_array_equal(beam_one, greedy)
    beam = keras.ops.convert_to_numpy(decoding.beam_search(model, source, START, END, MAX_LENGTH, beam_size=4))
    assert beam.shape == greedy.shape and np.all(beam[:, 0] == START)
    assert np.all(penalised_score(model, source, beam) >= penalised_score(model, source, greedy) - 1e-4)


def test_beam_search_beats_greedy_on_a_weak_model():
    """An untrained model: greedy's local choices are poor, beam's score is higher."""
    keras.utils.set_random_seed(3)
    model = build_transformer(TransformerConfig.preset("tiny", source_vocab_size=16, target_vocab_size=16, max_length=16))
    source = np.random.default_rng(1).integers(3, 16, size=(8, 6)).astype("int32")
    greedy = keras.ops.convert_to_numpy(decoding.greedy_search(model, source, START, END, MAX_LENGTH))
    beam = keras.ops.convert_to_numpy(decoding.beam_search(model, source, START, END, MAX_LENGTH, beam_size=4))
    greedy_score, beam_score = penalised_score(model, source, greedy), penalised_score(model, source, beam)
    assert np.all(beam_score >= greedy_score - 1e-4)
    assert np.any(beam_score > greedy_score + 1e-3)


def test_inside_xla_gives_the_same_tokens(copy_model):
    model, source = copy_model
    eager = keras.ops.convert_to_numpy(decoding.greedy_search(model, source, START, END, MAX_LENGTH))
    for search in (decoding.greedy_search, decoding.beam_search):
        compiled = tf.function(lambda s: search(model, s, START, END, MAX_LENGTH), jit_compile=True)
        expected = eager if search is decoding.greedy_search else keras.ops.convert_to_numpy(
            search(model, source, START, END, MAX_LENGTH)
        )
        np.testing.assert_array_equal(compiled(tf.constant(source)).numpy(), expected)


def test_arguments_are_checked(copy_model):
    model, source = copy_model
    with pytest.raises(ValueError, match="max_length"):
        decoding.greedy_search(model, source, START, END, 17)
    with pytest.raises(ValueError, match="beam_size"):
        decoding.beam_search(model, source, START, END, MAX_LENGTH, beam_size=0)
    with pytest.raises(ValueError, match="tf_transformer.Transformer"):
        decoding.greedy_search(keras.Sequential([keras.layers.Dense(2)]), source, START, END, MAX_LENGTH)


JAX_DECODE = """
import numpy as np, keras, jax
import tf_transformer as tt
from tf_transformer import decoding
keras.utils.set_random_seed(0)
model = tt.build_transformer(tt.TransformerConfig.preset("tiny", source_vocab_size=20, target_vocab_size=20, max_length=16))
source = np.random.default_rng(0).integers(3, 20, size=(3, 7)).astype("int32")
cached = np.asarray(decoding.greedy_search(model, source, 1, 2, 10))
uncached = np.asarray(decoding.greedy_search(model, source, 1, 2, 10, use_cache=False))
jitted = np.asarray(jax.jit(lambda s: decoding.greedy_search(model, s, 1, 2, 10))(source))
beam = np.asarray(decoding.beam_search(model, source, 1, 2, 10, beam_size=1))
assert (cached == uncached).all() and (cached == jitted).all() and (cached == beam).all(), (cached, uncached, jitted, beam)
print("jax decode ok")
"""


def test_greedy_decoding_on_jax():
    run_on_jax(JAX_DECODE, "jax decode ok")


def test_decoding_under_mixed_precision():
    """bfloat16 compute, float32 variables: the cache keeps one dtype through the loop."""
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = build_transformer(TransformerConfig.preset("tiny", source_vocab_size=16, target_vocab_size=16, max_length=16))
    source = np.random.default_rng(0).integers(3, 16, size=(3, 5)).astype("int32")
    for search in (decoding.greedy_search, decoding.beam_search):
        tokens = tf.function(lambda s: search(model, s, START, END, MAX_LENGTH), jit_compile=True)(tf.constant(source))
        assert tokens.shape == (3, MAX_LENGTH) and tokens.dtype == tf.int32
        assert np.all(tokens.numpy()[:, 0] == START)


def test_compiled_argmax_is_the_first_index_of_the_maximum(rng):
    from tf_transformer.fast_paths import argmax as _argmax

    logits = rng.normal(size=(16, 50)).astype("float32")
    logits[3, [7, 20]] = 10.0  # a tie: the first index wins, as with argmax
    logits[5] = 0.0  # all equal
    compiled = tf.function(_argmax, jit_compile=True)(tf.constant(logits)).numpy()
    np.testing.assert_array_equal(compiled, np.argmax(logits, axis=-1))
    assert compiled[3] == 7 and compiled[5] == 0
    # A NaN row (a diverged model) still gives a valid id, never the vocabulary size.
    logits[0] = np.nan
    assert 0 <= tf.function(_argmax, jit_compile=True)(tf.constant(logits)).numpy()[0] < 50


@pytest.mark.parametrize("axis, length", [(-1, 1), (1, 1), (1, 2)])
def test_write_at_index_writes_the_same_with_core_ops_and_under_xla(rng, axis, length):
    # One position with a one-hot `where` (core ops, for TF Serving without
    # XLA) or, under XLA and for longer updates, `slice_update` in place.
    from tf_transformer.fast_paths import write_at_index

    buffer = rng.normal(size=(2, 5, 3)).astype("float32")
    update_shape = list(buffer.shape)
    update_shape[axis] = length
    update = rng.normal(size=update_shape).astype("float32")
    index = tf.constant(2)
    expected = buffer.copy()
    where = [slice(None)] * 3
    where[axis] = slice(2, 2 + length)
    expected[tuple(where)] = update

    def write(buffer, update, index):
        return write_at_index(buffer, update, index, axis)

    for jit_compile in (False, True):
        got = tf.function(write, jit_compile=jit_compile)(buffer, update, index)
        np.testing.assert_array_equal(got.numpy(), expected)
    graph = tf.function(write).get_concrete_function(buffer, update, index).graph
    uses_xla_op = any(op.type.startswith("Xla") for op in graph.get_operations())
    assert uses_xla_op == (length > 1)  # a single position needs no XLA-only op
