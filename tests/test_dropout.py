"""Dropout: Keras's semantics, with a counter-hash mask when XLA compiles the call."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_test_helper import run_layer_test, run_on_jax

from tf_transformer.layers import Dropout
from tf_transformer import fast_paths
from tf_transformer.layers import dropout as dropout_module

RATE = 0.3


def xla(function):
    return tf.function(function, jit_compile=True)


def within_binomial(fraction, p, n, sigmas=5.0):
    return abs(fraction - p) < sigmas * math.sqrt(p * (1 - p) / n)


def correlation(a, b):
    return float(np.corrcoef(a.ravel().astype("float64"), b.ravel().astype("float64"))[0, 1])


def test_layer_contract(rng, tmp_path):
    run_layer_test(
        Dropout, {"rate": RATE, "seed": 3}, rng.normal(size=(2, 5, 8)).astype("float32"),
        expected_output_shape=(2, 5, 8), expected_num_trainable_weights=0, tmp_path=tmp_path,
    )


def test_xla_keeps_one_minus_rate_and_scales_the_rest():
    layer = Dropout(RATE, seed=7)
    x = np.full((1000, 1000), 2.0, "float32")
    y = xla(lambda x: layer(x, training=True))(x).numpy()
    kept = y != 0
    assert within_binomial(kept.mean(), 1 - RATE, y.size)
    np.testing.assert_allclose(y[kept], 2.0 / (1 - RATE), rtol=1e-6)
    # Rows are independent draws: the spread of their kept counts is binomial.
    per_row = kept.sum(axis=1)
    assert abs(per_row.std() / math.sqrt(1000 * RATE * (1 - RATE)) - 1) < 0.15


def test_xla_takes_the_hash_and_graph_mode_is_keras(rng):
    x = rng.normal(size=(64, 64)).astype("float32")
    ours, theirs = Dropout(RATE, seed=5), keras.layers.Dropout(RATE, seed=5)
    graph = [tf.function(lambda x, l=l: l(x, training=True))(x).numpy() for l in (ours, theirs)]
    np.testing.assert_array_equal(graph[0], graph[1])  # without XLA: Keras's own draws
    ours, theirs = Dropout(RATE, seed=5), keras.layers.Dropout(RATE, seed=5)
    compiled = [xla(lambda x, l=l: l(x, training=True))(x).numpy() for l in (ours, theirs)]
    assert not np.array_equal(compiled[0] != 0, compiled[1] != 0)  # under XLA: the hash


def test_masks_are_independent_across_draws_and_neighbours():
    layer = Dropout(0.5, seed=11)
    x = np.ones((512, 512), "float32")
    first, second = (m.numpy() != 0 for m in xla(lambda x: (layer(x, training=True), layer(x, training=True)))(x))
    bound = 5 / math.sqrt(first.size)
    assert not np.array_equal(first, second)
    assert abs(correlation(first, second)) < bound  # successive calls
    assert abs(correlation(first[:, 1:], first[:, :-1])) < bound  # neighbours along a row
    assert abs(correlation(first[1:], first[:-1])) < bound  # neighbours along a column


def test_random_bits_are_uniform():
    bits = xla(lambda: dropout_module.random_bits((1 << 20,), tf.constant([123, 4])))().numpy()
    assert bits.dtype == np.uint32
    # Every bit position is a fair coin ...
    for position in range(32):
        assert within_binomial(((bits >> position) & 1).mean(), 0.5, bits.size), position
    # ... and the top byte (what a threshold looks at) is uniform: chi-square,
    # 255 degrees of freedom, 360 is its 99.99th percentile.
    counts = np.bincount(bits >> 24, minlength=256)
    expected = bits.size / 256
    assert ((counts - expected) ** 2 / expected).sum() < 360


def test_seeds_make_draws_reproducible():
    x = np.ones((32, 32), "float32")

    def draw(seed):
        layer = Dropout(RATE, seed=seed)
        return xla(lambda x: layer(x, training=True))(x).numpy()

    np.testing.assert_array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


def test_gradient_is_the_mask_times_the_scale(rng):
    layer = Dropout(RATE, seed=2)
    x = tf.constant(rng.normal(size=(16, 32)).astype("float32"))

    @xla
    def forward_and_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            total = tf.reduce_sum(y)
        return y, tape.gradient(total, x)

    y, gradient = forward_and_gradient(x)
    expected = np.where(y.numpy() != 0, 1 / (1 - RATE), 0.0)
    np.testing.assert_allclose(gradient.numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("training, rate", [(False, RATE), (True, 0.0)])
def test_identity_when_not_dropping(rng, training, rate):
    x = rng.normal(size=(4, 8)).astype("float32")
    layer = Dropout(rate, seed=1)
    y = xla(lambda x: layer(x, training=training))(x)
    np.testing.assert_array_equal(y.numpy(), x)


def test_passes_the_keras_mask_through():
    tokens = np.array([[5, 3, 0, 0], [2, 0, 0, 0]], "int32")
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(tokens)
    output = Dropout(RATE, seed=1)(embedded, training=True)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(output._keras_mask), tokens != 0)


def test_fit_with_xla_draws_through_the_hash(monkeypatch):
    calls = []

    def counted(shape, seed):
        calls.append(shape)
        return original(shape, seed)

    original = dropout_module.random_bits
    monkeypatch.setattr(dropout_module, "random_bits", counted)
    x = np.ones((8, 4), "float32")
    for jit, expect_hash in ((False, False), (True, True)):
        calls.clear()
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4), Dropout(RATE, seed=1)])
        model.compile(optimizer="sgd", loss="mse", jit_compile=jit)
        model.fit(x, x, epochs=1, verbose=0)
        assert bool(calls) == expect_hash, jit


def test_only_int32_indexable_tensors_are_hashed():
    assert fast_paths.int32_indexable((None, 128, 512))
    assert fast_paths.int32_indexable((2**15, 2**15 - 1))
    assert not fast_paths.int32_indexable((2**16, 2**15))


def test_rejects_a_bad_rate():
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.5)


JAX_SCRIPT = """
import math, numpy as np, keras
from tf_transformer.layers import Dropout
layer = Dropout(0.3, seed=7)
x = np.ones((500, 500), "float32")
first = keras.ops.convert_to_numpy(layer(x, training=True))
second = keras.ops.convert_to_numpy(layer(x, training=True))
kept = first != 0
assert abs(kept.mean() - 0.7) < 5 * math.sqrt(0.21 / kept.size), kept.mean()
np.testing.assert_allclose(first[kept], 1 / 0.7, rtol=1e-6)
assert not np.array_equal(kept, second != 0)
print("jax dropout ok")
"""


def test_hashed_on_jax():
    run_on_jax(JAX_SCRIPT, "jax dropout ok")
