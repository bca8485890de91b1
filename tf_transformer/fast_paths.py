"""Every fast path that depends on the backend or on XLA, each with the reason it exists.

One home, so that a reader sees in one place where the code takes a different
form than the obvious one, and why:

* `compiled_by_xla`: whether the current call is traced for XLA; the other
  paths choose their form with it.
* `write_at_index`: the key/value cache and decoding buffers written in
  place under XLA (`slice_update`), with a one-hot `where` otherwise, so an
  exported SavedModel needs only core TensorFlow ops (TF Serving builds
  without XLA lack `XlaDynamicUpdateSlice`).
* `argmax`: decoding's argmax as two plain reductions under XLA, whose own
  argmax runs as a scalar loop on a CPU.
* `random_bits`: dropout masks from a keyed integer hash under XLA, where the
  backend's random generator runs as a serial loop on a CPU (`layers.Dropout`).
* `weights_matmul`: in training steps, after
  `set_training_matmul_dtype("bfloat16")`, the products with weight matrices
  take bfloat16 copies of float32 operands (what a TPU does with float32 by
  default), everything else staying float32: a CPU with AVX512-BF16 or AMX
  multiplies bfloat16 twice as fast, while Keras's `mixed_bfloat16` also
  runs the elementwise ops in bfloat16, which such a CPU does slowly.

The XLA-compiled export (`export.Translator(jit_compile=True)`, TensorFlow
only) has two more, beside the code they shape: source ids padded to a
multiple of 8 tokens, and a one-row batch decoded as two rows.
"""

import keras
import numpy as np
from keras import ops


def compiled_by_xla():
    """Whether the current call is being traced for XLA.

    True on JAX (`jax.jit` is how JAX runs a model; eager JAX runs op by op
    anyway) and inside TensorFlow functions with `jit_compile=True`; False
    in TensorFlow's graph and eager modes and on torch. Code that has a
    faster form under XLA (fused integer ops, in-place `slice_update`) and a
    form built from core ops (TF Serving builds without XLA) picks with it.
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend == "tensorflow":
        import tensorflow as tf

        # The check TensorFlow's own losses use; should a later version drop
        # it, everything takes its XLA-free form rather than fail.
        enclosing_xla_context = getattr(getattr(tf, "__internal__", None), "get_enclosing_xla_context", None)
        return enclosing_xla_context is not None and enclosing_xla_context() is not None
    return False


def write_at_index(buffer, update, index, axis):
    """`buffer` with `update` written at position `index` along `axis`.

    `update` has `buffer`'s shape except along `axis`, where it is 1 or
    longer. Under XLA with `slice_update`, which XLA does in place: O(update)
    per write. Otherwise a single position is written with a one-hot
    `where`, which reads and writes the whole buffer but lowers to core
    TensorFlow ops (an exported model then runs on a TF Serving build
    without XLA, where `slice_update`'s XlaDynamicUpdateSlice is missing);
    longer updates use `slice_update`.
    """
    rank = len(buffer.shape)
    axis = axis % rank
    update = ops.cast(update, buffer.dtype)
    if update.shape[axis] == 1 and not compiled_by_xla():
        here = ops.equal(ops.arange(ops.shape(buffer)[axis]), index)
        here = ops.reshape(here, tuple(-1 if a == axis else 1 for a in range(rank)))
        return ops.where(here, update, buffer)
    zero = ops.zeros((), "int32")
    start = [ops.cast(index, "int32") if a == axis else zero for a in range(rank)]
    return ops.slice_update(buffer, start, update)


# The dtype of the weights' products in training calls (`set_training_matmul_dtype`); None: the compute dtype.
_training_matmul_dtype = None


def set_training_matmul_dtype(dtype):
    """Multiplies by the weights in `dtype` in training calls from now on (None: in the compute dtype).

    Process-wide, as `keras.config.set_dtype_policy` is, and read when a
    function is traced: set it before the first `fit`. Only training calls
    (`training=True`) take it, so validation, decoding and an export made
    in the same process keep the compute dtype, and the export gives what a
    float32 runtime (CTranslate2's, say) gives on the same weights. Covers
    `MultiHeadAttention`'s projections, `FeedForward`'s two layers and the
    `Transformer`'s output projection, tied
    (`TokenAndPositionEmbedding(reverse=True)`) or not, in layers whose
    compute dtype is float32.

    Args:
        dtype: "bfloat16", or None.

    >>> set_training_matmul_dtype("bfloat16"); training_matmul_dtype()
    'bfloat16'
    >>> set_training_matmul_dtype(None)
    """
    global _training_matmul_dtype
    if dtype is not None and dtype != "bfloat16":
        raise ValueError(f"The training matmul dtype must be 'bfloat16' or None. Received: {dtype!r}")
    _training_matmul_dtype = dtype


def training_matmul_dtype():
    """What `set_training_matmul_dtype` set: "bfloat16" or None."""
    return _training_matmul_dtype


def weights_matmul(x, kernel, training=None, axes=None):
    """`x · kernel`: `ops.matmul`, or `ops.tensordot` over `axes`, in `x`'s dtype.

    In a training call (`training` true) after
    `set_training_matmul_dtype("bfloat16")`, a float32 `x` and `kernel` are
    multiplied as bfloat16 copies and the product cast back to float32:
    the rounding of a TPU's default float32 matmul, at about twice the
    speed on a CPU with bfloat16 units (benchmarks/README.md, "Anki").
    Biases, activations, normalisation, softmax and the loss stay float32.
    """
    def product(a, b):
        return ops.matmul(a, b) if axes is None else ops.tensordot(a, b, axes=axes)

    if training and _training_matmul_dtype is not None and keras.backend.standardize_dtype(x.dtype) == "float32":
        low = _training_matmul_dtype
        return ops.cast(product(ops.cast(x, low), ops.cast(kernel, low)), x.dtype)
    return product(x, ops.cast(kernel, x.dtype))


class TrainingMatmulDense(keras.layers.Dense):
    """`keras.layers.Dense` whose training calls multiply through `weights_matmul` (the same weights and names).

    The feed-forward layers and an untied output projection use it, so one
    class carries `set_training_matmul_dtype` to every `Dense` of the model.
    """

    def call(self, inputs, training=None):
        if not (training and _training_matmul_dtype is not None):
            return super().call(inputs)
        x = weights_matmul(inputs, self.kernel, training)
        if self.use_bias:
            x = x + ops.cast(self.bias, x.dtype)
        return self.activation(x)


def argmax(logits):
    """`argmax` over the last axis of `[B, V]`: the first index of the maximum, int32.

    XLA lowers `argmax` to a reduction over (value, index) pairs that runs
    as a scalar loop on a CPU (207 µs for [32, 8000], 12 % of a decoding
    step's thread time); a max, then the smallest index that reaches it, is two plain
    reductions (73 µs). Without XLA, TensorFlow's own ArgMax kernel is faster.
    """
    if not compiled_by_xla():
        return ops.cast(ops.argmax(logits, axis=-1), "int32")
    vocab_size = ops.shape(logits)[-1]
    top = ops.max(logits, axis=-1, keepdims=True)
    positions = ops.where(ops.equal(logits, top), ops.arange(vocab_size, dtype="int32"), vocab_size)
    return ops.minimum(ops.min(positions, axis=-1), vocab_size - 1)  # the bound: a NaN row matches nothing


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


def _key(seed, count):
    """A uint32 key of a seed and a draw count, each element apart."""
    return _mix(ops.add(_mix(seed), ops.multiply(count, _GOLDEN)))


def _keyed_bits(index, key):
    """Uniform uint32 bits of uint32 `index` under `key` (broadcast together)."""
    return _mix(ops.add(_mix(ops.bitwise_xor(index, key)), key))


def random_bits(shape, seed):
    """Uniform uint32 bits of `shape`: a keyed hash of each element's index.

    `seed` is a Keras seed, `[2]` integers (`SeedGenerator.next()`): the
    layer's seed and the count of draws so far. Two rounds of `_mix` keyed by
    both make the bits of different draws and positions independent for
    dropout's purposes (tests/test_dropout.py measures rate, correlation
    between neighbours and between draws). Not for cryptography.
    """
    seed = ops.cast(seed, "uint32")
    key = _key(seed[0], seed[1])
    size = 1
    for dim in shape:  # ints, or scalar tensors for dimensions known only at run time
        size = size * dim
    index = ops.cast(ops.reshape(ops.arange(size, dtype="int32"), shape), "uint32")
    return _keyed_bits(index, key)


def hash_uniform(seed, step, size):
    """Uniform floats in (0, 1), `[B, size]`: a keyed hash of `(seed[b], step, column)`.

    Sampling's random numbers, one stream per example (`decoding.sample`):
    integer ops only, so TensorFlow and JAX, eager, graph and XLA all draw
    the same numbers, and an example's draws depend on its own seed alone.

    >>> u = keras.ops.convert_to_numpy(hash_uniform(np.array([7, 7, 8]), 0, 1000))
    >>> bool(np.all(u[0] == u[1]) and np.any(u[0] != u[2]) and 0 < u.min() and u.max() < 1)
    True
    """
    key = _key(ops.cast(seed, "uint32"), ops.add(ops.cast(step, "uint32"), np.uint32(1)))[:, None]  # [B, 1]
    bits = _keyed_bits(ops.cast(ops.arange(size, dtype="int32"), "uint32")[None, :], key)
    # The top 24 bits, centred in their interval: exact in float32, never 0 or 1.
    return (ops.cast(ops.right_shift(bits, np.uint32(8)), "float32") + 0.5) / float(2**24)


def int32_indexable(shape):
    """Whether every element has an int32 index (unknown dimensions: assumed)."""
    return int(np.prod([dim or 1 for dim in shape], dtype=np.float64)) < 2**31
