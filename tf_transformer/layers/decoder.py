"""The decoder: token and position embedding, then N decoder blocks.

We use the notation B batch, T target length, S source length,
D model width (d_model), H heads, L decoding length.
"""

import keras
from keras import ops

from tf_transformer import masks
from tf_transformer.cache import KVCache
from tf_transformer.layers.decoder_block import DecoderBlock
from tf_transformer.layers.stack import TransformerStack
from tf_transformer.layers.transformer_block import first_given


@keras.saving.register_keras_serializable(package="tf_transformer")
class Decoder(TransformerStack):
    """The Transformer decoder (the paper's right half), without the final projection.

    `TokenAndPositionEmbedding`, dropout, then `num_layers` `DecoderBlock`s
    attending causally to the target and to the encoder output; pre-LN stacks
    end with a final layer normalisation. Project its output onto the
    vocabulary with a `Dense` layer, or with the embedding in reverse
    (`decoder.embedding(hidden, reverse=True)`, the paper's tied projection).

    For incremental decoding: `initial_cache` (a `KVCache`) and
    `decode_step`, which runs the blocks on the tokens at one position with
    the cache, O(L) per step instead of the whole prefix.

    Args:
        num_layers, d_model, num_heads, dff, vocab_size, max_length, dropout:
            as for `Encoder`; `vocab_size` is the target vocabulary.
        embedding: an existing `TokenAndPositionEmbedding` to use (e.g. the
            encoder's, for one embedding shared by source and target);
            default: a new one. A reloaded standalone `Decoder` gets its own
            copy (its weights saved with it); `Transformer` re-creates the
            sharing from its config.
        **kwargs: the blocks' other arguments and base `Layer` arguments,
            as for `Encoder`.

    Call arguments:
        tokens: int `[B, T]`, 0 = padding.
        context: `[B, S, D]`, the encoder output.
        context_padding_mask: bool `[B, S]`, True on real source tokens
            (defaults to `context`'s Keras mask, which `Encoder` sets).
        training: whether dropout is active.
        return_attention_scores: also return a list of
            `{"self": [B, H, T, T], "cross": [B, H, T, S]}`.

    Returns:
        `[B, T, D]`, and the scores if asked for.

    Example:

    >>> import numpy as np
    >>> from tf_transformer.layers import Encoder
    >>> encoder = Encoder(2, 16, 2, 32, vocab_size=100, max_length=10)
    >>> decoder = Decoder(2, 16, 2, 32, vocab_size=80, max_length=10)
    >>> context = encoder(np.array([[3, 9, 4, 0]]))
    >>> tuple(decoder(np.array([[1, 7, 7]]), context).shape)
    (1, 3, 16)
    """

    block_class = DecoderBlock

    def build(self, tokens_shape, context_shape):
        if not self.embedding.built:
            self.embedding.build(tokens_shape)
        x_shape = tuple(tokens_shape) + (self.block_config["d_model"],)
        for block in self.blocks:
            block.build(x_shape, context_shape)
        if self.final_norm is not None:
            self.final_norm.build(x_shape)

    def call(
        self,
        tokens,
        context,
        context_padding_mask=None,
        training=None,
        return_attention_scores=False,
        context_mask=None,
    ):
        context_padding_mask = first_given(context_padding_mask, context_mask)
        padding_mask = masks.padding_mask(tokens)
        x = self.embedding_dropout(self.embedding(tokens), training=training)
        scores = []
        for block in self.blocks:
            x = block(
                x,
                context,
                padding_mask=padding_mask,
                context_padding_mask=context_padding_mask,
                training=training,
                return_attention_scores=return_attention_scores,
            )
            if return_attention_scores:
                x, block_scores = x
                scores.append(block_scores)
        x = self._finish(x)
        return (x, scores) if return_attention_scores else x

    def initial_cache(self, context, max_length):
        """A `KVCache` for decoding up to `max_length` positions against `context` `[B, S, D]`."""
        if not self.built:  # the blocks' cross-attention exists once built with a context
            self.build((None, 1), tuple(context.shape))
        batch_size = ops.shape(context)[0]
        parts = [block.initial_cache(batch_size, max_length, context) for block in self.blocks]
        return KVCache(tuple(p[0] for p in parts), tuple(p[1] for p in parts))

    def decode_step(self, tokens, index, cache, context_padding_mask):
        """`(hidden [B, 1, D], cache)` for `tokens` `[B, 1]` at position `index`, reading and updating `cache`."""
        x = self.embedding(tokens, start_index=index)
        self_attention = []
        for block, self_cache, cross_cache in zip(self.blocks, cache.self_attention, cache.cross_attention):
            x, self_cache = block(
                x,
                context_padding_mask=context_padding_mask,
                self_attention_cache=self_cache,
                cross_attention_cache=cross_cache,
                cache_update_index=index,
            )
            self_attention.append(self_cache)
        return self._finish(x), KVCache(tuple(self_attention), cache.cross_attention)
