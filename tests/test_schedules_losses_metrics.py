"""The paper's schedule, the masked label-smoothed loss and the masked accuracy."""

import keras
import numpy as np
import pytest

from layer_test_helper import run_on_jax

from tf_transformer import losses, metrics, schedules


def test_schedule_matches_the_formula():
    schedule = schedules.WarmupSchedule(d_model=512, warmup_steps=4000)
    for step in (0, 1, 100, 3999, 4000, 10000, 100000):
        s = step + 1  # the optimizer's iteration 0 is step 1
        expected = 512**-0.5 * min(s**-0.5, s * 4000**-1.5)
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5)
    # Peak at the end of warm-up, then decay.
    assert float(schedule(3999)) > float(schedule(1000)) and float(schedule(3999)) > float(schedule(20000))
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert float(revived(1234)) == float(schedule(1234))
    with pytest.raises(ValueError, match="positive"):
        schedules.WarmupSchedule(0)


def test_label_smoothing_against_hand_computation():
    logits = np.array([[[2.0, 1.0, 0.0, -1.0]]], "float32")  # one real token, V = 4
    labels = np.array([[1]])
    log_probs = logits[0, 0] - np.log(np.exp(logits[0, 0]).sum())
    epsilon = 0.1
    expected = -(1 - epsilon) * log_probs[1] - epsilon / 4 * log_probs.sum()
    loss = losses.MaskedSparseCategoricalCrossentropy(label_smoothing=epsilon)
    np.testing.assert_allclose(float(loss(labels, logits)), expected, rtol=1e-6)
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    np.testing.assert_allclose(
        float(losses.MaskedSparseCategoricalCrossentropy(label_smoothing=0.0)(labels, logits)),
        float(plain(labels, logits)), rtol=1e-6,
    )


def test_padding_changes_nothing(rng):
    logits = rng.normal(size=(2, 3, 7)).astype("float32")
    labels = np.array([[4, 5, 6], [2, 3, 0]])
    loss = losses.MaskedSparseCategoricalCrossentropy()
    reference = float(loss(labels, logits))
    # More padding, with any logits under it: same loss (not diluted, not changed).
    padded_logits = np.concatenate([logits, rng.normal(size=(2, 4, 7)).astype("float32") * 50], axis=1)
    padded_labels = np.pad(labels, ((0, 0), (0, 4)))
    np.testing.assert_allclose(float(loss(padded_labels, padded_logits)), reference, rtol=1e-6)
    # It is the mean over the 5 real tokens.
    per_token = [
        float(losses.MaskedSparseCategoricalCrossentropy()(labels[b : b + 1, t : t + 1], logits[b : b + 1, t : t + 1]))
        for b, t in [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    ]
    np.testing.assert_allclose(reference, np.mean(per_token), rtol=1e-5)
    # A Keras mask on the predictions (as the model's logits carry) changes nothing either.
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert revived.label_smoothing == 0.1 and float(revived(labels, logits)) == reference


# The loss is written from logsumexp and the label's logit (no log-softmax), with a
# backend-specific gather: its gradient must still be the textbook one,
# (softmax - smoothed one-hot) on real tokens over their count, on each backend.
LOSS_GRADIENT = """
import numpy as np, keras
from tf_transformer import losses
rng = np.random.default_rng(0)
logits = (rng.normal(size=(2, 3, 7)) * 3).astype("float32")
labels = np.array([[4, 5, 6], [2, 3, 0]], "int32")
epsilon = 0.1
loss = losses.MaskedSparseCategoricalCrossentropy(label_smoothing=epsilon)
if keras.backend.backend() == "jax":
    import jax
    gradient = np.asarray(jax.grad(lambda z: loss(labels, z))(logits))
else:
    import tensorflow as tf
    z = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(z)
        value = loss(labels, z)
    gradient = tape.gradient(value, z).numpy()
probs = np.exp(logits - logits.max(-1, keepdims=True))
probs /= probs.sum(-1, keepdims=True)
target = (1 - epsilon) * np.eye(7)[labels] + epsilon / 7
real = (labels != 0)[..., None]
np.testing.assert_allclose(gradient, (probs - target) * real / real.sum(), atol=1e-6)
assert not gradient[1, 2].any()  # padding gets no gradient
print("loss gradient ok")
"""


def test_loss_gradient_is_softmax_minus_smoothed_target():
    exec(LOSS_GRADIENT, {})  # TensorFlow, in process
    run_on_jax(LOSS_GRADIENT, "loss gradient ok")


def test_masked_accuracy_ignores_padding():
    metric = metrics.MaskedAccuracy()
    labels = np.array([[1, 2, 0, 0]])
    logits = np.eye(4, dtype="float32")[[[1, 3, 0, 0]]]  # predicts 1, 3, 0, 0
    metric.update_state(labels, logits)
    assert float(metric.result()) == 0.5  # 1 of 2 real tokens; padding "hits" don't count
    metric.reset_state()
    assert float(metric.result()) == 0.0


JAX_RECIPE = """
import numpy as np, keras
import tf_transformer as tt
from tf_transformer import losses, metrics, schedules
keras.utils.set_random_seed(0)
model = tt.build_transformer(tt.TransformerConfig.preset("tiny", source_vocab_size=20, target_vocab_size=20, d_model=32, dff=64))
model.compile(optimizer=schedules.paper_optimizer(32, warmup_steps=20),
              loss=losses.MaskedSparseCategoricalCrossentropy(), metrics=[metrics.MaskedAccuracy()])
rng = np.random.default_rng(0)
source = rng.integers(3, 20, size=(64, 6)).astype("int32")
target = np.concatenate([np.ones((64, 1), "int32"), source, np.full((64, 1), 2, "int32")], axis=1)
target[::2, 5:] = 0  # padding that must not count
history = model.fit({"encoder_tokens": source, "decoder_tokens": target[:, :-1]}, target[:, 1:], batch_size=16, epochs=6, verbose=0)
loss = history.history["loss"]
assert loss[-1] < loss[0], loss
print("jax recipe ok", loss[0], loss[-1], history.history["masked_accuracy"][-1])
"""


def test_recipe_trains_on_jax():
    run_on_jax(JAX_RECIPE, "jax recipe ok")
