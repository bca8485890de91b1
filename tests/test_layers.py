"""Embedding, feed-forward, blocks, encoder and decoder: shared checks, masks, caches."""

import keras
import numpy as np
import pytest

from layer_test_helper import run_layer_test
from tf_transformer.layers import (
    Decoder,
    DecoderBlock,
    Encoder,
    EncoderBlock,
    FeedForward,
    TokenAndPositionEmbedding,
    positional_encoding,
)

BLOCK = {"d_model": 16, "num_heads": 2, "dff": 32}
STACK = {"num_layers": 2, **BLOCK, "max_length": 12}
SOURCE = np.array([[4, 8, 15, 16, 0, 0], [23, 42, 7, 9, 11, 3]], "int32")
TARGET = np.array([[1, 5, 6, 0, 0], [1, 2, 3, 4, 5]], "int32")


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def test_token_and_position_embedding(tmp_path):
    layer, output = run_layer_test(
        TokenAndPositionEmbedding,
        {"vocab_size": 50, "d_model": 8, "max_length": 10},
        SOURCE,
        expected_output_shape=(2, 6, 8),
        expected_num_trainable_weights=1,
        tmp_path=tmp_path,
    )
    (table,) = layer.get_weights()
    expected = table[SOURCE] * np.sqrt(8) + numpy(positional_encoding(6, 8))
    np.testing.assert_allclose(output, expected, atol=1e-5)
    np.testing.assert_array_equal(numpy(layer.compute_mask(SOURCE)), SOURCE != 0)
    hidden = np.ones((2, 3, 8), "float32")
    np.testing.assert_allclose(layer(hidden, reverse=True), hidden @ table.T, atol=1e-5)


@pytest.mark.parametrize(
    "tokens, message",
    [
        (np.array([[1, 50]]), "out of range"),
        (np.array([[1, -1]]), "out of range"),
        (np.zeros((1, 11), "int32"), "longer than max_length"),
        (np.array([[1.0, 2.0]], "float32"), "integers"),
        (np.array([1, 2]), "shape"),
    ],
)
def test_embedding_rejects_bad_tokens(tokens, message):
    with pytest.raises(ValueError, match=message):
        TokenAndPositionEmbedding(50, 8, max_length=10)(tokens)


def test_feed_forward(rng, tmp_path):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    layer, output = run_layer_test(
        FeedForward, {"d_model": 16, "dff": 32, "dropout": 0.1}, x,
        expected_output_shape=(2, 5, 16), expected_num_trainable_weights=4, tmp_path=tmp_path,
    )
    w1, b1, w2, b2 = layer.get_weights()
    np.testing.assert_allclose(output, np.maximum(x @ w1 + b1, 0) @ w2 + b2, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_block(rng, tmp_path, norm_first):
    x = rng.normal(size=(2, 6, 16)).astype("float32")
    run_layer_test(
        EncoderBlock, {**BLOCK, "norm_first": norm_first}, x,
        expected_output_shape=(2, 6, 16), expected_num_trainable_weights=16, tmp_path=tmp_path,
    )


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block(rng, tmp_path, norm_first):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    context = rng.normal(size=(2, 7, 16)).astype("float32")
    run_layer_test(
        DecoderBlock, {**BLOCK, "norm_first": norm_first}, (x, context),
        expected_output_shape=(2, 5, 16), expected_num_trainable_weights=26, tmp_path=tmp_path,
    )
    # Decoder-only: no cross-attention weights at all.
    run_layer_test(
        DecoderBlock, BLOCK, x, expected_output_shape=(2, 5, 16),
        expected_num_trainable_weights=16, tmp_path=tmp_path, run_mixed_precision=False,
    )


def test_encoder_block_implicit_mask_equals_explicit():
    embed = TokenAndPositionEmbedding(50, 16, max_length=10)
    block = EncoderBlock(**BLOCK)
    implicit = numpy(block(embed(SOURCE)))
    x = numpy(embed(SOURCE))  # a plain array: no Keras mask
    explicit = numpy(block(x, padding_mask=SOURCE != 0))
    unmasked = numpy(block(x))
    real = SOURCE != 0
    np.testing.assert_allclose(implicit[real], explicit[real], atol=1e-6)
    assert not np.allclose(unmasked[0][real[0]], explicit[0][real[0]], atol=1e-4)


def test_decoder_block_implicit_masks_equal_explicit(rng):
    source_embed = TokenAndPositionEmbedding(50, 16, max_length=10)
    target_embed = TokenAndPositionEmbedding(50, 16, max_length=10)
    block = DecoderBlock(**BLOCK)
    implicit = numpy(block(target_embed(TARGET), source_embed(SOURCE)))
    explicit = numpy(
        block(
            numpy(target_embed(TARGET)), numpy(source_embed(SOURCE)),
            padding_mask=TARGET != 0, context_padding_mask=SOURCE != 0,
        )
    )
    real = TARGET != 0
    np.testing.assert_allclose(implicit[real], explicit[real], atol=1e-6)


def test_blocks_ignore_padding(rng):
    """Appending padding to the source changes nothing at real positions."""
    embed = TokenAndPositionEmbedding(50, 16, max_length=10)
    encoder_block, decoder_block = EncoderBlock(**BLOCK), DecoderBlock(**BLOCK)
    padded = np.pad(SOURCE, ((0, 0), (0, 3)))
    short_context = encoder_block(embed(SOURCE))
    long_context = encoder_block(embed(padded))
    real = SOURCE != 0
    np.testing.assert_allclose(numpy(long_context)[:, :6][real], numpy(short_context)[real], atol=1e-5)
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    np.testing.assert_allclose(
        decoder_block(x, embed(padded)), decoder_block(x, embed(SOURCE)), atol=1e-5
    )


def test_decoder_block_is_causal(rng):
    block = DecoderBlock(**BLOCK)
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    context = rng.normal(size=(2, 7, 16)).astype("float32")
    changed = x.copy()
    changed[:, 3] += 1.0
    before, after = numpy(block(x, context)), numpy(block(changed, context))
    np.testing.assert_allclose(before[:, :3], after[:, :3], atol=1e-6)
    assert not np.allclose(before[:, 3], after[:, 3])


@pytest.mark.parametrize("with_context", [True, False])
def test_decoder_block_cache_equals_full_pass(rng, with_context):
    block = DecoderBlock(**BLOCK, norm_first=True)
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    context = rng.normal(size=(2, 7, 16)).astype("float32") if with_context else None
    context_mask = np.array([[True] * 5 + [False] * 2, [True] * 7]) if with_context else None
    full = numpy(block(x, context, context_padding_mask=context_mask))
    self_cache, cross_cache = block.initial_cache(2, 5, context)
    assert (cross_cache is None) == (not with_context)
    for t in range(5):
        # The cross cache stands in for the context, which is not passed.
        step, self_cache = block(
            x[:, t : t + 1], context_padding_mask=context_mask, self_attention_cache=self_cache,
            cross_attention_cache=cross_cache, cache_update_index=t,
        )
        np.testing.assert_allclose(numpy(step)[:, 0], full[:, t], atol=1e-5)


def test_decoder_block_scores():
    block = DecoderBlock(**BLOCK)
    x, context = np.ones((2, 5, 16), "float32"), np.ones((2, 7, 16), "float32")
    _, scores = block(x, context, return_attention_scores=True)
    assert tuple(scores["self"].shape) == (2, 2, 5, 5)
    assert tuple(scores["cross"].shape) == (2, 2, 5, 7)
    assert np.all(np.triu(numpy(scores["self"]), 1) == 0.0)  # causal


def test_decoder_only_block_rejects_context():
    block = DecoderBlock(**BLOCK)
    block(np.ones((1, 3, 16), "float32"))
    with pytest.raises(ValueError, match="decoder-only"):
        block(np.ones((1, 3, 16), "float32"), np.ones((1, 4, 16), "float32"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"d_model": 10, "num_heads": 3}, "divisible"),
        ({"d_model": 0}, "d_model"),
        ({"dff": -4}, "dff"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"layer_norm_epsilon": 0}, "layer_norm_epsilon"),
    ],
)
def test_blocks_validate_arguments(kwargs, message):
    for block_class in (EncoderBlock, DecoderBlock):
        with pytest.raises(ValueError, match=message):
            block_class(**{**BLOCK, **kwargs})


def test_block_rejects_wrong_width():
    with pytest.raises(ValueError, match="d_model=16"):
        EncoderBlock(**BLOCK)(np.ones((1, 3, 8), "float32"))


def test_encoder(tmp_path):
    layer, output = run_layer_test(
        Encoder, {**STACK, "vocab_size": 50}, SOURCE,
        expected_output_shape=(2, 6, 16), expected_num_trainable_weights=33, tmp_path=tmp_path,
    )
    assert layer.compute_mask(SOURCE) is not None
    _, scores = layer(SOURCE, return_attention_scores=True)
    assert len(scores) == 2 and tuple(scores[0].shape) == (2, 2, 6, 6)


def test_decoder(tmp_path):
    encoder = Encoder(**STACK, vocab_size=50)
    context = numpy(encoder(SOURCE))
    run_layer_test(
        Decoder, {**STACK, "vocab_size": 40, "norm_first": True}, (TARGET, context),
        expected_output_shape=(2, 5, 16), expected_num_trainable_weights=55, tmp_path=tmp_path,
    )


def test_encoder_output_mask_reaches_decoder():
    encoder = Encoder(**STACK, vocab_size=50)
    decoder = Decoder(**STACK, vocab_size=40)
    implicit = numpy(decoder(TARGET, encoder(SOURCE)))
    explicit = numpy(decoder(TARGET, numpy(encoder(SOURCE)), context_padding_mask=SOURCE != 0))
    unmasked = numpy(decoder(TARGET, numpy(encoder(SOURCE))))
    np.testing.assert_allclose(implicit, explicit, atol=1e-6)
    assert not np.allclose(implicit[0], unmasked[0], atol=1e-4)
