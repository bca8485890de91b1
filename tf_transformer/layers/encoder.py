"""The encoder: token and position embedding, then N encoder blocks.

We use the notation B batch, S source length, D model width (d_model),
H heads.
"""

import keras

from tf_transformer import masks
from tf_transformer.layers.dropout import Dropout
from tf_transformer.layers.encoder_block import EncoderBlock
from tf_transformer.layers.layer_normalization import LayerNormalization
from tf_transformer.layers.token_and_position_embedding import TokenAndPositionEmbedding
from tf_transformer.checks import check_positive_int, check_rate


@keras.saving.register_keras_serializable(package="tf_transformer")
class Encoder(keras.layers.Layer):
    """The Transformer encoder (the paper's left half), as built in the course.

    `TokenAndPositionEmbedding` (× √d_model + sinusoids), dropout, then
    `num_layers` `EncoderBlock`s; pre-LN stacks (`norm_first=True`) end with
    a final layer normalisation. Padding (id 0) is masked throughout, and the
    output carries the padding mask as its Keras mask, so a `Decoder` (or
    any mask-aware Keras layer) placed after it ignores padded positions.

    Args:
        num_layers: N, the number of blocks.
        d_model, num_heads, dff, dropout, norm_first, layer_norm_epsilon,
        activation, attention_dropout: as for `EncoderBlock`.
        vocab_size: source vocabulary size.
        max_length: the longest source sequence.
        **kwargs: base `Layer` arguments.

    Call arguments:
        tokens: int `[B, S]`, 0 = padding.
        training: whether dropout is active.
        return_attention_scores: also return a list of `[B, H, S, S]`.

    Returns:
        `[B, S, D]`, and the scores if asked for.

    Example:

    >>> encoder = Encoder(num_layers=2, d_model=16, num_heads=2, dff=32,
    ...                   vocab_size=100, max_length=10)
    >>> tuple(encoder(np.array([[3, 9, 4, 0]])).shape)
    (1, 4, 16)
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
        self.embedding = TokenAndPositionEmbedding(
            vocab_size, d_model, max_length, dtype=self.dtype_policy, name="embedding"
        )
        self.embedding_dropout = Dropout(self.dropout, dtype=self.dtype_policy)
        self.blocks = [
            EncoderBlock(**self.block_config, dtype=self.dtype_policy, name=f"block_{i}")
            for i in range(self.num_layers)
        ]
        self.final_norm = (
            LayerNormalization(epsilon=layer_norm_epsilon, dtype=self.dtype_policy, name="final_norm")
            if norm_first
            else None
        )

    def build(self, tokens_shape):
        self.embedding.build(tokens_shape)
        x_shape = tuple(tokens_shape) + (self.block_config["d_model"],)
        for block in self.blocks:
            block.build(x_shape)
        if self.final_norm is not None:
            self.final_norm.build(x_shape)

    def call(self, tokens, training=None, return_attention_scores=False):
        padding_mask = masks.padding_mask(tokens)
        x = self.embedding_dropout(self.embedding(tokens), training=training)  # the paper drops out embeddings + PE
        scores = []
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask, training=training, return_attention_scores=return_attention_scores)
            if return_attention_scores:
                x, block_scores = x
                scores.append(block_scores)
        if self.final_norm is not None:  # pre-LN stacks end with a norm
            x = self.final_norm(x)
        return (x, scores) if return_attention_scores else x

    def compute_mask(self, tokens, mask=None):
        return masks.padding_mask(tokens)

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
        return config
