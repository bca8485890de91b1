"""Runnable entry points and dataset recipes for tf_transformer (python -m training.…)."""

from training.quiet_tensorflow import import_tensorflow

import_tensorflow()  # before any module here imports it, without TensorFlow's start-up notices
