"""Token embedding × √d_model plus the sinusoidal positional encoding.

We use the notation B batch, T sequence length, D model width (d_model),
V vocabulary size.
"""

import math

import keras
from keras import ops

from tf_transformer.layers.positional_encoding import PositionalEncoding
from tf_transformer.checks import check_positive_int, concrete_value
from tf_transformer.fast_paths import weights_matmul


@keras.saving.register_keras_serializable(package="tf_transformer")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Embeds token ids and adds their positions (the paper's section 3.4–3.5).

    `x = E[tokens] · √d_model + PE[:T]`. The paper multiplies the embedding by
    √d_model so that, with weights initialised at scale d_model^-0.5, tokens
    and positions contribute on the same scale; the same matrix can also be
    used in reverse (`reverse=True`) as the output projection, the paper's
    tied "pre-softmax linear transformation".

    Token id 0 is padding: with `mask_zero=True` the output carries a Keras
    mask that is False there, which every layer of this package (and Keras's
    own attention) honours.

    Input checks: the tokens must be an integer tensor of rank 2, no longer
    than `max_length`. Ids outside `[0, vocab_size)` raise a `ValueError`
    when the layer runs eagerly; inside `tf.function` on a CPU TensorFlow's
    gather raises `InvalidArgumentError` instead; under XLA, on GPUs and in
    `jax.jit` no check can run (the gather clamps or fills out-of-range ids),
    so validate ids in the input pipeline there. A functional model casts its
    inputs to its `Input` dtype (int32), so float ids reach this layer only
    when it is called directly, and then they raise.

    Args:
        vocab_size: V, the number of token ids.
        d_model: D, the embedding width.
        max_length: the longest sequence accepted.
        mask_zero: emit a Keras mask, False where the id is 0.
        embeddings_initializer: initializer of `E` (default: normal with
            stddev d_model^-0.5, so `E · √d_model` has unit scale).
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: int tokens `[B, T]`; or, with `reverse=True`, hidden states
            `[B, T, D]`.
        reverse: project hidden states onto the vocabulary with `Eᵀ`.
        start_index: position of `inputs[:, 0]` (incremental decoding).
        training: a training call (the reverse projection then takes
            `fast_paths.set_training_matmul_dtype`'s dtype).

    Returns:
        `[B, T, D]` embeddings; with `reverse=True`, logits `[B, T, V]`.

    Example:

    >>> embed = TokenAndPositionEmbedding(vocab_size=100, d_model=16, max_length=32)
    >>> x = embed(np.array([[5, 9, 2, 0, 0]]))
    >>> tuple(x.shape)
    (1, 5, 16)
    """

    def __init__(
        self,
        vocab_size,
        d_model,
        max_length,
        mask_zero=True,
        embeddings_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.d_model = check_positive_int("d_model", d_model)
        self.max_length = check_positive_int("max_length", max_length)
        self.mask_zero = bool(mask_zero)
        if embeddings_initializer is None:
            embeddings_initializer = keras.initializers.RandomNormal(stddev=d_model**-0.5)
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.position_encoding = PositionalEncoding(max_length, dtype=self.dtype_policy)
        self.supports_masking = self.mask_zero

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.vocab_size, self.d_model),
            initializer=self.embeddings_initializer,
        )
        self.position_encoding.build((None, None, self.d_model))

    def call(self, inputs, reverse=False, start_index=None, training=None):
        if reverse:
            # [B, T, D] x [D, V] -> [B, T, V]
            return weights_matmul(inputs, ops.transpose(self.embeddings), training)
        self._check_tokens(inputs)
        x = ops.take(self.embeddings, inputs, axis=0)  # [B, T, D]
        x = x * ops.cast(math.sqrt(self.d_model), x.dtype)
        return self.position_encoding(x, start_index=start_index)

    def _check_tokens(self, tokens):
        dtype = keras.backend.standardize_dtype(tokens.dtype)
        if "int" not in dtype:
            raise ValueError(
                f"Token ids must be integers; received a {dtype} tensor. "
                "Cast them (e.g. to int32) before the embedding."
            )
        if len(tokens.shape) != 2:
            raise ValueError(
                f"Token ids must have shape [batch, length]. Received: shape={tokens.shape}"
            )
        # Only a concrete int can be compared (JAX traces with symbolic dims).
        if isinstance(tokens.shape[1], int) and tokens.shape[1] > self.max_length:
            raise ValueError(
                f"The sequence is longer than max_length: length {tokens.shape[1]} "
                f"> max_length {self.max_length}. Truncate it or raise max_length."
            )
        values = concrete_value(tokens)
        if values is not None and values.size:
            low, high = values.min(), values.max()
            if low < 0 or high >= self.vocab_size:
                raise ValueError(
                    f"Token id out of range: ids must lie in [0, {self.vocab_size}) "
                    f"(vocab_size), received ids from {low} to {high}."
                )

    def compute_mask(self, inputs, mask=None):
        if len(inputs.shape) == 3:  # reverse: logits keep the hidden states' mask
            return mask
        if not self.mask_zero:
            return None
        return ops.not_equal(inputs, 0)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "d_model": self.d_model,
                "max_length": self.max_length,
                "mask_zero": self.mask_zero,
                "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            }
        )
        return config
