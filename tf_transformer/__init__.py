"""tf_transformer: the Transformer of "Attention Is All You Need" from reusable Keras 3 layers.

Importing the package registers every layer with Keras's serialization, so
`keras.saving.load_model` needs no `custom_objects`. Nothing here imports
TensorFlow: the layers, the model and the decoding run on any Keras backend;
`tf_transformer.export` (which needs TensorFlow) is imported on first use.
"""

import importlib

from tf_transformer import layers, losses, masks, metrics, schedules
from tf_transformer.cache import KVCache
from tf_transformer.config import TransformerConfig
from tf_transformer.layers.positional_encoding import positional_encoding
from tf_transformer.model import Transformer, attention_weights, build_transformer

__version__ = "0.1.0"

_LAZY_MODULES = ("decoding", "export")


def __getattr__(name):
    # Imported on first use: `export` needs TensorFlow, which a JAX-only
    # machine does not have.
    if name in _LAZY_MODULES:
        return importlib.import_module(f"tf_transformer.{name}")
    raise AttributeError(f"module 'tf_transformer' has no attribute {name!r}")


__all__ = [
    "KVCache",
    "Transformer",
    "TransformerConfig",
    "attention_weights",
    "build_transformer",
    "layers",
    "masks",
    "losses",
    "metrics",
    "schedules",
    "positional_encoding",
    "decoding",
]  # not `export`: it needs TensorFlow, and `from tf_transformer import *` must work without it
