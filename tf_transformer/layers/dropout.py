"""Dropout whose random mask costs a few fused integer operations under XLA."""

import keras
import numpy as np
from keras import ops

from tf_transformer.utils import compiled_by_xla

# lowbias32, an integer hash by C. Wellons (github.com/skeeto/hash-prospector):
# xor-shift / multiply rounds with a measured bias of 0.17, i.e. flipping any
# input bit flips each output bit with probability within 0.2 % of 1/2.
_MULTIPLIERS = (np.uint32(0x7FEB352D), np.uint32(0x846CA68B))
_GOLDEN = np.uint32(0x9E3779B9)  # 2^32 / golden ratio: spreads consecutive seeds apart


def _mix(h):
    h = ops.bitwise_xor(h, ops.right_shift(h, np.uint32(16)))
    h = ops.multiply(h, _MULTIPLIERS[0])
    h = ops.bitwise_xor(h, ops.right_shift(h, np.uint32(15)))
    h = ops.multiply(h, _MULTIPLIERS[1])
    return ops.bitwise_xor(h, ops.right_shift(h, np.uint32(16)))


def random_bits(shape, seed):
    """Uniform uint32 bits of `shape`: a keyed hash of each element's index.

    `seed` is a Keras seed, `[2]` integers (`SeedGenerator.next()`): the
    layer's seed and the count of draws so far. Two rounds of `_mix` keyed by
    both make the bits of different draws and positions independent for
    dropout's purposes (tests/test_dropout.py measures rate, correlation
    between neighbours and between draws). Not for cryptography.
    """
    seed = ops.cast(seed, "uint32")
    key = _mix(ops.add(_mix(seed[0]), ops.multiply(seed[1], _GOLDEN)))
    size = 1
    for dim in shape:  # ints, or scalar tensors for dimensions known only at run time
        size = size * dim
    index = ops.cast(ops.reshape(ops.arange(size, dtype="int32"), shape), "uint32")
    return _mix(ops.add(_mix(ops.bitwise_xor(index, key)), key))


def _int32_indexable(shape):
    """Whether every element has an int32 index (unknown dimensions: assumed)."""
    return int(np.prod([dim or 1 for dim in shape], dtype=np.float64)) < 2**31


@keras.saving.register_keras_serializable(package="tf_transformer")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout`, with a mask that is cheap to draw under XLA.

    Keras draws dropout's random numbers with the backend's generator
    (Philox or ThreeFry). Under XLA on a CPU that generator runs as its own,
    serial loop: 1.1 ms for a `[32, 32, 128]` activation on this project's
    2-core machine, 15 % of a small Transformer's training step (the 14
    dropouts of 2 + 2 layers). When the call is compiled by XLA (JAX, or
    TensorFlow with `jit_compile=True`) this layer derives the mask from a
    keyed integer hash of each element's index instead (`random_bits`):
    about ten element-wise integer operations that XLA fuses into the
    neighbouring computation (0.04 ms for the same tensor). Each element is
    kept with probability `1 - rate` (to 2^-32) and scaled by `1 / (1 - rate)`,
    as with Keras's layer; draws depend on the seed and the number of calls,
    as with Keras's layer, but are not the same numbers. Without XLA
    (TensorFlow's graph or eager mode, torch), with a `noise_shape`, or for
    a tensor of 2^31 elements or more (int32 indices), it is Keras's
    dropout: TensorFlow's own multi-threaded kernel is the faster there.

    Args:
        rate: fraction of the inputs to drop, in [0, 1].
        noise_shape: as for `keras.layers.Dropout` (uses Keras's dropout).
        seed: int seed of the masks.
        **kwargs: base `Layer` arguments.

    Call arguments:
        inputs: a tensor of any shape `[...]`.
        training: whether to drop (otherwise the inputs are returned).

    Returns:
        A tensor like `inputs`. Keras masks pass through.

    Example:

    >>> dropout = Dropout(0.5, seed=1)
    >>> y = dropout(keras.ops.ones((2, 1000)), training=True)
    >>> sorted(set(keras.ops.convert_to_numpy(y).ravel().tolist()))
    [0.0, 2.0]
    """

    hashed = True  # False: always Keras's draws (benchmarks.peers measures the difference)

    def call(self, inputs, training=False):
        hashed = (
            self.hashed and training and 0.0 < self.rate < 1.0 and self.noise_shape is None
            and _int32_indexable(inputs.shape) and compiled_by_xla()
        )
        if not hashed:
            return super().call(inputs, training=training)
        threshold = np.uint32(min(round(self.rate * 2.0**32), 2**32 - 1))
        keep = ops.greater_equal(random_bits(ops.shape(inputs), self.seed_generator.next()), threshold)
        scale = ops.cast(1.0 / (1.0 - self.rate), inputs.dtype)
        return ops.where(keep, inputs * scale, ops.zeros_like(inputs))
