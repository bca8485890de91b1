"""The exports in the runtime stock TF Serving ships: TensorFlow 2.20 and tensorflow-text 2.20 (TF Serving 2.20.0's pins).

A second virtual environment beside the checkout (`.venv-tf2.20/`, made on
first use and reused, like `.venv/`) holds those two packages and nothing of
this project; `training/reloaded_export.py` runs there, loading each CLI
export with `tf.saved_model.load` and with the session loader (TF Serving's
path), both signatures, and must give the training process's strings.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

STOCK = os.path.join(ROOT, ".venv-tf2.20")
PYTHON = os.path.join(STOCK, "bin", "python")
PACKAGES = ["tensorflow==2.20.*", "tensorflow-text==2.20.*"]
# The default exports (core decoding, float32): dates (characters) and SentencePiece. The XLA-compiled,
# bfloat16-trained `cli_tsv_export` is left out: XLA 2.20 and 2.21 round a tiny untrained model's
# near-tied beam scores differently (1 beam output in 37 differed), which says nothing of loading.
EXPORTS = ["cli_dates_export", "cli_tsv_core_export"]


def _versions():
    result = subprocess.run([PYTHON, "-c", "import tensorflow as tf, tensorflow_text as text; "
                             "print(tf.__version__, text.__version__)"], capture_output=True, text=True, timeout=300)
    return result.stdout.split() if result.returncode == 0 else None


@pytest.fixture(scope="session")
def stock_runtime():
    """The path of the TensorFlow 2.20 environment's Python, made once (a few minutes: the two wheels)."""
    if not (os.path.exists(PYTHON) and _versions()):
        subprocess.run([sys.executable, "-m", "venv", "--clear", STOCK], check=True, timeout=300)
        install = subprocess.run([PYTHON, "-m", "pip", "install", "-q", *PACKAGES], capture_output=True, text=True,
                                 timeout=1800)
        assert install.returncode == 0, install.stderr[-3000:]
    versions = _versions()
    assert versions and all(v.startswith("2.20.") for v in versions), versions
    return PYTHON


LOADERS = ("saved_model_load", "session_loader")


def probe_of(export_dir):
    """The export's version path and the training process's own strings for a probe of inputs."""
    version = os.path.join(export_dir, "1")
    with open(os.path.join(version, "assets.extra", "evaluation.json"), encoding="utf-8") as file:
        return version, json.load(file)["in_process_probe"]


def reloaded_in_stock_runtime(python, version, signatures, tmp_path):
    """`training/reloaded_export.py` in the stock runtime, both loaders: `{loader: {signature: answers}}`."""
    request_path, result_path = tmp_path / "request.json", tmp_path / "result.json"
    request_path.write_text(json.dumps({loader: signatures for loader in LOADERS}), encoding="utf-8")
    result = subprocess.run([python, os.path.join(ROOT, "training", "reloaded_export.py"), version,
                             str(request_path), str(result_path)], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result_path.read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize("export", EXPORTS)
def test_exports_load_and_translate_identically_under_tensorflow_2_20(export, stock_runtime, request, tmp_path):
    version, probe = probe_of(request.getfixturevalue(export)[0])
    signatures = [name for name in probe if name != "texts"]
    outputs = reloaded_in_stock_runtime(stock_runtime, version, {name: probe["texts"] for name in signatures}, tmp_path)
    for loader in LOADERS:
        for name in signatures:
            assert outputs[loader][name] == probe[name], (loader, name)


@pytest.mark.slow
@pytest.mark.parametrize("export", EXPORTS)
def test_decoding_option_signatures_answer_the_same_under_tensorflow_2_20(export, stock_runtime, request, tmp_path):
    """n_best, sample and score: TensorFlow 2.20 (both loaders) answers what this project's TensorFlow does."""
    import numpy as np

    from training import evaluate

    version, probe = probe_of(request.getfixturevalue(export)[0])
    texts = probe["texts"][:8]
    rows = len(texts)
    signatures = {
        "n_best": {"text": texts},
        "sample": {"text": texts, "temperature": [1.2] * rows, "top_k": [0] * rows, "top_p": [0.9] * rows,
                   "seed": list(range(rows))},
        "score": {"text": texts, "translation": texts[::-1]},
    }
    expected = evaluate.translate_reloaded(version, {"saved_model_load": signatures})["saved_model_load"]
    outputs = reloaded_in_stock_runtime(stock_runtime, version, signatures, tmp_path)
    for loader in LOADERS:
        got = outputs[loader]
        assert got["n_best"]["translations"] == expected["n_best"]["translations"], loader
        assert got["sample"]["translation"] == expected["sample"]["translation"], loader
        assert got["score"]["tokens"] == expected["score"]["tokens"], loader
        for name, key in (("n_best", "scores"), ("sample", "score"), ("score", "score")):
            np.testing.assert_allclose(got[name][key], expected[name][key], atol=1e-4, err_msg=f"{loader} {name}")


@pytest.mark.slow
def test_list_ops_knows_the_stock_runtime_and_passes_both_exports(stock_runtime, cli_dates_export, cli_tsv_core_export):
    """`training.list_ops`' op file is what TensorFlow 2.20 + tensorflow-text 2.20 register, and both exports'
    ops (SentencePiece included) fall inside it."""
    from conftest import run_module
    from training import list_ops

    found = list_ops.registered_ops(stock_runtime)
    assert list_ops.read_stock_ops() == set(found["ops"]), "regenerate it: python -m training.list_ops --write-stock-ops"
    for export_dir, sentencepiece in ((cli_dates_export[0], False), (cli_tsv_core_export[0], True)):
        result = run_module("training.list_ops", export_dir, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr[-2000:]
        report = json.loads(result.stdout)
        assert report["runs_on_stock_tf_serving_2.20"] and report["outside_stock_tf_serving_2.20"] == []
        assert any("Sentencepiece" in op for op in report["custom"]) == sentencepiece
