"""The paper's learning-rate schedule and optimiser (section 5.3).

Registered with Keras, so a compiled model saves and reloads with it.
"""

import keras
from keras import ops


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
    """Adam with β1 = 0.9, β2 = 0.98, ε = 1e-9 and the warm-up schedule.

    Example:

    >>> optimizer = paper_optimizer(d_model=512)
    >>> float(optimizer.beta_2), float(optimizer.epsilon)
    (0.98, 1e-09)
    """
    return keras.optimizers.Adam(
        WarmupSchedule(d_model, warmup_steps, scale), beta_1=0.9, beta_2=0.98, epsilon=1e-9
    )
