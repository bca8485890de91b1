"""The paper's loss (section 5.4): label-smoothed cross-entropy over real tokens only.

Written with `keras.ops`, so it trains the model on every backend, and
registered with Keras. Padding (label 0) contributes nothing.

We use the notation B batch, T target length, V target vocabulary size.
"""

import keras
from keras import ops

from tf_transformer.special_tokens import PAD


def _replicas_in_sync():
    # Keras sums gradients over tf.distribute replicas, so each replica's loss
    # is divided by their number (as Keras's own mean losses are).
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def _label_logits(logits, labels):
    """`logits[b, t, labels[b, t]]`: `[B, T]` from `logits` `[B, T, V]` and `labels` `[B, T]`."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # keras.ops.take_along_axis broadcasts its indices into a gather_nd there, whose
        # gradient costs more than the rest of the loss; a batched gather reads the same.
        return tf.gather(logits, labels[..., None], batch_dims=len(labels.shape))[..., 0]
    return ops.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]


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
        logits = ops.cast(y_pred, "float32")  # [B, T, V]
        # log p(v) = z_v - logsumexp(z), so the loss needs only logsumexp(z), the
        # label's z and mean(z): no [B, T, V] of log-probabilities is written
        # (benchmarks/README.md, "Anki", has what it saves a step).
        log_normalizer = ops.logsumexp(logits, axis=-1)  # [B, T]
        label_logit = _label_logits(logits, labels)
        smoothing = self.label_smoothing
        per_token = log_normalizer - (1.0 - smoothing) * label_logit - smoothing * ops.mean(logits, axis=-1)
        real = ops.cast(ops.not_equal(labels, self.pad_id), "float32")
        count = ops.maximum(ops.sum(real), 1.0) * _replicas_in_sync()
        return per_token * real / count

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "pad_id": self.pad_id}

    @classmethod
    def from_config(cls, config):
        config.pop("reduction", None)
        return cls(**config)
