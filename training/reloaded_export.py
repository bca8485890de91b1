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

The result holds the translations under the same keys. tensorflow-text is
imported when installed, for the SentencePiece ops of subword exports.
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


def saved_model_load(path, requests):
    loaded = tf.saved_model.load(path)
    results = {}
    for name, texts in requests.items():
        signature = loaded.signatures[name]
        results[name] = []
        for start in range(0, len(texts), BATCH_SIZE):
            batch = tf.constant(texts[start : start + BATCH_SIZE], tf.string)
            results[name] += _decode(signature(text=batch)["translation"].numpy())
    return results


def session_loader(path, requests):
    results = {}
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        meta_graph = tf.compat.v1.saved_model.loader.load(session, [tf.saved_model.SERVING], path)
        for name, texts in requests.items():
            signature = meta_graph.signature_def[name]
            feed, fetch = signature.inputs["text"].name, signature.outputs["translation"].name
            results[name] = []
            for start in range(0, len(texts), BATCH_SIZE):
                batch = texts[start : start + BATCH_SIZE]
                results[name] += _decode(session.run(fetch, {feed: batch}))
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
