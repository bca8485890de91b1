"""The same encoder–decoder Transformer built three ways, for the benchmarks.

* `ours`: `tf_transformer.build_transformer`.
* `keras_hub`: KerasHub's `TransformerEncoder`/`TransformerDecoder` with a
  token `Embedding` + `SinePositionEncoding`, and a `Dense` output.
* `keras_mha`: the TensorFlow text tutorial's structure on
  `keras.layers.MultiHeadAttention` (attention + Add + LayerNormalization,
  FFN + Add + LayerNormalization).

Same widths, heads (per-head size d_model // num_heads), FFN, vocabulary and
dropout; `check_same_size` asserts that the parameter counts match. All
three use `keras.ops`/Keras layers only, so they run on TensorFlow and JAX.
"""

import functools

import keras
from keras import ops

import tf_transformer


def build_ours(size):
    config = tf_transformer.TransformerConfig(
        num_layers=size["layers"], d_model=size["d_model"], num_heads=size["heads"], dff=size["dff"],
        dropout=size["dropout"], source_vocab_size=size["vocab"], target_vocab_size=size["vocab"],
        max_length=size.get("positions", size["length"] + 1),
    )
    return tf_transformer.build_transformer(config)


def build_ours_float32_logits(size):
    """Ours with a float32 copy of the logits as output (a diagnostic variant).

    What `build_transformer` did before its logits stayed in the compute
    dtype; `--models ours ours_float32_logits` measures what the copy costs.
    """
    model = build_ours(size)
    logits = keras.layers.Activation("linear", dtype="float32", name="float32_logits")(model.outputs[0])
    return keras.Model(model.inputs, logits)


def build_ours_keras_dropout(size):
    """Ours with Keras's own dropout draws (a diagnostic variant).

    Our `Dropout` derives its masks from an integer hash under XLA;
    `--models ours ours_keras_dropout` measures what that saves.
    """
    from tf_transformer.layers import Dropout

    model = build_ours(size)
    for layer in model._flatten_layers():
        if isinstance(layer, Dropout):  # this instance's call is Keras's own, read when the step is traced
            layer.call = functools.partial(keras.layers.Dropout.call, layer)
    return model


def build_ours_xla_attention(size):
    """Ours with `flash_attention=False` in every attention layer (a diagnostic variant).

    On a GPU, XLA's attention instead of cuDNN's flash kernel: at length 128
    the kernel ran ≈ 10× slower than the attention's FLOPs need;
    `--models ours ours_xla_attention` measures which is faster, interleaved.
    Elsewhere the two are the same model.
    """
    from tf_transformer.layers import MultiHeadAttention

    return _ours_with(size, MultiHeadAttention, flash_attention=False)


def build_ours_bfloat16_matmuls(size):
    """Ours training with its weights' products in bfloat16, the rest float32 (`--mixed-precision bfloat16-matmuls`).

    `fast_paths.set_training_matmul_dtype` is process-wide and read when the
    step is traced, so this model's training step switches it on around its
    own trace only; the other models in the same run stay float32.
    """
    from tf_transformer import fast_paths

    model = build_ours(size)
    float32_step = model.train_step

    def train_step(data):
        before = fast_paths.training_matmul_dtype()
        fast_paths.set_training_matmul_dtype("bfloat16")
        try:
            return float32_step(data)
        finally:
            fast_paths.set_training_matmul_dtype(before)

    model.train_step = train_step
    return model


def build_keras_hub_fused_mixed_bfloat16(size):
    """KerasHub's best configuration under Keras's `mixed_bfloat16` policy: its own way to bfloat16 matmuls."""
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        return build_keras_hub_fused(size)
    finally:
        keras.config.set_dtype_policy(before)


def _ours_with(size, layer_type, **attributes):
    """Ours with `attributes` set on every layer of `layer_type`.

    The diagnostic variants switch attributes the layers read when the
    training step is traced, so setting them after building is enough.
    """
    model = build_ours(size)
    for layer in model._flatten_layers():
        if isinstance(layer, layer_type):
            for name, value in attributes.items():
                setattr(layer, name, value)
    return model


def _embed(tokens, size, name):
    import keras_hub

    x = keras.layers.Embedding(size["vocab"], size["d_model"], mask_zero=True, name=f"{name}_embedding")(tokens)
    x = x + keras_hub.layers.SinePositionEncoding(name=f"{name}_position")(x)
    return keras.layers.Dropout(size["dropout"])(x)


def build_keras_hub(size):
    import keras_hub

    encoder_tokens = keras.Input((None,), dtype="int32", name="encoder_tokens")
    decoder_tokens = keras.Input((None,), dtype="int32", name="decoder_tokens")
    x = _embed(encoder_tokens, size, "source")
    for i in range(size["layers"]):
        x = keras_hub.layers.TransformerEncoder(
            size["dff"], size["heads"], dropout=size["dropout"], layer_norm_epsilon=1e-6, name=f"encoder_{i}"
        )(x, padding_mask=ops.not_equal(encoder_tokens, 0))
    context = x
    y = _embed(decoder_tokens, size, "target")
    for i in range(size["layers"]):
        y = keras_hub.layers.TransformerDecoder(
            size["dff"], size["heads"], dropout=size["dropout"], layer_norm_epsilon=1e-6, name=f"decoder_{i}"
        )(y, context, decoder_padding_mask=ops.not_equal(decoder_tokens, 0),
          encoder_padding_mask=ops.not_equal(encoder_tokens, 0))
    logits = keras.layers.Dense(size["vocab"], name="logits")(y)
    return keras.Model({"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens}, logits)


def build_keras_hub_fused(size):
    """KerasHub with attention-weight dropout 0 (residual dropout kept).

    Its best configuration and the fair peer of ours, whose attention dropout
    is 0 by default (the paper names residual and embedding dropout only):
    keras's MultiHeadAttention takes its fused `dot_product_attention` path
    only when its dropout is 0. KerasHub has one `dropout` argument for both,
    so the attention layers' rate is set after building.
    """
    model = build_keras_hub(size)
    for layer in model.layers:
        for name in ("_self_attention_layer", "_cross_attention_layer"):
            attention = getattr(layer, name, None)
            if attention is not None:
                attention._dropout = 0.0
    return model


class _Attention(keras.layers.Layer):
    """The tutorial's BaseAttention: keras MHA, Add, LayerNormalization."""

    def __init__(self, size, causal=False, **kwargs):
        super().__init__(**kwargs)
        self.causal = causal
        self.mha = keras.layers.MultiHeadAttention(
            size["heads"], size["d_model"] // size["heads"], dropout=size["dropout"]
        )
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6)
        self.add = keras.layers.Add()
        self.dropout = keras.layers.Dropout(size["dropout"])

    def call(self, x, context=None):
        context = x if context is None else context
        y = self.mha(query=x, value=context, key=context, use_causal_mask=self.causal)
        return self.norm(self.add([x, self.dropout(y)]))


class _FeedForward(keras.layers.Layer):
    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.inner = keras.layers.Dense(size["dff"], activation="relu")
        self.outer = keras.layers.Dense(size["d_model"])
        self.dropout = keras.layers.Dropout(size["dropout"])
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6)

    def call(self, x):
        return self.norm(x + self.dropout(self.outer(self.inner(x))))


def build_keras_mha(size):
    encoder_tokens = keras.Input((None,), dtype="int32", name="encoder_tokens")
    decoder_tokens = keras.Input((None,), dtype="int32", name="decoder_tokens")
    x = _embed(encoder_tokens, size, "source")
    for _ in range(size["layers"]):
        x = _FeedForward(size)(_Attention(size)(x))
    y = _embed(decoder_tokens, size, "target")
    for _ in range(size["layers"]):
        y = _Attention(size, causal=True)(y)
        y = _Attention(size)(y, x)
        y = _FeedForward(size)(y)
    logits = keras.layers.Dense(size["vocab"], name="logits")(y)
    return keras.Model({"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens}, logits)


BUILDERS = {
    "ours": build_ours,
    "keras_hub": build_keras_hub,
    "keras_hub_fused": build_keras_hub_fused,
    "keras_mha": build_keras_mha,
}
VARIANTS = dict(BUILDERS, ours_float32_logits=build_ours_float32_logits, ours_keras_dropout=build_ours_keras_dropout,
                ours_xla_attention=build_ours_xla_attention, ours_bfloat16_matmuls=build_ours_bfloat16_matmuls,
                keras_hub_fused_mixed_bfloat16=build_keras_hub_fused_mixed_bfloat16)  # selectable with --models


def check_same_size(models):
    counts = {name: model.count_params() for name, model in models.items()}
    if len(set(counts.values())) != 1:
        raise AssertionError(f"The implementations differ in size: {counts}")
    return counts


def keras_hub_greedy(model, encoder_tokens, start_id, new_tokens):
    """Greedy decoding with KerasHub's caches, as its samplers use them.

    Each `TransformerDecoder` gets a `[B, 2, L, H, K]` self-attention cache
    updated at `self_attention_cache_update_index`, one token per step, and
    the cross-attention keys/values computed once (`cross_attention_cache`).
    """
    import keras_hub

    layers = {layer.name: layer for layer in model.layers}
    encoders = [l for l in model.layers if isinstance(l, keras_hub.layers.TransformerEncoder)]
    decoders = [l for l in model.layers if isinstance(l, keras_hub.layers.TransformerDecoder)]
    source_mask = ops.not_equal(encoder_tokens, 0)
    x = layers["source_embedding"](encoder_tokens)
    x = x + layers["source_position"](x)
    for encoder in encoders:
        x = encoder(x, padding_mask=source_mask)
    batch = ops.shape(encoder_tokens)[0]
    length = new_tokens + 1
    heads = decoders[0].num_heads
    key_dim = decoders[0]._self_attention_layer._key_dim
    dtype = decoders[0].compute_dtype
    self_caches = [ops.zeros((batch, 2, length, heads, key_dim), dtype) for _ in decoders]
    cross_caches = []
    for decoder in decoders:
        attention = decoder._cross_attention_layer
        key = attention._key_dense(x)
        value = attention._value_dense(x)
        cross_caches.append(ops.stack([key, value], axis=1))
    tokens = ops.concatenate(
        [ops.full((batch, 1), start_id, "int32"), ops.zeros((batch, new_tokens), "int32")], axis=1
    )
    embedding, position = layers["target_embedding"], layers["target_position"]
    logits_layer = layers["logits"]

    def body(index, tokens, self_caches):
        current = ops.slice(tokens, (0, index), (batch, 1))
        y = embedding(current)
        y = y + position(y, start_index=index)
        new_caches = []
        for decoder, self_cache, cross_cache in zip(decoders, self_caches, cross_caches):
            y, self_cache, _ = decoder(
                y, x, encoder_padding_mask=source_mask,
                self_attention_cache=self_cache, self_attention_cache_update_index=index,
                cross_attention_cache=cross_cache, cross_attention_cache_update_index=None,
            )
            new_caches.append(self_cache)
        next_token = ops.cast(ops.argmax(logits_layer(y)[:, 0], axis=-1), "int32")
        tokens = ops.slice_update(tokens, (0, index + 1), next_token[:, None])
        return index + 1, tokens, new_caches

    _, tokens, _ = ops.while_loop(
        lambda index, tokens, caches: index < new_tokens, body, (0, tokens, self_caches)
    )
    return tokens
