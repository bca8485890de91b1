"""Translate with an export reloaded the ways users load it, in a process that cannot import this project.

    python training/reloaded_export.py SAVED_MODEL_DIR REQUEST.json RESULT.json

Run as a file (not `-m`): the first lines make `import tf_transformer` and
`import training` fail, so nothing here can lean on the code that wrote the
export. The request names texts per loader:

    {"saved_model_load": {"serving_default": [...], "beam_search": [...]},
     "session_loader":   {"serving_default": [...], "beam_search": [...]}}

* `saved_model_load`: TensorFlow 2's `tf.saved_model.load` and the
  signature (what `training.translate` and Python clients run);
* `session_loader`: TensorFlow 1's session bundle — the graph imported, the
  variables restored by the saver's restore op, the signature's tensors fed
  and fetched — exactly what `saved_model_cli run` and TF Serving's server do.

The result holds the translations under the same keys. A signature with
other inputs or outputs (`n_best`, `sample`, `score`) is asked with a dict
of its inputs, each a list with one value per example, and answers a dict
of all its outputs as lists (strings decoded):

    {"saved_model_load": {"score": {"text": [...], "translation": [...]}}}

tensorflow-text is imported when installed, for the SentencePiece ops of
subword exports.
"""

import sys

sys.modules["tf_transformer"] = None  # a later `import tf_transformer` raises ImportError
sys.modules["training"] = None

import json  # noqa: E402
import os  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

try:
    import tensorflow_text  # noqa: F401, E402  registers SentencepieceOp & co.
except ImportError:
    pass

BATCH_SIZE = 256


def _decode(values):
    return [value.decode("utf-8") for value in values]


def _as_list(array):
    """A fetched array as JSON: strings decoded, numbers as Python numbers, rows kept."""
    if array.dtype == object:
        return [_as_list(row) if getattr(row, "ndim", 0) else row.decode("utf-8") for row in array]
    return array.tolist()


def _batches(inputs):
    """`(inputs as a dict, plain)`: a list of texts is the `text` input of a translation signature."""
    plain = isinstance(inputs, list)
    inputs = {"text": inputs} if plain else inputs
    rows = len(inputs["text"])
    return plain, [{k: v[start: start + BATCH_SIZE] for k, v in inputs.items()} for start in range(0, rows, BATCH_SIZE)]


def _gathered(plain, outputs):
    if plain:
        return [text for batch in outputs for text in batch["translation"]]
    return {key: [value for batch in outputs for value in batch[key]] for key in outputs[0]} if outputs else {}


def saved_model_load(path, requests):
    loaded = tf.saved_model.load(path)
    results = {}
    for name, inputs in requests.items():
        signature = loaded.signatures[name]
        specs = signature.structured_input_signature[1]
        plain, batches = _batches(inputs)
        outputs = [{key: _as_list(value.numpy()) for key, value in signature(
            **{k: tf.constant(v, specs[k].dtype) for k, v in batch.items()}).items()} for batch in batches]
        results[name] = _gathered(plain, outputs)
    return results


def session_loader(path, requests):
    results = {}
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], path)
        for name, inputs in requests.items():
            signature = meta_graph.signature_def[name]
            fetches = {key: tensor.name for key, tensor in signature.outputs.items()}
            plain, batches = _batches(inputs)
            outputs = [{key: _as_list(value) for key, value in session.run(
                fetches, {signature.inputs[k].name: v for k, v in batch.items()}).items()} for batch in batches]
            results[name] = _gathered(plain, outputs)
    return results


def main(path, request_path, result_path):
    with open(request_path, encoding="utf-8") as file:
        request = json.load(file)
    result = {}
    if request.get("saved_model_load"):
        result["saved_model_load"] = saved_model_load(path, request["saved_model_load"])
    if request.get("session_loader"):
        result["session_loader"] = session_loader(path, request["session_loader"])
    with open(result_path, "w", encoding="utf-8") as file:
        json.dump(result, file, ensure_ascii=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])
