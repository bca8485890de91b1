"""Runnable entry points and dataset recipes for tf_transformer (python -m training.…)."""
