"""Position-wise feed-forward network (the paper's section 3.3).

We use the notation B batch, T sequence length, D model width (d_model),
F inner width (dff).
"""

import keras

from tf_transformer.layers.dropout import Dropout
from tf_transformer.checks import check_positive_int, check_rate
from tf_transformer.fast_paths import TrainingMatmulDense


@keras.saving.register_keras_serializable(package="tf_transformer")
class FeedForward(keras.layers.Layer):
    """`FFN(x) = max(0, x W1 + b1) W2 + b2`, applied to each position alike.

    The output goes through dropout, the paper's "residual dropout" on each
    sub-layer's output; the residual connection and layer normalisation
    belong to the blocks that use this layer.

    Args:
        d_model: D, the output width.
        dff: F, the inner width (2048 for d_model 512 in the paper).
        dropout: dropout rate on the output.
        activation: the inner activation (the paper's ReLU by default).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: `[B, T, D_in]`.
        training: whether dropout is active.

    Returns:
        `[B, T, D]`. Keras masks pass through.

    Example:

    >>> ffn = FeedForward(d_model=16, dff=64)
    >>> tuple(ffn(keras.ops.ones((2, 5, 16))).shape)
    (2, 5, 16)
    """

    def __init__(self, d_model, dff, dropout=0.1, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.d_model = check_positive_int("d_model", d_model)
        self.dff = check_positive_int("dff", dff)
        self.dropout = check_rate("dropout", dropout)
        self.activation = keras.activations.get(activation)
        self.supports_masking = True
        self.inner_dense = TrainingMatmulDense(
            dff, activation=self.activation, dtype=self.dtype_policy, name="inner_dense"
        )
        self.output_dense = TrainingMatmulDense(d_model, dtype=self.dtype_policy, name="output_dense")
        self.dropout_layer = Dropout(dropout, dtype=self.dtype_policy)

    def build(self, input_shape):
        self.inner_dense.build(input_shape)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.dff,))

    def call(self, inputs, training=None):
        x = self.inner_dense(inputs, training=training)  # [B, T, F]
        x = self.output_dense(x, training=training)  # [B, T, D]
        return self.dropout_layer(x, training=training)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.d_model,)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "d_model": self.d_model,
                "dff": self.dff,
                "dropout": self.dropout,
                "activation": keras.activations.serialize(self.activation),
            }
        )
        return config
