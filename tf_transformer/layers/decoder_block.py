"""The decoder block: causal self-attention, cross-attention, feed-forward.

We use the notation B batch, T target length, S source (context) length,
L cache length, D model width (d_model), H heads, K head size.
"""

import keras
from keras import ops

from tf_transformer.layers.transformer_block import TransformerBlock, first_given


@keras.saving.register_keras_serializable(package="tf_transformer")
class DecoderBlock(TransformerBlock):
    """One decoder layer of the paper (section 3.1).

    Three sub-layers, each with a residual connection, dropout and layer
    normalisation: masked (causal) self-attention, so position t only sees
    positions <= t; cross-attention, whose queries come from the decoder and
    whose keys and values come from the encoder output (`context`); and the
    feed-forward network. Called with `context=None` — and built that way —
    the block has no cross-attention: a decoder-only (GPT-style) block.

    For incremental decoding the block keeps a key/value cache: the
    self-attention keys and values of the tokens decoded so far (a
    fixed-size buffer written in place at `cache_update_index`) and the
    cross-attention keys and values of the context, projected once
    (`initial_cache`). A step then costs O(L) instead of re-running the
    whole prefix.

    Args:
        Same as `EncoderBlock`: d_model, num_heads, dff, dropout, norm_first,
        layer_norm_epsilon, activation, attention_dropout, **kwargs.

    Call arguments:
        x: `[B, T, D]` target embeddings.
        context: `[B, S, D]` encoder output, or None for a decoder-only block.
        padding_mask: bool `[B, T]`, True on real target tokens (defaults to
            `x`'s Keras mask).
        context_padding_mask: bool `[B, S]`, True on real source tokens
            (defaults to `context`'s Keras mask).
        attention_mask: bool `[T, T]` or `[B, T, T]` for self-attention,
            ANDed with the causal and padding masks.
        training: whether dropout is active.
        return_attention_scores: also return `{"self": [B, H, T, T],
            "cross": [B, H, T, S]}` (no "cross" for a decoder-only block).
        self_attention_cache: `(key, value)` `[B, H, L, K]`, the
            self-attention keys and values of the positions decoded so far
            (from `initial_cache`); with it `x` holds the tokens at positions
            `cache_update_index …` (usually one), which are written into it.
        cross_attention_cache: `(key, value)` `[B, H, S, K]`, the context
            projected once (from `initial_cache`); `context` is then not read.
        cache_update_index: int scalar, the position of `x[:, 0]`.

    Returns:
        `[B, T, D]` (carrying `x`'s Keras mask); then the scores if asked
        for; then the updated `self_attention_cache` if one was given.
        (The names are KerasHub's `TransformerDecoder`'s.)

    Example:

    >>> block = DecoderBlock(d_model=16, num_heads=2, dff=32)
    >>> x = keras.random.normal((2, 5, 16))
    >>> context = keras.random.normal((2, 7, 16))
    >>> tuple(block(x, context).shape)
    (2, 5, 16)
    >>> tuple(DecoderBlock(d_model=16, num_heads=2, dff=32)(x).shape)  # decoder-only
    (2, 5, 16)
    """

    def __init__(self, d_model, num_heads, dff, **kwargs):
        super().__init__(d_model, num_heads, dff, **kwargs)
        self.self_attention = self._attention("self_attention")
        self.self_attention_norm = self._layer_norm("self_attention_norm")
        self.cross_attention = None
        self.cross_attention_norm = None

    def build(self, x_shape, context_shape=None):
        self._check_width(x_shape)
        self.self_attention.build(x_shape, x_shape)
        self.self_attention_norm.build(x_shape)
        if context_shape is not None:
            self._check_width(context_shape, "context")
            self.cross_attention = self._attention("cross_attention")
            self.cross_attention.build(x_shape, context_shape)
            self.cross_attention_norm = self._layer_norm("cross_attention_norm")
            self.cross_attention_norm.build(x_shape)
        self.feed_forward.build(x_shape)
        self.feed_forward_norm.build(x_shape)

    def initial_cache(self, batch_size, max_length, context=None):
        """An empty self-attention cache and the projected context.

        Args:
            batch_size: B.
            max_length: L, the most positions that will be decoded.
            context: `[B, S, D]` encoder output (needed with cross-attention).

        Returns:
            `(self_attention_cache, cross_attention_cache)`: `(key, value)`
            zeros `[B, H, L, K]`, and `(key, value)` `[B, H, S, K]` (None for
            a decoder-only block); heads first, see `MultiHeadAttention`'s
            `cache`.
        """
        shape = (batch_size, self.num_heads, max_length, self.d_model // self.num_heads)
        self_attention_cache = (ops.zeros(shape, dtype=self.compute_dtype), ops.zeros(shape, dtype=self.compute_dtype))
        if self.cross_attention is None:
            return self_attention_cache, None
        if context is None:
            raise ValueError("This block has cross-attention: `initial_cache` needs the `context`.")
        return self_attention_cache, self.cross_attention.compute_cache(ops.cast(context, self.compute_dtype))

    def call(
        self,
        x,
        context=None,
        padding_mask=None,
        context_padding_mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        self_attention_cache=None,
        cross_attention_cache=None,
        cache_update_index=None,
        mask=None,
        x_mask=None,
        context_mask=None,
    ):
        # Explicit masks win over the Keras masks Keras fills in (`mask` when
        # `x` is the only tensor argument, `x_mask`/`context_mask` otherwise).
        padding_mask = first_given(padding_mask, x_mask, mask)
        context_padding_mask = first_given(context_padding_mask, context_mask)
        has_context = context is not None or cross_attention_cache is not None
        if has_context and self.cross_attention is None:
            raise ValueError(
                "This DecoderBlock was built without a context (decoder-only), "
                "so it has no cross-attention; call it without `context`."
            )
        if (self_attention_cache is None) != (cache_update_index is None):
            raise ValueError("`self_attention_cache` and `cache_update_index` must be given together.")
        scores, new_cache = {}, {}

        def unpack(result, kind, cached):
            # MultiHeadAttention returns output[, scores][, cache].
            result = result if isinstance(result, tuple) else (result,)
            if return_attention_scores:
                scores[kind] = result[1]
            if cached:
                new_cache[kind] = result[-1]
            return result[0], None

        def self_attend(h):
            return unpack(
                self.self_attention(
                    h, h,
                    query_mask=padding_mask,
                    value_mask=padding_mask,
                    attention_mask=attention_mask,
                    use_causal_mask=True,
                    return_attention_scores=return_attention_scores,
                    training=training,
                    cache=self_attention_cache,
                    cache_update_index=cache_update_index,
                ),
                "self",
                self_attention_cache is not None,
            )

        def cross_attend(h):
            # With a cache the context's keys and values are already
            # projected: MultiHeadAttention ignores its `value` argument.
            return unpack(
                self.cross_attention(
                    h, h if context is None else context,
                    query_mask=padding_mask,
                    value_mask=context_padding_mask,
                    return_attention_scores=return_attention_scores,
                    training=training,
                    cache=cross_attention_cache,
                ),
                "cross",
                cross_attention_cache is not None,
            )

        x, _ = self._residual(x, self.self_attention_norm, self_attend, training)
        if has_context:
            x, _ = self._residual(x, self.cross_attention_norm, cross_attend, training)
        x = self._feed_forward(x, training)

        outputs = (x,)
        if return_attention_scores:
            outputs += (scores,)
        if self_attention_cache is not None:
            outputs += (new_cache["self"],)
        return outputs[0] if len(outputs) == 1 else outputs
