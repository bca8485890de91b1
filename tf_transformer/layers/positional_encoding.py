"""Sinusoidal positional encoding (the paper's section 3.5).

We use the notation B batch, T sequence length, D model width (d_model).
"""

import keras
from keras import ops

from tf_transformer.checks import check_positive_int


def positional_encoding(length, depth):
    """The paper's sinusoidal table: `[length, depth]`, float32.

    `PE(pos, 2i) = sin(pos / 10000^(2i / depth))` on even dimensions and
    `PE(pos, 2i + 1) = cos(pos / 10000^(2i / depth))` on odd ones, interleaved
    as in the paper (the TensorFlow tutorial concatenates the sines and
    cosines instead, which is a permutation of the same features).

    Args:
        length: number of positions.
        depth: d_model, the width of each encoding (may be odd).

    Returns:
        float32 tensor `[length, depth]`.

    Example:

    >>> table = positional_encoding(50, 16)
    >>> tuple(table.shape)
    (50, 16)
    """
    check_positive_int("length", length)
    check_positive_int("depth", depth)
    return sinusoids(ops.arange(length), depth)


def sinusoids(positions, depth):
    """The encodings `[T, depth]` of the int `positions` `[T]` (any backend, traced or not)."""
    positions = ops.expand_dims(ops.cast(positions, "float32"), 1)  # [T, 1]
    pair = ops.arange(depth, dtype="float32") // 2  # i for dimensions 2i and 2i + 1
    inverse_frequency = ops.power(10000.0, -2.0 * pair / depth)  # [D]
    angles = positions * ops.expand_dims(inverse_frequency, 0)  # [T, D]
    is_even = ops.equal(ops.arange(depth) % 2, 0)
    return ops.where(is_even, ops.sin(angles), ops.cos(angles))


@keras.saving.register_keras_serializable(package="tf_transformer")
class PositionalEncoding(keras.layers.Layer):
    """Adds the sinusoidal positional encoding to a sequence of vectors.

    No weights: the encodings of the positions present are computed in the
    call (a few sines, constant-folded under XLA), which keeps shapes
    traceable on every backend. Keras masks pass through unchanged.

    Args:
        max_length: the longest sequence the layer accepts.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: `[B, T, D]` with `T <= max_length`.
        start_index: position of `inputs[:, 0]` (an int or int scalar
            tensor), for incremental decoding; 0 by default.

    Returns:
        `[B, T, D]`: `inputs + PE[start_index : start_index + T]`.

    Example:

    >>> layer = PositionalEncoding(max_length=64)
    >>> tuple(layer(keras.ops.zeros((2, 10, 16))).shape)
    (2, 10, 16)
    """

    def __init__(self, max_length, **kwargs):
        super().__init__(**kwargs)
        self.max_length = check_positive_int("max_length", max_length)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "PositionalEncoding expects inputs of shape [batch, length, "
                f"d_model] with a known d_model. Received: shape={tuple(input_shape)}"
            )

    def call(self, inputs, start_index=None):
        positions = ops.arange(check_length(inputs, self.max_length))  # [T]
        if start_index is not None:
            positions = positions + ops.cast(start_index, positions.dtype)
        return inputs + ops.cast(sinusoids(positions, inputs.shape[-1]), inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config["max_length"] = self.max_length
        return config


def check_length(inputs, max_length):
    """Returns the length (axis 1) of `inputs`, raising if it exceeds `max_length`.

    The check runs only when the length is static (eager calls, and
    symbolic shapes with a known length). With a dynamic length (inside a
    `tf.function` or `jax.jit` traced with an unknown length) nothing is
    checked here: on TensorFlow the table's slice then fails with a shape
    error at run time, under XLA it may clamp silently; the export
    truncates its inputs to `max_length` for that reason.
    """
    length = inputs.shape[1]
    if not isinstance(length, int):  # unknown, or symbolic under JAX tracing
        return ops.shape(inputs)[1]
    if length > max_length:
        raise ValueError(
            f"The sequence is longer than max_length: length {length} > "
            f"max_length {max_length}. Truncate the input or build the layer "
            "with a larger max_length."
        )
    return length
