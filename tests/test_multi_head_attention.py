"""Our MultiHeadAttention is a drop-in for keras.layers.MultiHeadAttention."""

import keras
import numpy as np
import pytest

from layer_test_helper import run_layer_test
from tf_transformer.layers import MultiHeadAttention

B, T, S = 2, 5, 7


def paired(num_heads=3, key_dim=4, dtype="float32", query_width=8, value_width=6, **kwargs):
    """Keras's layer and ours, built on the same shapes and given the same weights."""
    reference = keras.layers.MultiHeadAttention(num_heads, key_dim, dtype=dtype, **kwargs)
    ours = MultiHeadAttention(num_heads, key_dim, dtype=dtype, **kwargs)
    reference.build((B, T, query_width), (B, S, value_width))
    ours.build((B, T, query_width), (B, S, value_width))
    assert [w.shape for w in ours.get_weights()] == [w.shape for w in reference.get_weights()]
    ours.set_weights(reference.get_weights())
    return reference, ours


def assert_same(reference_result, our_result, atol=1e-5):
    for expected, actual in zip(keras.tree.flatten(reference_result), keras.tree.flatten(our_result)):
        assert expected.shape == actual.shape
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(keras.ops.cast(actual, "float32")),
            keras.ops.convert_to_numpy(keras.ops.cast(expected, "float32")),
            atol=atol,
        )


@pytest.fixture
def data(rng):
    return {
        "query": rng.normal(size=(B, T, 8)).astype("float32"),
        "value": rng.normal(size=(B, S, 6)).astype("float32"),
        "key": rng.normal(size=(B, S, 6)).astype("float32"),
    }


@pytest.mark.parametrize(
    "mask_kind", ["none", "rank2", "rank3", "rank4", "causal", "causal_and_rank3", "zero_one"]
)
@pytest.mark.parametrize("scores", [False, True])
def test_parity_with_keras(data, rng, mask_kind, scores):
    reference, ours = paired()
    kwargs = {}
    if mask_kind == "rank2":
        kwargs["attention_mask"] = rng.random((T, S)) > 0.3
    elif mask_kind == "rank3":
        kwargs["attention_mask"] = rng.random((B, T, S)) > 0.3
    elif mask_kind == "rank4":
        kwargs["attention_mask"] = rng.random((B, 3, T, S)) > 0.3
    elif mask_kind == "causal":
        kwargs["use_causal_mask"] = True
    elif mask_kind == "causal_and_rank3":
        kwargs = {"use_causal_mask": True, "attention_mask": rng.random((B, T, S)) > 0.3}
    elif mask_kind == "zero_one":
        kwargs["attention_mask"] = (rng.random((B, T, S)) > 0.3).astype("int32")
    args = (data["query"], data["value"], data["key"])
    assert_same(
        reference(*args, return_attention_scores=scores, **kwargs),
        ours(*args, return_attention_scores=scores, **kwargs),
    )


def test_self_attention_parity(data):
    reference, ours = paired(value_width=8)
    query = data["query"]
    assert_same(
        reference(query, query, return_attention_scores=True),
        ours(query, query, return_attention_scores=True),
    )


def test_implicit_masks_match_keras_and_propagate(rng):
    reference, ours = paired(query_width=6)
    embed_query = keras.layers.Embedding(20, 6, mask_zero=True)
    embed_value = keras.layers.Embedding(20, 6, mask_zero=True)
    query_tokens = np.array([[3, 4, 5, 0, 0], [1, 2, 3, 4, 5]])
    value_tokens = np.array([[3, 4, 5, 6, 0, 0, 0], [1, 2, 3, 4, 5, 6, 7]])

    def embedded():
        # Fresh tensors per call: Keras's layer deletes the masks of its inputs.
        return embed_query(query_tokens), embed_value(value_tokens)

    expected, expected_scores = reference(*embedded(), return_attention_scores=True)
    output, scores = ours(*embedded(), return_attention_scores=True)
    assert_same((expected, expected_scores), (output, scores))
    # The same without scores (the fused path): compare real query positions.
    real = query_tokens != 0
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(*embedded()))[real],
        keras.ops.convert_to_numpy(reference(*embedded()))[real],
        atol=1e-5,
    )
    query, value = embedded()
    # Padded keys get no weight, and the query's mask reaches the output.
    assert np.all(keras.ops.convert_to_numpy(scores)[0, :, :, 4:] == 0.0)
    # Implicit masks == the same masks given explicitly.
    explicit = ours(
        keras.ops.convert_to_numpy(query), keras.ops.convert_to_numpy(value),
        query_mask=real, value_mask=value_tokens != 0,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(explicit)[real], keras.ops.convert_to_numpy(output)[real], atol=1e-6
    )
    # In a functional model the output carries the query's Keras mask.
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(20, 6, mask_zero=True)(tokens)
    y = MultiHeadAttention(2, 3)(x, x)
    assert y._keras_mask is not None


def test_float16_parity(data):
    reference, ours = paired(dtype="float16")
    args = (data["query"].astype("float16"), data["value"].astype("float16"))
    # float16 has ~3 decimal digits: compare at its resolution.
    assert_same(reference(*args, use_causal_mask=True), ours(*args, use_causal_mask=True), atol=2e-2)
    output = ours(*args)
    assert keras.backend.standardize_dtype(output.dtype) == "float16"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(output)))


def test_output_shape_and_value_dim_parity(data):
    reference, ours = paired(value_dim=5, output_shape=(2, 3), use_bias=False)
    assert_same(reference(data["query"], data["value"]), ours(data["query"], data["value"]))


def test_identity_kernels_hand_computed():
    # One head of size 2, identity projections, no bias: output = attention.
    layer = MultiHeadAttention(num_heads=1, key_dim=2, use_bias=False, kernel_initializer="zeros")
    query = np.array([[[1.0, 0.0]]], "float32")  # [1, 1, 2]
    value = np.array([[[1.0, 0.0], [0.0, 1.0]]], "float32")  # [1, 2, 2]
    layer.build(query.shape, value.shape)
    identity = np.eye(2, dtype="float32")[:, None, :]  # [D, H, K]
    layer.set_weights([identity, identity, identity, np.eye(2, dtype="float32")[None]])
    output, scores = layer(query, value, return_attention_scores=True)
    # scores: q·k / √2 = [1/√2, 0] → softmax → [e^a, 1] / (e^a + 1), a = 1/√2.
    a = 1 / np.sqrt(2)
    expected = np.array([np.exp(a), 1.0]) / (np.exp(a) + 1)
    np.testing.assert_allclose(scores[0, 0, 0], expected, atol=1e-6)
    np.testing.assert_allclose(output[0, 0], expected, atol=1e-6)  # values are one-hot


def test_symbolic_scores_have_query_and_key_lengths():
    query = keras.Input((T, 8))
    value = keras.Input((S, 6))
    output, scores = MultiHeadAttention(3, 4)(query, value, return_attention_scores=True)
    assert tuple(output.shape) == (None, T, 8)
    assert tuple(scores.shape) == (None, 3, T, S)  # keras's own layer says (None, 3, T, T)


def test_compute_output_shape_accepts_tuples_and_lists():
    layer = MultiHeadAttention(2, 4, output_shape=10)
    assert layer.compute_output_shape((B, T, 8), (B, S, 6)) == (B, T, 10)
    assert layer.compute_output_shape([B, T, 8], [B, S, 6]) == (B, T, 10)
    assert MultiHeadAttention(2, 4).compute_output_shape([B, T, 8], [B, S, 6]) == (B, T, 8)


def test_shared_layer_checks(data, tmp_path):
    run_layer_test(
        MultiHeadAttention,
        {"num_heads": 2, "key_dim": 4, "dropout": 0.1},
        (data["query"], data["value"]),
        expected_output_shape=(B, T, 8),
        expected_num_trainable_weights=8,
        tmp_path=tmp_path,
    )


def test_cache_equals_full_pass(rng):
    layer = MultiHeadAttention(2, 4)
    x = rng.normal(size=(B, T, 8)).astype("float32")
    full = keras.ops.convert_to_numpy(layer(x, x, use_causal_mask=True))
    cache = (np.zeros((B, 2, T, 4), "float32"), np.zeros((B, 2, T, 4), "float32"))
    for t in range(T):
        step, cache = layer(x[:, t : t + 1], x[:, t : t + 1], use_causal_mask=True, cache=cache, cache_update_index=t)
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-5)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_cache_equals_full_pass_in_a_compiled_step(rng, jit_compile):
    """Compiled steps write the cache differently (a one-hot `where` without
    XLA, in-place `slice_update` with it); both must give the full pass."""
    import tensorflow as tf

    layer = MultiHeadAttention(2, 4)
    x = rng.normal(size=(B, T, 8)).astype("float32")
    full = keras.ops.convert_to_numpy(layer(x, x, use_causal_mask=True))
    step_fn = tf.function(
        lambda x, cache, t: layer(x, x, use_causal_mask=True, cache=cache, cache_update_index=t),
        jit_compile=jit_compile,
    )
    cache = (np.zeros((B, 2, T, 4), "float32"), np.zeros((B, 2, T, 4), "float32"))
    for t in range(T):
        step, cache = step_fn(x[:, t : t + 1], cache, tf.constant(t))
        np.testing.assert_allclose(step[:, 0], full[:, t], atol=1e-5)
    # The cache holds every position's projected keys, nothing left at zero.
    assert np.all(np.abs(cache[0].numpy()).sum(axis=(1, 3)) > 0)


def test_constructor_validates():
    with pytest.raises(ValueError, match="num_heads"):
        MultiHeadAttention(0, 4)
    with pytest.raises(ValueError, match="dropout"):
        MultiHeadAttention(2, 4, dropout=1.0)
    with pytest.raises(ValueError, match="flash_attention"):
        MultiHeadAttention(2, 4, flash_attention="yes")
    with pytest.raises(ValueError, match="shape"):
        MultiHeadAttention(2, 4)(np.ones((2, 3, 4, 5), "float32"), np.ones((2, 3, 4, 5), "float32"))


def test_flash_attention_choice_reaches_the_fused_kernel(rng, monkeypatch):
    # As keras.layers.MultiHeadAttention: None follows the global switch
    # (unset: the backend decides), False never uses the flash kernel.
    chosen = []
    fused = keras.ops.dot_product_attention

    def spy(*args, **kwargs):
        chosen.append(kwargs.get("flash_attention"))
        return fused(*args, **kwargs)

    monkeypatch.setattr(keras.ops, "dot_product_attention", spy)
    x = rng.normal(size=(B, T, 8)).astype("float32")
    default = MultiHeadAttention(2, 4)
    off = MultiHeadAttention.from_config(MultiHeadAttention(2, 4, flash_attention=False).get_config())
    outputs = [keras.ops.convert_to_numpy(default(x, x))]
    off(x, x)
    off.set_weights(default.get_weights())
    outputs.append(keras.ops.convert_to_numpy(off(x, x)))
    try:
        keras.config.disable_flash_attention()
        default(x, x)  # a built layer follows the switch too (read when traced)
    finally:
        keras.backend.clear_session()  # resets the switch to unset
    assert chosen == [None, False, False, False]
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-6)


def test_kernel_gradients_are_one_product_per_projection(rng):
    # On TensorFlow the einsum "btd,dhk->bthk" is a broadcasting batch
    # matmul whose kernel gradient is B per-example [D, H·K] products summed
    # afterwards; the projections are tensordots so that each kernel
    # gradient is one [B·T, D]ᵀ·[B·T, H·K] product. Looked for in the
    # gradient graph (no per-example kernel-shaped tensor), not timed.
    tf = pytest.importorskip("tensorflow")
    if keras.backend.backend() != "tensorflow":
        pytest.skip("TensorFlow graphs only")
    batch, width, heads, key_dim = 3, 7, 2, 5
    layer = MultiHeadAttention(heads, key_dim)
    x = tf.constant(rng.normal(size=(batch, 4, width)).astype("float32"))
    layer(x, x)

    @tf.function
    def gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, x) ** 2)
        return tape.gradient(loss, layer.trainable_variables)

    graph = gradients.get_concrete_function().graph
    per_example = [
        op.name
        for op in graph.get_operations()
        for output in op.outputs
        if output.shape.rank is not None
        and tuple(output.shape) in ((batch, width, heads * key_dim), (batch, width, heads, key_dim))
    ]
    assert per_example == []
    assert all(g is not None for g in gradients())
