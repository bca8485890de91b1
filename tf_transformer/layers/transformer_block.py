"""What the encoder and decoder blocks share: arguments, sub-layer wiring, config.

We use the notation B batch, T sequence length, D model width (d_model).
"""

import inspect

import keras

from tf_transformer.layers.dropout import Dropout
from tf_transformer.layers.feed_forward import FeedForward
from tf_transformer.layers.layer_normalization import LayerNormalization
from tf_transformer.layers.multi_head_attention import MultiHeadAttention
from tf_transformer.checks import check_heads, check_positive_int, check_positive_number, check_rate


class TransformerBlock(keras.layers.Layer):
    """Base of `EncoderBlock` and `DecoderBlock`; not used on its own.

    Both blocks take exactly the same arguments, validated here once.
    Each sub-layer (attention, feed-forward) is wrapped in a residual
    connection with layer normalisation, post-LN as in the paper
    (`LayerNorm(x + Dropout(Sublayer(x)))`) or, with `norm_first=True`,
    pre-LN (`x + Dropout(Sublayer(LayerNorm(x)))`), which trains more stably
    in deep stacks without a learning-rate warm-up (Xiong et al. 2020).
    """

    def __init__(
        self,
        d_model,
        num_heads,
        dff,
        dropout=0.1,
        norm_first=False,
        layer_norm_epsilon=1e-6,
        activation="relu",
        attention_dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.d_model = check_positive_int("d_model", d_model)
        self.num_heads = check_positive_int("num_heads", num_heads)
        self.dff = check_positive_int("dff", dff)
        check_heads(self.d_model, self.num_heads)
        self.dropout = check_rate("dropout", dropout)
        self.attention_dropout = check_rate("attention_dropout", attention_dropout)
        self.norm_first = bool(norm_first)
        self.layer_norm_epsilon = check_positive_number("layer_norm_epsilon", layer_norm_epsilon)
        self.activation = keras.activations.get(activation)
        self.supports_masking = True
        self.residual_dropout = Dropout(self.dropout, dtype=self.dtype_policy)
        self.feed_forward = FeedForward(
            d_model, dff, dropout=self.dropout, activation=self.activation,
            dtype=self.dtype_policy, name="feed_forward",
        )
        self.feed_forward_norm = self._layer_norm("feed_forward_norm")

    def _attention(self, name):
        # The paper's per-head size: all heads together cost one full-width head.
        return MultiHeadAttention(
            self.num_heads,
            self.d_model // self.num_heads,
            dropout=self.attention_dropout,
            dtype=self.dtype_policy,
            name=name,
        )

    def _layer_norm(self, name):
        return LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )

    def _check_width(self, shape, name="x"):
        if len(shape) != 3 or shape[-1] != self.d_model:
            raise ValueError(
                f"`{name}` must have shape [batch, length, d_model={self.d_model}]. "
                f"Received: {name}.shape={tuple(shape)}"
            )

    def _residual(self, x, norm, sublayer, training, dropout=True):
        """Applies `sublayer` with its residual connection and norm.

        `sublayer(h)` returns `(y, extra)`; the extra (attention scores, a
        cache) is handed back untouched.
        """
        y, extra = sublayer(norm(x) if self.norm_first else x)
        if dropout:
            y = self.residual_dropout(y, training=training)
        return (x + y if self.norm_first else norm(x + y)), extra

    def _feed_forward(self, x, training):
        # FeedForward applies its own output dropout.
        x, _ = self._residual(
            x, self.feed_forward_norm,
            lambda h: (self.feed_forward(h, training=training), None),
            training, dropout=False,
        )
        return x

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in BLOCK_ARGUMENTS})
        config["activation"] = keras.activations.serialize(self.activation)
        return config


# What a block takes, in its signature's order: the one list `Encoder`,
# `Decoder` and `Transformer` pass on (a new block argument is added to
# `TransformerBlock` alone, and to `TransformerConfig` for the model).
BLOCK_ARGUMENTS = tuple(inspect.signature(TransformerBlock.__init__).parameters)[1:-1]
BLOCK_DEFAULTS = {name: parameter.default for name, parameter in inspect.signature(TransformerBlock.__init__).parameters.items()
                  if name in BLOCK_ARGUMENTS and parameter.default is not inspect.Parameter.empty}


def first_given(*masks):
    """The first mask that is not None: an explicit mask beats an implicit one."""
    for mask in masks:
        if mask is not None:
            return mask
    return None
