"""Names every docstring example may use (`pytest --doctest-modules tf_transformer`), as a reader would import them."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    import tf_transformer
    from tf_transformer import layers

    keras.utils.set_random_seed(0)
    doctest_namespace.update(np=np, keras=keras, tf_transformer=tf_transformer, layers=layers)
