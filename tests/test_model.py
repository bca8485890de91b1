"""The functional Transformer: padding invariance, causality, saving, config."""

import dataclasses
import subprocess
import sys

import keras
import numpy as np
import pytest

import tf_transformer
from tf_transformer import TransformerConfig, attention_weights, build_transformer

CONFIG = TransformerConfig.preset("tiny", source_vocab_size=60, target_vocab_size=50, d_model=32, dff=64, max_length=16)
SOURCE = np.array([[4, 8, 15, 16, 0, 0], [23, 42, 7, 9, 11, 3]], "int32")
TARGET = np.array([[1, 5, 6, 0, 0], [1, 2, 3, 4, 5]], "int32")


def logits(model, source, target):
    return keras.ops.convert_to_numpy(
        keras.ops.cast(model({"encoder_tokens": source, "decoder_tokens": target}), "float32")
    )


@pytest.fixture(params=["float32", "mixed_bfloat16"])
def policy(request):
    keras.config.set_dtype_policy(request.param)
    return request.param


@pytest.mark.parametrize("variant", [{}, {"norm_first": True, "share_embeddings": True, "tie_output_embedding": True}])
def test_padding_invariance(policy, variant):
    model = build_transformer(dataclasses.replace(CONFIG, source_vocab_size=50, **variant))
    reference = logits(model, SOURCE, TARGET)
    padded = logits(model, np.pad(SOURCE, ((0, 0), (0, 4))), np.pad(TARGET, ((0, 0), (0, 3))))
    real = TARGET != 0
    atol = 1e-5 if policy == "float32" else 0.0  # bfloat16: same ops on the same values
    np.testing.assert_allclose(padded[:, :5][real], reference[real], atol=max(atol, 1e-5))


def test_causality(policy):
    model = build_transformer(CONFIG)
    reference = logits(model, SOURCE, TARGET)
    for t in range(1, 5):
        changed = TARGET.copy()
        changed[1, t] = 7 if TARGET[1, t] != 7 else 8
        after = logits(model, SOURCE, changed)
        np.testing.assert_allclose(after[1, :t], reference[1, :t], atol=1e-5)
        assert not np.allclose(after[1, t], reference[1, t])


def test_outputs_and_inputs():
    model = build_transformer(CONFIG)
    assert [i.name for i in model.inputs] == ["decoder_tokens", "encoder_tokens"] or {
        i.name for i in model.inputs
    } == {"encoder_tokens", "decoder_tokens"}
    assert all(keras.backend.standardize_dtype(i.dtype) == "int32" for i in model.inputs)
    assert logits(model, SOURCE, TARGET).shape == (2, 5, 50)


SAVE_CHECK = """
import sys, numpy as np, keras
import tf_transformer  # registers the layers: no custom_objects needed
model = keras.saving.load_model(sys.argv[1])
source, target, expected = (np.load(sys.argv[2])[k] for k in ("source", "target", "logits"))
np.testing.assert_array_equal(keras.ops.convert_to_numpy(model({"encoder_tokens": source, "decoder_tokens": target})), expected)
print("identical")
"""


@pytest.mark.parametrize("variant", [{}, {"norm_first": True, "share_embeddings": True, "tie_output_embedding": True}])
def test_save_and_load_reproduce_outputs(tmp_path, variant):
    config = dataclasses.replace(CONFIG, source_vocab_size=50, **variant)
    model = build_transformer(config)
    expected = logits(model, SOURCE, TARGET)
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(logits(reloaded, SOURCE, TARGET), expected)
    if variant:  # sharing survives the round trip: still one embedding
        assert len(reloaded.weights) == len(model.weights)
        return
    # And in a fresh Python process.
    np.savez(tmp_path / "data.npz", source=SOURCE, target=TARGET, logits=expected)
    result = subprocess.run(
        [sys.executable, "-c", SAVE_CHECK, path, str(tmp_path / "data.npz")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "identical" in result.stdout


def test_base_preset_parameter_count():
    config = TransformerConfig.preset(
        "base", source_vocab_size=37000, target_vocab_size=37000,
        share_embeddings=True, tie_output_embedding=True,
    )
    count = build_transformer(config).count_params()
    print(f"base, shared 37k vocabulary, tied: {count:,} parameters (paper, Table 3: 65 M)")
    # 6 + 6 blocks of d_model 512 (44.1 M) and one 37,000 × 512 embedding (18.9 M).
    assert 62e6 < count < 64e6


def test_shared_and_tied_weights_are_one_matrix():
    tied = build_transformer(dataclasses.replace(CONFIG, source_vocab_size=50, share_embeddings=True, tie_output_embedding=True))
    untied = build_transformer(dataclasses.replace(CONFIG, source_vocab_size=50))
    # Untied: source, target and output matrices (+ output bias); tied: one matrix.
    assert untied.count_params() - tied.count_params() == 2 * 50 * 32 + 50


def test_attention_weights():
    model = build_transformer(CONFIG)
    weights = attention_weights(model, SOURCE, TARGET)
    assert [tuple(w.shape) for w in weights["encoder"]] == [(2, 4, 6, 6)] * 2
    assert [tuple(w.shape) for w in weights["decoder_self"]] == [(2, 4, 5, 5)] * 2
    cross = keras.ops.convert_to_numpy(weights["decoder_cross"][0])
    assert cross.shape == (2, 4, 5, 6)
    assert np.all(cross[0, :, :, 4:] == 0.0)  # padded source positions get no attention
    sums = cross.sum(-1).transpose(0, 2, 1)  # [B, T, H]
    np.testing.assert_allclose(sums[TARGET != 0], 1.0, atol=1e-5)
    assert np.all(sums[TARGET == 0] == 0.0)  # padded target rows attend nowhere


def test_config_presets_and_validation():
    assert TransformerConfig.preset("base").num_layers == 6
    assert TransformerConfig.preset("big").d_model == 1024
    assert TransformerConfig.preset("tiny").dropout == 0.1
    assert TransformerConfig.preset("tiny", num_layers=1).num_layers == 1
    with pytest.raises(ValueError, match="Unknown preset"):
        TransformerConfig.preset("huge")
    with pytest.raises(ValueError, match="Unknown TransformerConfig field"):
        TransformerConfig.preset("tiny", layers=3)
    cases = [
        ({"num_heads": 3}, "divisible"),
        ({"d_model": 0}, "d_model"),
        ({"num_layers": -1}, "num_layers"),
        ({"dff": 2.5}, "dff"),
        ({"dropout": 1.0}, "dropout"),
        ({"max_length": 0}, "max_length"),
        ({"source_vocab_size": 0}, "source_vocab_size"),
        ({"share_embeddings": True}, "one vocabulary"),
        ({"norm_first": "yes"}, "norm_first"),
    ]
    for overrides, message in cases:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(CONFIG, **overrides)  # also checked through replace
    with pytest.raises(ValueError, match="TransformerConfig"):
        build_transformer({"d_model": 32})


def test_model_rejects_out_of_range_ids_and_long_inputs():
    model = build_transformer(CONFIG)
    with pytest.raises(ValueError, match="out of range"):
        model({"encoder_tokens": np.array([[1, 60]]), "decoder_tokens": TARGET[:1]})
    with pytest.raises(ValueError, match="out of range"):
        model({"encoder_tokens": SOURCE[:1], "decoder_tokens": np.array([[1, 50]])})
    with pytest.raises(ValueError, match="longer than max_length"):
        model({"encoder_tokens": np.ones((1, 17), "int32"), "decoder_tokens": TARGET[:1]})


def test_import_does_not_import_tensorflow_modules():
    code = "import sys, tf_transformer; print('tf_transformer.export' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False"
    assert hasattr(tf_transformer, "layers")


@pytest.mark.parametrize("variant", [{}, {"norm_first": True, "share_embeddings": True, "tie_output_embedding": True}])
def test_model_config_survives_from_config_and_a_keras_reload_and_decodes_the_same(tmp_path, variant):
    from tf_transformer import Transformer, decoding

    config = dataclasses.replace(CONFIG, source_vocab_size=50, **variant)
    model = build_transformer(config)
    assert isinstance(model, Transformer) and model.config == config
    rebuilt = Transformer.from_config(model.get_config())
    assert rebuilt.config == config and rebuilt.count_params() == model.count_params()
    path = str(tmp_path / "m.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded) is Transformer and reloaded.config == config
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(decoding.greedy_search(reloaded, SOURCE, 1, 2, 10)),
        keras.ops.convert_to_numpy(decoding.greedy_search(model, SOURCE, 1, 2, 10)),
    )
    # `generate` is the same decoding.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.generate(SOURCE, 1, 2, 10)),
                                  keras.ops.convert_to_numpy(decoding.greedy_search(model, SOURCE, 1, 2, 10)))


def test_a_mixed_precision_model_reloads_mixed_whatever_the_global_policy(tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = build_transformer(CONFIG)
    expected = logits(model, SOURCE, TARGET)
    model.save(tmp_path / "m.keras")
    keras.config.set_dtype_policy("float32")
    reloaded = keras.saving.load_model(tmp_path / "m.keras")
    assert reloaded.policy.name == "mixed_bfloat16" and reloaded.decoder.blocks[0].compute_dtype == "bfloat16"
    np.testing.assert_array_equal(logits(reloaded, SOURCE, TARGET), expected)


def test_decoder_takes_the_encoders_embedding_only_when_it_matches():
    from tf_transformer.layers import Decoder, Encoder

    encoder = Encoder(1, 16, 2, 32, vocab_size=40, max_length=8)
    shared = Decoder(1, 16, 2, 32, vocab_size=40, max_length=8, embedding=encoder.embedding)
    assert shared.embedding is encoder.embedding
    with pytest.raises(ValueError, match="`embedding` must match"):
        Decoder(1, 16, 2, 32, vocab_size=41, max_length=8, embedding=encoder.embedding)


def _training_and_inference_outputs(layer_call):
    return [keras.ops.convert_to_numpy(keras.ops.cast(layer_call(training), "float32")) for training in (True, False)]


@pytest.mark.parametrize("layer", ["attention", "feed_forward", "tied_projection"])
def test_bfloat16_training_matmuls_round_only_training_calls(layer, rng):
    from tf_transformer import fast_paths, layers

    x = rng.normal(size=(2, 5, 32)).astype("float32")
    calls = {
        "attention": (layers.MultiHeadAttention(num_heads=4, key_dim=8), lambda m, t: m(x, x, training=t)),
        "feed_forward": (layers.FeedForward(d_model=32, dff=64, dropout=0.0), lambda m, t: m(x, training=t)),
        "tied_projection": (layers.TokenAndPositionEmbedding(vocab_size=300, d_model=32, max_length=8),
                            lambda m, t: m(x, reverse=True, training=t)),
    }
    module, call = calls[layer]
    if layer == "tied_projection":
        module.build()
    float32_training, float32_inference = _training_and_inference_outputs(lambda t: call(module, t))
    np.testing.assert_array_equal(float32_training, float32_inference)  # no dropout: the same call

    fast_paths.set_training_matmul_dtype("bfloat16")
    bfloat16_training, inference = _training_and_inference_outputs(lambda t: call(module, t))
    np.testing.assert_array_equal(inference, float32_inference)  # inference (decoding, the export) keeps float32
    assert bfloat16_training.dtype == np.float32
    error = np.abs(bfloat16_training - float32_training).max() / np.abs(float32_training).max()
    assert 0 < error < 2e-2, error  # rounded as bfloat16 operands round, no more


@pytest.mark.parametrize("tied", [True, False])
def test_bfloat16_training_matmuls_give_float32s_gradients_closely(tied):
    import tensorflow as tf
    from tf_transformer import fast_paths, losses

    config = dataclasses.replace(CONFIG, dropout=0.0, share_embeddings=tied, tie_output_embedding=tied,
                                 target_vocab_size=60)
    model = build_transformer(config)
    inputs = {"encoder_tokens": SOURCE, "decoder_tokens": TARGET[:, :-1]}
    labels = TARGET[:, 1:]
    loss = losses.MaskedSparseCategoricalCrossentropy(label_smoothing=0.1)

    def gradients():
        with tf.GradientTape() as tape:
            value = loss(labels, model(inputs, training=True))
        return float(value), [tf.convert_to_tensor(g).numpy().ravel() for g in tape.gradient(value, model.trainable_variables)]

    float32_loss, float32_gradients = gradients()
    fast_paths.set_training_matmul_dtype("bfloat16")
    bfloat16_loss, bfloat16_gradients = gradients()
    inference = keras.ops.convert_to_numpy(model(inputs, training=False))
    rounded = keras.ops.convert_to_numpy(model(inputs, training=True))
    projection = model.decoder.embedding if tied else model.output_projection
    fast_paths.set_training_matmul_dtype(None)
    # The output projection alone rounds too: its input is the same either way once the rest is float32.
    hidden = model.decoder(TARGET[:, :-1], model.encoder(SOURCE), context_padding_mask=SOURCE != 0)
    project = (lambda h, t: projection(h, reverse=True, training=t)) if tied else (lambda h, t: projection(h, training=t))
    float32_logits = keras.ops.convert_to_numpy(project(hidden, True))
    fast_paths.set_training_matmul_dtype("bfloat16")
    assert not np.array_equal(keras.ops.convert_to_numpy(project(hidden, True)), float32_logits)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(project(hidden, False)), float32_logits)
    assert not np.array_equal(rounded, inference)
    assert bfloat16_loss != float32_loss and abs(bfloat16_loss - float32_loss) < 1e-2 * float32_loss
    scale = max(np.linalg.norm(a) for a in float32_gradients)
    for variable, a, b in zip(model.trainable_variables, float32_gradients, bfloat16_gradients):
        # The key biases' gradient is 0 up to rounding (softmax ignores a shift of all of a query's scores).
        if np.linalg.norm(a) > 1e-3 * scale:
            cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
            assert cosine > 0.995, (variable.path, cosine)


def test_bfloat16_training_matmuls_leave_a_mixed_policy_model_alone():
    from tf_transformer import fast_paths

    keras.config.set_dtype_policy("mixed_bfloat16")
    model = build_transformer(dataclasses.replace(CONFIG, dropout=0.0))
    inputs = {"encoder_tokens": SOURCE, "decoder_tokens": TARGET}
    before = keras.ops.convert_to_numpy(keras.ops.cast(model(inputs, training=True), "float32"))
    fast_paths.set_training_matmul_dtype("bfloat16")
    after = keras.ops.convert_to_numpy(keras.ops.cast(model(inputs, training=True), "float32"))
    np.testing.assert_array_equal(before, after)


def test_training_matmul_dtype_refuses_what_it_cannot_do():
    from tf_transformer import fast_paths

    with pytest.raises(ValueError, match="'bfloat16' or None. Received: 'float16'"):
        fast_paths.set_training_matmul_dtype("float16")
    assert fast_paths.training_matmul_dtype() is None
