"""scaled_dot_product_attention, positional encodings and masks against NumPy."""

import keras
import numpy as np
import pytest

from layer_test_helper import run_layer_test
from tf_transformer import masks, positional_encoding
from tf_transformer.layers import PositionalEncoding, SelfAttention, scaled_dot_product_attention


def numpy_attention(query, key, value, mask=None):
    scores = query @ np.swapaxes(key, -1, -2) / np.sqrt(query.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    scores = scores - scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights = weights / weights.sum(axis=-1, keepdims=True)
    return weights @ value, weights


def test_attention_matches_numpy(rng):
    query = rng.normal(size=(2, 3, 4, 8)).astype("float32")
    key = rng.normal(size=(2, 3, 6, 8)).astype("float32")
    value = rng.normal(size=(2, 3, 6, 5)).astype("float32")
    output, weights = scaled_dot_product_attention(query, key, value)
    expected_output, expected_weights = numpy_attention(query, key, value)
    np.testing.assert_allclose(weights, expected_weights, atol=1e-6)
    np.testing.assert_allclose(output, expected_output, atol=1e-5)


def test_masked_keys_get_exactly_zero_weight(rng):
    query = rng.normal(size=(2, 4, 8)).astype("float32")
    key = value = rng.normal(size=(2, 6, 8)).astype("float32")
    mask = rng.random((2, 4, 6)) > 0.4
    mask[:, :, 0] = True  # every row keeps at least one key
    output, weights = scaled_dot_product_attention(query, key, value, mask)
    weights = keras.ops.convert_to_numpy(weights)
    assert np.all(weights[~mask] == 0.0)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    expected_output, _ = numpy_attention(query, key, value, mask)
    np.testing.assert_allclose(output, expected_output, atol=1e-5)


def test_fully_masked_row_gives_zeros_not_nan(rng):
    query = rng.normal(size=(1, 2, 4)).astype("float32")
    key = value = rng.normal(size=(1, 3, 4)).astype("float32")
    mask = np.array([[[True, False, True], [False, False, False]]])
    for dtype in ("float32", "float16"):
        output, weights = scaled_dot_product_attention(
            query.astype(dtype), key.astype(dtype), value.astype(dtype), mask
        )
        output = keras.ops.convert_to_numpy(output)
        assert not np.any(np.isnan(output))
        assert np.all(keras.ops.convert_to_numpy(weights)[0, 1] == 0.0)
        assert np.all(output[0, 1] == 0.0)


def test_attention_rejects_mismatched_depth():
    with pytest.raises(ValueError, match="last dimension"):
        scaled_dot_product_attention(np.ones((1, 2, 4)), np.ones((1, 3, 5)), np.ones((1, 3, 5)))


def numpy_positional_encoding(length, depth):
    table = np.zeros((length, depth))
    for pos in range(length):
        for i in range(depth):
            angle = pos / 10000 ** (2 * (i // 2) / depth)
            table[pos, i] = np.sin(angle) if i % 2 == 0 else np.cos(angle)
    return table


@pytest.mark.parametrize("depth", [16, 7])
def test_positional_encoding_matches_numpy(depth):
    table = keras.ops.convert_to_numpy(positional_encoding(50, depth))
    assert table.dtype == np.float32
    np.testing.assert_allclose(table, numpy_positional_encoding(50, depth), atol=2e-5)


def test_positional_encoding_known_values():
    table = keras.ops.convert_to_numpy(positional_encoding(4, 4))
    # Position 0: sin(0) = 0 on even dimensions, cos(0) = 1 on odd ones.
    np.testing.assert_allclose(table[0], [0.0, 1.0, 0.0, 1.0], atol=1e-7)
    # Position 3, dimensions 0-1 use frequency 1, dimensions 2-3 use 1/100.
    np.testing.assert_allclose(table[3], [np.sin(3), np.cos(3), np.sin(0.03), np.cos(0.03)], atol=1e-6)


def test_positional_encoding_layer(tmp_path):
    x = np.zeros((2, 5, 8), "float32")
    _, output = run_layer_test(
        PositionalEncoding, {"max_length": 10}, x, expected_output_shape=(2, 5, 8), tmp_path=tmp_path
    )
    np.testing.assert_allclose(output[1], numpy_positional_encoding(5, 8), atol=2e-5)
    layer = PositionalEncoding(10)
    start = layer(x, start_index=3)
    np.testing.assert_allclose(start[0], numpy_positional_encoding(8, 8)[3:8], atol=2e-5)


def test_positional_encoding_passes_masks():
    inputs = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 8, mask_zero=True)(inputs)
    x = PositionalEncoding(16)(x)
    assert x._keras_mask is not None


def test_positional_encoding_rejects_too_long():
    with pytest.raises(ValueError, match="longer than max_length"):
        PositionalEncoding(4)(np.zeros((1, 5, 8), "float32"))


def test_masks():
    np.testing.assert_array_equal(masks.padding_mask(np.array([[5, 7, 0, 0]])), [[True, True, False, False]])
    np.testing.assert_array_equal(masks.causal_mask(3), np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(masks.causal_mask(2, 4), np.tril(np.ones((2, 4), bool)))
    merged = masks.merge_masks(
        3, 3,
        query_mask=np.array([[True, True, False]]),
        key_mask=np.array([[True, True, False]]),
        use_causal_mask=True,
    )
    expected = np.tril(np.ones((3, 3), bool))
    expected[2, :] = False
    expected[:, 2] = False
    np.testing.assert_array_equal(merged, expected[None])
    with pytest.raises(ValueError, match="rank 2"):
        masks.merge_masks(3, 3, attention_mask=np.ones((3,), bool))


def test_self_attention_is_the_course_formula(rng, tmp_path):
    x = rng.normal(size=(2, 5, 6)).astype("float32")
    layer, output = run_layer_test(
        SelfAttention, {"key_dim": 4}, x, expected_output_shape=(2, 5, 4),
        expected_num_trainable_weights=6, tmp_path=tmp_path,
    )
    wq, bq, wk, bk, wv, bv = layer.get_weights()
    expected, _ = numpy_attention(x @ wq + bq, x @ wk + bk, x @ wv + bv)
    np.testing.assert_allclose(output, expected, atol=1e-5)


def test_self_attention_honours_implicit_mask(rng):
    tokens = np.array([[3, 4, 5, 0, 0]])
    embed = keras.layers.Embedding(10, 6, mask_zero=True)
    layer = SelfAttention(4)
    implicit, weights = layer(embed(tokens), return_attention_scores=True)
    explicit = layer(embed(tokens), mask=tokens != 0)
    np.testing.assert_allclose(implicit, explicit)
    assert np.all(keras.ops.convert_to_numpy(weights)[0, :, 3:] == 0.0)
    causal, weights = layer(embed(tokens), use_causal_mask=True, return_attention_scores=True)
    assert np.all(np.triu(keras.ops.convert_to_numpy(weights)[0], 1) == 0.0)
