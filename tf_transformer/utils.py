"""Helpers shared by the layers, the config and decoding: argument checks (one
wording everywhere), XLA detection and the write-at-index that caches and
decoding buffers use."""

import numbers

import keras
from keras import ops


def check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"`{name}` must be a positive integer. Received: {name}={value!r}")
    return int(value)


def check_rate(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"`{name}` must be a number in [0, 1). Received: {name}={value!r}")
    return float(value)


def concrete_value(x):
    """The NumPy value of `x` when it is concrete (eager), else None.

    Used for checks that can only run on real values: inside `tf.function`,
    `jax.jit` or a functional model's symbolic call the tensor has no value
    yet, and the check is skipped (the docstrings of the layers say what
    happens then).
    """
    if isinstance(x, keras.KerasTensor):
        return None
    try:
        return ops.convert_to_numpy(x)
    except Exception:  # a tracer or graph tensor: no value to check
        return None


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
