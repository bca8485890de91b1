"""Argument checks shared by the layers and the config: one wording for every bad value."""

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


def check_heads(d_model, num_heads):
    if d_model % num_heads:
        raise ValueError(
            "`d_model` must be divisible by `num_heads` (each head gets d_model // num_heads dimensions). "
            f"Received: d_model={d_model}, num_heads={num_heads}"
        )


def check_positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"`{name}` must be a positive number. Received: {name}={value!r}")
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
