"""One helper that checks every layer of the package the same way.

Per-layer behaviour (masks, numbers, caches) is tested in each layer's own
tests; this helper checks what every Keras layer owes its users: eager and
symbolic calls agree, the config rebuilds an equivalent layer (judged by
outputs, not by comparing configs), a model using it saves and reloads
exactly, it trains one `fit` step, and it runs under mixed precision.
"""

import keras
import numpy as np


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _first(output):
    return output[0] if isinstance(output, (list, tuple)) else output


def run_layer_test(
    layer_cls,
    init_kwargs,
    inputs,
    call_kwargs=None,
    expected_output_shape=None,
    expected_num_trainable_weights=None,
    tmp_path=None,
    run_mixed_precision=True,
):
    """Runs the shared checks.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        inputs: an array or a tuple of arrays, passed positionally.
        call_kwargs: extra call arguments (non-tensor).
        expected_output_shape: the shape of the (first) output.
        expected_num_trainable_weights: how many trainable variables.
        tmp_path: a directory for the `.keras` round trip.
        run_mixed_precision: also call the layer under `mixed_bfloat16`.
    """
    call_kwargs = call_kwargs or {}
    inputs = _as_list(inputs)

    # Eager call.
    layer = layer_cls(**init_kwargs)
    output = _first(layer(*inputs, **call_kwargs))
    if expected_output_shape is not None:
        assert tuple(output.shape) == tuple(expected_output_shape)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(output)))
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights

    # Config round trip, judged by outputs.
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    clone(*inputs, **call_kwargs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(_first(clone(*inputs, **call_kwargs))),
        keras.ops.convert_to_numpy(output),
        atol=1e-6,
    )
    # Registered under the package's name, so it deserializes by name alone.
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(revived) is layer_cls
    assert revived.get_config() == config

    # Symbolic call inside a functional model, then save → load.
    symbolic_inputs = [
        keras.Input(shape=np.shape(x)[1:], dtype=keras.backend.standardize_dtype(np.asarray(x).dtype))
        for x in inputs
    ]
    model_layer = layer_cls(**init_kwargs)
    symbolic_output = _first(model_layer(*symbolic_inputs, **call_kwargs))
    assert tuple(symbolic_output.shape[1:]) == tuple(output.shape[1:])
    model = keras.Model(symbolic_inputs, symbolic_output)
    model_output = keras.ops.convert_to_numpy(model(inputs))
    if tmp_path is not None:
        path = str(tmp_path / f"{layer_cls.__name__}.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded(inputs)), model_output)

    # One training step: gradients flow to every trainable weight.
    if model.trainable_weights:
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        # A random target: with zeros, a final LayerNorm makes the loss constant.
        target = np.random.default_rng(0).normal(size=model_output.shape).astype("float32")
        before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
        history = model.fit(inputs, target, batch_size=len(target), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
        frozen = [
            w.path
            for w, a, b in zip(model.trainable_weights, after, before)
            if np.array_equal(a, b)
            # A key bias adds the same q·b to every score of a row, which the
            # softmax cancels: its gradient is exactly zero, by design.
            and not w.path.endswith(("key_bias", "key/bias"))
        ]
        assert not frozen, f"weights without gradient: {frozen}"

    # Mixed precision: computes in bfloat16, keeps float32 variables.
    if run_mixed_precision:
        mixed = layer_cls(**{**init_kwargs, "dtype": "mixed_bfloat16"})
        mixed_output = _first(mixed(*inputs, **call_kwargs))
        assert keras.backend.standardize_dtype(mixed_output.dtype) == "bfloat16"
        assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in mixed.weights)
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(mixed_output, "float32"))))
    return layer, output


def run_on_jax(script, expected):
    """Runs `script` in a fresh process with KERAS_BACKEND=jax; asserts it printed `expected`."""
    import os
    import subprocess
    import sys

    import pytest

    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert expected in result.stdout
