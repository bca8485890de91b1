"""The layers inside models users build themselves: train, save, reload."""

import keras
import numpy as np

from tf_transformer.layers import DecoderBlock, EncoderBlock, TokenAndPositionEmbedding


def fit_save_reload(model, x, y, tmp_path, loss):
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=loss)
    history = model.fit(x, y, batch_size=16, epochs=8, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0], losses
    path = str(tmp_path / "user_model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(reloaded.predict(x, verbose=0)),
        keras.ops.convert_to_numpy(model.predict(x, verbose=0)),
    )


def test_classifier_with_encoder_block(tmp_path):
    """Embedding → EncoderBlock → pooling → Dense learns whether token 7 occurs."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 12, size=256)
    x = np.zeros((256, 12), "int32")
    for row, length in zip(x, lengths):
        row[:length] = rng.integers(1, 7, size=length)  # ids 1..6, never 7
    y = rng.integers(0, 2, size=256)
    x[y == 1, 0] = 7
    inputs = keras.Input((None,), dtype="int32")
    h = TokenAndPositionEmbedding(20, 32, max_length=12)(inputs)
    h = EncoderBlock(d_model=32, num_heads=4, dff=64, dropout=0.0)(h)  # the Keras mask flows in
    h = keras.layers.GlobalAveragePooling1D()(h)  # and pooling honours it
    outputs = keras.layers.Dense(1, activation="sigmoid")(h)
    fit_save_reload(keras.Model(inputs, outputs), x, y, tmp_path, "binary_crossentropy")


def test_decoder_only_language_model(tmp_path):
    """DecoderBlock(context=None) stacks into a GPT-style model that learns counting."""
    starts = np.random.default_rng(0).integers(1, 20, size=256)
    sequences = (starts[:, None] + np.arange(9)) % 30 + 1  # next token = this + 1
    x, y = sequences[:, :-1].astype("int32"), sequences[:, 1:].astype("int32")
    inputs = keras.Input((None,), dtype="int32")
    h = TokenAndPositionEmbedding(32, 32, max_length=16)(inputs)
    for _ in range(2):
        h = DecoderBlock(d_model=32, num_heads=4, dff=64, dropout=0.0, norm_first=True)(h)
    outputs = keras.layers.Dense(32)(h)
    fit_save_reload(
        keras.Model(inputs, outputs), x, y, tmp_path,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
