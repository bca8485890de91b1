"""The decoder: token and position embedding, then N decoder blocks.

We use the notation B batch, T target length, S source length,
D model width (d_model), H heads, L decoding length.
"""

import keras
from keras import ops

from tf_transformer import masks
from tf_transformer.cache import KVCache
from tf_transformer.layers.decoder_block import DecoderBlock
from tf_transformer.layers.dropout import Dropout
from tf_transformer.layers.layer_normalization import LayerNormalization
from tf_transformer.layers.token_and_position_embedding import TokenAndPositionEmbedding
from tf_transformer.layers.transformer_block import first_given
from tf_transformer.checks import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="tf_transformer")
class Decoder(keras.layers.Layer):
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
        num_layers, d_model, num_heads, dff, vocab_size, max_length, dropout,
        norm_first, layer_norm_epsilon, activation, attention_dropout: as
        for `Encoder`; `vocab_size` is the target vocabulary.
        embedding: an existing `TokenAndPositionEmbedding` to use (e.g. the
            encoder's, for one embedding shared by source and target);
            default: a new one. A reloaded standalone `Decoder` gets its own
            copy (its weights saved with it); `Transformer` re-creates the
            sharing from its config.
        **kwargs: base `Layer` arguments.

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

    def __init__(
        self,
        num_layers,
        d_model,
        num_heads,
        dff,
        vocab_size,
        max_length,
        dropout=0.1,
        norm_first=False,
        layer_norm_epsilon=1e-6,
        activation="relu",
        attention_dropout=0.0,
        embedding=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.max_length = check_positive_int("max_length", max_length)
        self.dropout = check_rate("dropout", dropout)
        self.block_config = dict(
            d_model=d_model,
            num_heads=num_heads,
            dff=dff,
            dropout=dropout,
            norm_first=norm_first,
            layer_norm_epsilon=layer_norm_epsilon,
            activation=activation,
            attention_dropout=attention_dropout,
        )
        self.supports_masking = True
        if isinstance(embedding, dict):  # from `get_config`
            embedding = keras.saving.deserialize_keras_object(embedding)
        if embedding is not None and (
            embedding.vocab_size != vocab_size or embedding.d_model != d_model or embedding.max_length != max_length
        ):
            raise ValueError(
                "`embedding` must match the decoder: vocab_size, d_model and max_length "
                f"{vocab_size, d_model, max_length}. Received: "
                f"{embedding.vocab_size, embedding.d_model, embedding.max_length}"
            )
        self.given_embedding = embedding is not None
        self.embedding = embedding or TokenAndPositionEmbedding(
            vocab_size, d_model, max_length, dtype=self.dtype_policy, name="embedding"
        )
        self.embedding_dropout = Dropout(self.dropout, dtype=self.dtype_policy)
        self.blocks = [
            DecoderBlock(**self.block_config, dtype=self.dtype_policy, name=f"block_{i}")
            for i in range(self.num_layers)
        ]
        self.final_norm = (
            LayerNormalization(epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="final_norm")
            if norm_first
            else None
        )

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
        if self.final_norm is not None:
            x = self.final_norm(x)
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
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, KVCache(tuple(self_attention), cache.cross_attention)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "vocab_size": self.vocab_size,
                "max_length": self.max_length,
                **self.block_config,
            }
        )
        config["activation"] = keras.activations.serialize(keras.activations.get(config["activation"]))
        if self.given_embedding:
            config["embedding"] = keras.saving.serialize_keras_object(self.embedding)
        return config
