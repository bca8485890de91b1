"""Reproducible speed comparisons against peers (python -m benchmarks.run)."""

import os

if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":  # the GPU machine runs JAX without TensorFlow
    from training.quiet_tensorflow import import_tensorflow

    import_tensorflow()
