"""The paper's training recipe (section 5): schedule, loss and accuracy.

Written with `keras.ops`, so it trains the model on every backend, and
registered with Keras, so a compiled model saves and reloads with it.
Padding (label 0) never counts: not in the loss, not in the accuracy.

We use the notation B batch, T target length, V target vocabulary size.
"""

import keras
from keras import ops

from tf_transformer.special_tokens import PAD


@keras.saving.register_keras_serializable(package="tf_transformer")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`lrate = scale · d_model^-0.5 · min(step^-0.5, step · warmup_steps^-1.5)` (Eq. 3).

    The rate grows linearly for `warmup_steps` steps, then decays with the
    inverse square root of the step. Steps count from 1, so the first
    update does not use a rate of 0.

    Args:
        d_model: the model width.
        warmup_steps: 4000 in the paper; a few hundred for small data.
        scale: a constant factor (1 in the paper).

    Example:

    >>> schedule = WarmupSchedule(512)
    >>> optimizer = keras.optimizers.Adam(schedule, beta_1=0.9, beta_2=0.98, epsilon=1e-9)
    >>> peak = 512 ** -0.5 * 4000 ** -0.5  # at the end of the warm-up
    >>> [round(float(schedule(step)) / peak, 2) for step in (1000, 4000, 16000)]  # linear up, then 1/sqrt(step)
    [0.25, 1.0, 0.5]
    """

    def __init__(self, d_model, warmup_steps=4000, scale=1.0):
        if d_model <= 0 or warmup_steps <= 0 or scale <= 0:
            raise ValueError(
                "`d_model`, `warmup_steps` and `scale` must be positive. Received: "
                f"d_model={d_model}, warmup_steps={warmup_steps}, scale={scale}"
            )
        self.d_model = d_model
        self.warmup_steps = warmup_steps
        self.scale = scale

    def __call__(self, step):
        step = ops.cast(step, "float32") + 1.0
        rate = ops.minimum(ops.rsqrt(step), step * self.warmup_steps**-1.5)
        return self.scale * self.d_model**-0.5 * rate

    def get_config(self):
        return {"d_model": self.d_model, "warmup_steps": self.warmup_steps, "scale": self.scale}


def paper_optimizer(d_model, warmup_steps=4000, scale=1.0):
    """Adam with β1 = 0.9, β2 = 0.98, ε = 1e-9 and the warm-up schedule."""
    return keras.optimizers.Adam(
        WarmupSchedule(d_model, warmup_steps, scale), beta_1=0.9, beta_2=0.98, epsilon=1e-9
    )


def _replicas_in_sync():
    # Keras sums gradients over tf.distribute replicas, so each replica's loss
    # is divided by their number (as Keras's own mean losses are).
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="tf_transformer")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy from logits with label smoothing, averaged over real tokens.

    With smoothing ε the target distribution is `(1 - ε)` on the label plus
    `ε / V` everywhere (the paper's ε = 0.1, section 5.4), so
    `loss = -(1 - ε) log p(label) - ε/V Σ_v log p(v)`. Positions whose label
    is `pad_id` contribute nothing, and the sum is divided by the number of
    real tokens in the batch (not by B·T, which would let padding dilute the
    loss, a known flaw of peers). Computed in float32.

    Args:
        label_smoothing: ε in [0, 1).
        pad_id: the label of padding.

    Example:

    >>> loss = MaskedSparseCategoricalCrossentropy(label_smoothing=0.0)
    >>> labels = np.array([[3, 0]])  # the second position is padding
    >>> logits = np.zeros((1, 2, 4), "float32")  # uniform over 4 ids
    >>> round(float(loss(labels, logits)), 4) == round(float(np.log(4)), 4)  # padding dilutes nothing
    True
    """

    def __init__(self, label_smoothing=0.1, pad_id=PAD, name="masked_sparse_categorical_crossentropy", **kwargs):
        # "sum" of per-token losses that are already divided by the token count.
        kwargs["reduction"] = "sum"
        super().__init__(name=name, **kwargs)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"`label_smoothing` must be in [0, 1). Received: label_smoothing={label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.pad_id = int(pad_id)

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true, "int32")  # [B, T]
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)  # [B, T, V]
        label_log_prob = ops.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
        smoothing = self.label_smoothing
        per_token = -(1.0 - smoothing) * label_log_prob - smoothing * ops.mean(log_probs, axis=-1)
        real = ops.cast(ops.not_equal(labels, self.pad_id), "float32")
        count = ops.maximum(ops.sum(real), 1.0) * _replicas_in_sync()
        return per_token * real / count

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "pad_id": self.pad_id}

    @classmethod
    def from_config(cls, config):
        config.pop("reduction", None)
        return cls(**config)


def masked_hits(y_true, y_pred, pad_id=PAD, sample_weight=None):
    """`(correct, total)`: argmax hits and the count of real (non-padding) labels, float32 scalars."""
    labels = ops.cast(y_true, "int32")
    predictions = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
    weight = ops.cast(ops.not_equal(labels, pad_id), "float32")
    if sample_weight is not None:
        weight = weight * ops.cast(sample_weight, "float32")
    hits = ops.cast(ops.equal(labels, predictions), "float32") * weight
    return ops.sum(hits), ops.sum(weight)


@keras.saving.register_keras_serializable(package="tf_transformer")
class MaskedAccuracy(keras.metrics.Metric):
    """Token accuracy over real (non-padding) labels only.

    Example:

    >>> metric = MaskedAccuracy()
    >>> metric.update_state(np.array([[2, 1, 0, 0]]), np.eye(4)[[[2, 3, 0, 0]]])  # one right of two real labels
    >>> float(metric.result())
    0.5
    """

    def __init__(self, pad_id=PAD, name="masked_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pad_id = int(pad_id)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        hits, total = masked_hits(y_true, y_pred, self.pad_id, sample_weight)
        self.correct.assign_add(hits)
        self.total.assign_add(total)

    def result(self):
        return ops.divide_no_nan(self.correct, self.total)

    def reset_state(self):
        self.correct.assign(0.0)
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}
