"""LayerNormalization: Keras's layer, with a closed-form gradient on the Transformer's path."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from layer_test_helper import run_layer_test, run_on_jax

from tf_transformer.layers import LayerNormalization


def twin_layers(shape, rng, **kwargs):
    """Ours and Keras's, built for `shape`, with the same non-trivial gamma and beta."""
    ours, theirs = LayerNormalization(**kwargs), keras.layers.LayerNormalization(**kwargs)
    for layer in (ours, theirs):
        layer.build(shape)
    weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in ours.weights]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    return ours, theirs


def output_and_gradients(layer, x, dy, mode):
    x = tf.Variable(x)

    def step():
        with tf.GradientTape() as tape:
            y = layer(x)
            loss = tf.reduce_sum(tf.cast(y, "float32") * dy)
        return [y] + tape.gradient(loss, [x] + layer.trainable_variables)

    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "xla")
    return [np.asarray(tf.cast(t, "float32")) for t in step()]


def test_layer_contract(rng, tmp_path):
    run_layer_test(
        LayerNormalization, {"epsilon": 1e-6}, rng.normal(size=(2, 5, 8)).astype("float32"),
        expected_output_shape=(2, 5, 8), expected_num_trainable_weights=2, tmp_path=tmp_path,
    )


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
@pytest.mark.parametrize("shape", [(4, 7, 16), (6, 16)])
def test_output_and_gradients_equal_autodiff_of_keras(rng, mode, shape):
    # An offset and a spread far from 0 and 1: a wrong mean or variance term shows.
    x = (rng.normal(size=shape) * 3.0 + 5.0).astype("float32")
    dy = rng.normal(size=shape).astype("float32")
    ours, theirs = twin_layers(shape, rng, epsilon=1e-6)
    for got, want, name in zip(
        output_and_gradients(ours, x, dy, mode), output_and_gradients(theirs, x, dy, mode),
        ("output", "d input", "d gamma", "d beta"),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)


def test_gradient_of_a_constant_row_is_finite(rng):
    # Variance 0: the epsilon keeps 1/σ finite in the closed form too.
    x = np.concatenate([np.full((1, 16), 3.0), rng.normal(size=(1, 16))]).astype("float32")
    dy = rng.normal(size=x.shape).astype("float32")
    ours, theirs = twin_layers(x.shape, rng, epsilon=1e-3)
    for got, want in zip(output_and_gradients(ours, x, dy, "graph"), output_and_gradients(theirs, x, dy, "graph")):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_backward_pass_has_fewer_operations_than_autodiff(rng):
    # What the layer is for: fewer operations per step where each is
    # dispatched on its own. Counted in the gradient graph, not timed.
    def count_operations(layer):
        x = tf.constant(rng.normal(size=(2, 3, 8)).astype("float32"))

        @tf.function
        def gradients():
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x))
            return tape.gradient(loss, [x] + layer.trainable_variables)

        graph = gradients.get_concrete_function().graph
        return sum(op.type not in ("Const", "Identity", "IdentityN", "NoOp", "ReadVariableOp") for op in graph.get_operations())

    ours, theirs = twin_layers((2, 3, 8), rng, epsilon=1e-6)
    assert count_operations(ours) < 0.8 * count_operations(theirs)


def test_mixed_precision_computes_in_float32_and_returns_bfloat16(rng):
    x = (rng.normal(size=(3, 4, 16)) * 2.0 + 1.0).astype("float32")
    dy = rng.normal(size=x.shape).astype("float32")
    ours, theirs = twin_layers(x.shape, rng, epsilon=1e-6, dtype="mixed_bfloat16")
    assert keras.backend.standardize_dtype(ours(x).dtype) == "bfloat16"
    for got, want in zip(output_and_gradients(ours, x, dy, "graph"), output_and_gradients(theirs, x, dy, "graph")):
        np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("kwargs", [{"axis": 1}, {"center": False}, {"scale": False}])
def test_other_configurations_are_keras_layer(rng, kwargs):
    x = rng.normal(size=(3, 4, 16)).astype("float32")
    dy = rng.normal(size=x.shape).astype("float32")
    ours, theirs = twin_layers(x.shape, rng, epsilon=1e-6, **kwargs)
    for got, want in zip(output_and_gradients(ours, x, dy, "graph"), output_and_gradients(theirs, x, dy, "graph")):
        np.testing.assert_array_equal(got, want)


def test_keras_mask_passes_through():
    tokens = keras.Input((None,), dtype="int32")
    normalized = LayerNormalization()(keras.layers.Embedding(10, 8, mask_zero=True)(tokens))
    mask = keras.Model(tokens, normalized)(np.array([[3, 4, 0]]))._keras_mask
    np.testing.assert_array_equal(np.asarray(mask), [[True, True, False]])


JAX_SCRIPT = """
import jax, keras, numpy as np
from tf_transformer.layers import LayerNormalization
rng = np.random.default_rng(0)
x = (rng.normal(size=(4, 5, 16)) * 3 + 5).astype("float32")
dy = rng.normal(size=x.shape).astype("float32")
ours, theirs = LayerNormalization(epsilon=1e-6), keras.layers.LayerNormalization(epsilon=1e-6)
for layer in (ours, theirs):
    layer.build(x.shape)
    layer.set_weights([rng.uniform(0.5, 1.5, 16).astype("float32") for _ in range(2)])
theirs.set_weights(ours.get_weights())

def grads(layer):
    def loss(x, gamma, beta):
        y, _ = layer.stateless_call([gamma, beta], [], x)
        return (y * dy).sum()
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, *[w.value for w in layer.weights])

for got, want in zip(grads(ours), grads(theirs)):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
print("jax layer norm ok")
"""


def test_closed_form_gradient_on_jax():
    run_on_jax(JAX_SCRIPT, "jax layer norm ok")
