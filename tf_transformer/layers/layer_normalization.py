"""Layer normalisation with a hand-written gradient: 12 operations for its backward pass instead of 32."""

import functools

import keras
from keras import ops


@functools.lru_cache(maxsize=None)
def _normalize_with_gradient(epsilon):
    """`(x, gamma, beta) -> y`, normalising x's last axis, with an analytic gradient.

    Autodiff of Keras's layer normalisation emits 32 TensorFlow operations
    for the backward pass of one layer (a reduction and a reshape for each
    broadcast, the chain through the variance's square root). The closed
    form, with x̂ = (x - mean) / σ and g = dy · γ:

        dx = (g - mean(g) - x̂ · mean(g · x̂)) / σ
        dγ = Σ dy · x̂,  dβ = Σ dy   (sums over every axis but the last)

    is 12. On TensorFlow without XLA, where each operation is
    dispatched on its own, forward + backward of a `[32, 32, 128]` layer
    goes from 0.87–0.98 ms to 0.62 ms (`tests/test_layer_normalization.py`
    checks the gradient against autodiff).
    """

    @ops.custom_gradient
    def normalize(x, gamma, beta):
        mean = ops.mean(x, axis=-1, keepdims=True)
        centred = x - mean
        inverse_std = ops.rsqrt(ops.mean(ops.square(centred), axis=-1, keepdims=True) + epsilon)
        normalized = centred * inverse_std  # x̂

        def gradient(*args, upstream=None):
            dy = args[0] if upstream is None else upstream  # TensorFlow passes it positionally, JAX by name
            leading_axes = tuple(range(len(dy.shape) - 1))
            g = dy * gamma
            dx = inverse_std * (
                g
                - ops.mean(g, axis=-1, keepdims=True)
                - normalized * ops.mean(g * normalized, axis=-1, keepdims=True)
            )
            return dx, ops.sum(dy * normalized, axis=leading_axes), ops.sum(dy, axis=leading_axes)

        return normalized * gamma + beta, gradient

    return normalize


@keras.saving.register_keras_serializable(package="tf_transformer")
class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization`, with a closed-form gradient.

    The same layer (arguments, weights, masks, float32 computation under
    mixed precision); for the common case of the Transformer — normalising
    the last axis with both `gamma` and `beta`, on TensorFlow or JAX — the
    backward pass is the textbook closed form instead of autodiff through
    the mean and variance: 12 TensorFlow operations instead of 32. That
    matters where operations run one by one (TensorFlow without XLA: 0.6
    instead of 0.9 ms per layer for forward + backward of `[32, 32, 128]`,
    ≈ 3 ms of a small model's training step); under XLA both compile to
    nearly the same fused kernels. Other axes, `center=False`,
    `scale=False`, `rms_scaling` and other backends use Keras's code.

    Args:
        axis, epsilon, center, scale, …: as for
            `keras.layers.LayerNormalization`.

    Call arguments:
        inputs: a tensor `[..., D]`.

    Returns:
        A tensor like `inputs`, normalised over its last axis, times `gamma`
        `[D]`, plus `beta` `[D]`. A Keras mask passes through.

    Example:

    >>> norm = LayerNormalization(epsilon=1e-6)
    >>> y = norm(keras.ops.convert_to_tensor([[1.0, 2.0, 3.0, 6.0]]))
    >>> [round(float(v), 3) for v in keras.ops.convert_to_numpy(y)[0]]
    [-1.069, -0.535, 0.0, 1.604]
    """

    def _closed_form_gradient(self, rank):
        return (
            keras.backend.backend() in ("tensorflow", "jax")  # backends with `ops.custom_gradient`
            and list(self.axis) in ([-1], [rank - 1])
            and self.gamma is not None
            and self.beta is not None
            and not self.rms_scaling
        )

    def call(self, inputs):
        if not self._closed_form_gradient(len(inputs.shape)):
            return super().call(inputs)
        # As Keras's layer: at least float32, whatever the compute dtype.
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        outputs = _normalize_with_gradient(float(self.epsilon))(
            x, ops.cast(self.gamma, x.dtype), ops.cast(self.beta, x.dtype)
        )
        return ops.cast(outputs, self.compute_dtype)
