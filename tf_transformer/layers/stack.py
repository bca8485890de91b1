"""What the encoder and decoder share: embedding, dropout, N blocks, the pre-LN final norm, one config.

We use the notation D model width (d_model).
"""

import keras

from tf_transformer.checks import check_positive_int, check_rate
from tf_transformer.layers.dropout import Dropout
from tf_transformer.layers.layer_normalization import LayerNormalization
from tf_transformer.layers.token_and_position_embedding import TokenAndPositionEmbedding
from tf_transformer.layers.transformer_block import BLOCK_ARGUMENTS, BLOCK_DEFAULTS


class TransformerStack(keras.layers.Layer):
    """Base of `Encoder` and `Decoder`; not used on its own.

    Takes `num_layers`, the vocabulary and length of its embedding, and the
    blocks' arguments (`BLOCK_ARGUMENTS`, checked by the blocks), which it
    passes to each of its `num_layers` `block_class` blocks unchanged and
    lists in its config.
    """

    block_class = None  # EncoderBlock or DecoderBlock

    def __init__(self, num_layers, d_model, num_heads, dff, vocab_size, max_length, dropout=BLOCK_DEFAULTS["dropout"],
                 embedding=None, **kwargs):
        block_arguments = {name: kwargs.pop(name) for name in BLOCK_ARGUMENTS if name in kwargs}
        block_arguments["dropout"] = dropout
        super().__init__(**kwargs)
        self.num_layers = check_positive_int("num_layers", num_layers)
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.max_length = check_positive_int("max_length", max_length)
        self.dropout = check_rate("dropout", dropout)  # the blocks' and the embeddings' dropout
        self.supports_masking = True
        if isinstance(embedding, dict):  # from `get_config`
            embedding = keras.saving.deserialize_keras_object(embedding)
        if embedding is not None and (
            embedding.vocab_size != vocab_size or embedding.d_model != d_model or embedding.max_length != max_length
        ):
            raise ValueError(
                "`embedding` must match the stack: vocab_size, d_model and max_length "
                f"{vocab_size, d_model, max_length}. Received: "
                f"{embedding.vocab_size, embedding.d_model, embedding.max_length}"
            )
        self.given_embedding = embedding is not None
        # Created in this order (embedding, dropout, blocks, norm): each layer draws its initialisers'
        # and dropout's seeds from Python's generator when created, so the order fixes a seeded run's weights.
        self.embedding = embedding or TokenAndPositionEmbedding(
            vocab_size, d_model, max_length, dtype=self.dtype_policy, name="embedding"
        )
        self.embedding_dropout = Dropout(self.dropout, dtype=self.dtype_policy)
        self.blocks = [
            self.block_class(d_model, num_heads, dff, **block_arguments, dtype=self.dtype_policy, name=f"block_{i}")
            for i in range(self.num_layers)
        ]
        # The validated values, activation serialised: what `get_config` lists.
        self.block_config = {name: value for name, value in self.blocks[0].get_config().items()
                             if name in BLOCK_ARGUMENTS}
        self.final_norm = (
            LayerNormalization(epsilon=self.block_config["layer_norm_epsilon"], dtype=self.dtype_policy,
                               name="final_norm")
            if self.block_config["norm_first"]
            else None
        )

    def _finish(self, x):
        return x if self.final_norm is None else self.final_norm(x)  # pre-LN stacks end with a norm

    def get_config(self):
        config = super().get_config()
        config.update({"num_layers": self.num_layers, "vocab_size": self.vocab_size, "max_length": self.max_length,
                       **self.block_config})
        if self.given_embedding:
            config["embedding"] = keras.saving.serialize_keras_object(self.embedding)
        return config
