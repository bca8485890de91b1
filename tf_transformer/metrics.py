"""Token accuracy and token counts over real (non-padding) labels: the metrics `training.train` reports.

We use the notation B batch, T target length, V target vocabulary size.
"""

import keras
from keras import ops

from tf_transformer.special_tokens import PAD


def masked_hits(y_true, y_pred, pad_id=PAD, sample_weight=None):
    """`(correct, total)`: argmax hits and the count of real (non-padding) labels, float32 scalars.

    Example:

    >>> correct, total = masked_hits(np.array([[2, 1, 0]]), np.eye(3)[[[2, 2, 0]]])  # label 0 is padding
    >>> float(correct), float(total)
    (1.0, 2.0)
    """
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


@keras.saving.register_keras_serializable(package="tf_transformer")
class TargetTokens(keras.metrics.Metric):
    """The target positions of the batches seen (`real=False`) or only the real, non-padding ones (`real=True`): a sum.

    What throughput in real tokens and the padding fraction are counted
    from (`training.callbacks.Throughput`). Registered here, with the model's
    other metrics, so that a saved model compiled with it reloads wherever
    `tf_transformer` is imported.

    Example:

    >>> real, positions = TargetTokens(real=True), TargetTokens(real=False)
    >>> labels = np.array([[5, 6, 2, 0], [7, 2, 0, 0]])  # 5 real labels in 8 positions
    >>> for metric in (real, positions):
    ...     metric.update_state(labels, None)
    >>> float(real.result()), float(positions.result())
    (5.0, 8.0)
    """

    def __init__(self, real=True, pad_id=PAD, name=None, **kwargs):
        super().__init__(name=name or ("real_tokens" if real else "target_positions"), **kwargs)
        self.real, self.pad_id = bool(real), int(pad_id)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float32", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if self.real:
            count = ops.sum(ops.cast(ops.not_equal(ops.cast(y_true, "int32"), self.pad_id), "float32"))
        else:
            count = ops.cast(ops.size(y_true), "float32")
        self.total.assign_add(count)

    def result(self):
        return self.total

    def reset_state(self):
        self.total.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "real": self.real, "pad_id": self.pad_id}
