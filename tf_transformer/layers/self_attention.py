"""Single-head self-attention with its own query, key and value projections.

We use the notation B batch, T sequence length, D input width, K key size,
V value size.
"""

import keras
from keras import ops

from tf_transformer import masks
from tf_transformer.layers.scaled_dot_product_attention import scaled_dot_product_attention
from tf_transformer.checks import check_positive_int


@keras.saving.register_keras_serializable(package="tf_transformer")
class SelfAttention(keras.layers.Layer):
    """The course's self-attention: `A(q<t>, K, V) = Σ_s softmax_s(q<t>·k<s> / √d_k) v<s>`.

    Every position t of the sequence asks a query `q<t> = W^Q x<t>`, which
    is compared with the keys `k<s> = W^K x<s>` of all positions; the
    softmax of those scores weights the values `v<s> = W^V x<s>`. One head,
    no output projection: `MultiHeadAttention` runs several of these in
    parallel and projects their concatenation.

    Args:
        key_dim: K, the size of queries and keys (d_k).
        value_dim: V, the size of values (defaults to `key_dim`).
        use_bias: whether the projections have biases.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: `[B, T, D]`.
        mask: bool `[B, T]`, False on padding (filled in from the inputs'
            Keras mask); padded positions are neither attended to nor
            attend.
        attention_mask: bool `[T, T]` or `[B, T, T]`, True = may attend.
        use_causal_mask: position t attends only to positions <= t.
        return_attention_scores: also return the weights `[B, T, T]`.

    Returns:
        `[B, T, V]`, and the weights if asked for.

    Example:

    >>> attention = SelfAttention(key_dim=8)
    >>> out, weights = attention(keras.random.normal((2, 6, 16)), return_attention_scores=True)
    >>> tuple(out.shape), tuple(weights.shape)
    ((2, 6, 8), (2, 6, 6))
    """

    def __init__(self, key_dim, value_dim=None, use_bias=True, **kwargs):
        super().__init__(**kwargs)
        self.key_dim = check_positive_int("key_dim", key_dim)
        self.value_dim = check_positive_int("value_dim", key_dim if value_dim is None else value_dim)
        self.use_bias = bool(use_bias)
        self.supports_masking = True
        dense = dict(use_bias=self.use_bias, dtype=self.dtype_policy)
        self.query_dense = keras.layers.Dense(self.key_dim, name="query", **dense)
        self.key_dense = keras.layers.Dense(self.key_dim, name="key", **dense)
        self.value_dense = keras.layers.Dense(self.value_dim, name="value", **dense)

    def build(self, input_shape):
        for dense in (self.query_dense, self.key_dense, self.value_dense):
            dense.build(input_shape)

    def call(
        self,
        inputs,
        mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
    ):
        length = ops.shape(inputs)[1]
        merged = masks.merge_masks(
            length,
            length,
            query_mask=mask,
            key_mask=mask,
            attention_mask=attention_mask,
            use_causal_mask=use_causal_mask,
        )
        query = self.query_dense(inputs)  # [B, T, K]
        key = self.key_dense(inputs)  # [B, T, K]
        value = self.value_dense(inputs)  # [B, T, V]
        output, weights = scaled_dot_product_attention(query, key, value, merged)
        if return_attention_scores:
            return output, weights
        return output

    def get_config(self):
        config = super().get_config()
        config.update(
            {"key_dim": self.key_dim, "value_dim": self.value_dim, "use_bias": self.use_bias}
        )
        return config
