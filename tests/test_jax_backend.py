"""The same model on the JAX backend (a subprocess: the backend is chosen at import)."""

from layer_test_helper import run_on_jax

JAX_SCRIPT = """
import numpy as np, keras
assert keras.backend.backend() == "jax"
import tf_transformer as tt
keras.utils.set_random_seed(0)
config = tt.TransformerConfig.preset("tiny", source_vocab_size=30, target_vocab_size=30, d_model=32, dff=64)
model = tt.build_transformer(config)
rng = np.random.default_rng(0)
source = rng.integers(1, 30, size=(64, 8)).astype("int32")
target = np.concatenate([np.ones((64, 1), "int32"), source[:, ::-1]], axis=1)  # learn to reverse
model.compile(optimizer=keras.optimizers.Adam(3e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
history = model.fit({"encoder_tokens": source, "decoder_tokens": target[:, :-1]}, target[:, 1:],
                    batch_size=16, epochs=5, verbose=0)
losses = history.history["loss"]
assert losses[-1] < losses[0], losses
logits = model.predict({"encoder_tokens": source[:2], "decoder_tokens": target[:2, :-1]}, verbose=0)
assert logits.shape == (2, 8, 30) and np.all(np.isfinite(logits))
# The training step again with its weights' products in bfloat16 (fast_paths.weights_matmul), traced by jax.jit.
from tf_transformer import fast_paths
fast_paths.set_training_matmul_dtype("bfloat16")
model.compile(optimizer=keras.optimizers.Adam(3e-3),
              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
more = model.fit({"encoder_tokens": source, "decoder_tokens": target[:, :-1]}, target[:, 1:],
                 batch_size=16, epochs=2, verbose=0).history["loss"]
assert np.all(np.isfinite(more)) and more[-1] < losses[0], more
print("jax ok", losses[0], losses[-1], more[-1])
"""


def test_trains_and_runs_on_jax():
    run_on_jax(JAX_SCRIPT, "jax ok")


WITHOUT_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None  # `import tensorflow` now fails, as on a machine with JAX only
import numpy as np, keras
from tf_transformer import *  # noqa: F403
import tf_transformer as tt
assert "tensorflow" not in [m for m in sys.modules if sys.modules[m] is not None]
config = tt.TransformerConfig.preset("tiny", source_vocab_size=20, target_vocab_size=20)
model = tt.Transformer(config)
model.compile(optimizer="adam", loss=tt.losses.MaskedSparseCategoricalCrossentropy())
source = np.array([[3, 4, 5, 0], [6, 7, 0, 0]], "int32")
target = np.array([[1, 5, 4, 3, 2], [1, 7, 6, 2, 0]], "int32")
model.fit({"encoder_tokens": source, "decoder_tokens": target[:, :-1]}, target[:, 1:], epochs=1, verbose=0)
ids = keras.ops.convert_to_numpy(model.generate(source, start_id=1, end_id=2, max_length=6))
beam = keras.ops.convert_to_numpy(model.generate(source, start_id=1, end_id=2, max_length=6, beam_size=2))
assert ids.shape[0] == beam.shape[0] == 2 and (ids[:, 0] == 1).all()
print("no tensorflow ok")
"""


def test_the_package_imports_fits_and_decodes_with_jax_and_no_tensorflow():
    run_on_jax(WITHOUT_TENSORFLOW, "no tensorflow ok")
