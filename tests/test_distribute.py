"""tf.distribute: a mirrored run over two logical CPUs matches a one-device run."""

import json
import subprocess
import sys

MIRRORED = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import tf_transformer as tt
from tf_transformer import recipe

rng = np.random.default_rng(0)
source = rng.integers(3, 20, size=(64, 6)).astype("int32")
target = np.concatenate([np.ones((64, 1), "int32"), source[:, ::-1], np.full((64, 1), 2, "int32")], axis=1)
data = tf.data.Dataset.from_tensor_slices(
    ({"encoder_tokens": source, "decoder_tokens": target[:, :-1]}, target[:, 1:])
).batch(16)  # the global batch: 8 per replica under the mirrored strategy

def train(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        config = tt.TransformerConfig.preset("tiny", source_vocab_size=20, target_vocab_size=20, d_model=32, dff=64, dropout=0.0)
        model = tt.build_transformer(config)
        model.compile(recipe.paper_optimizer(32, warmup_steps=10), recipe.MaskedSparseCategoricalCrossentropy(),
                      metrics=[recipe.MaskedAccuracy()])
    history = model.fit(data, epochs=4, verbose=0, shuffle=False)
    # Key biases have an exactly-zero gradient (the softmax cancels them), so
    # Adam turns round-off noise into full steps there: compare the rest.
    return history.history["loss"], [w.numpy() for w in model.weights if not w.path.endswith("key_bias")]

one_loss, one_weights = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
two_loss, two_weights = train(strategy)
difference = max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, two_weights))
print(json.dumps({"one": one_loss, "two": two_loss, "max_weight_difference": difference}))
"""


def test_mirrored_matches_one_device():
    result = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    one, two = found["one"], found["two"]
    assert one[-1] < one[0] and two[-1] < two[0]  # it trains
    # Same global batch, same data: the same losses and weights, to float32
    # round-off of summing gradients in another order (stated tolerance 1e-4).
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (one, two)
    assert found["max_weight_difference"] < 1e-4, found
