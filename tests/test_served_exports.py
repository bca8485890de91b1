"""Exports trained by the CLI translate, once reloaded the ways users load them, exactly as the training process did.

Each export's `evaluation.json` keeps the training process's own strings
for a probe of inputs (`in_process_probe`, both signatures); here the same
inputs go through TensorFlow's session loader (`saved_model_cli run`, TF
Serving's path), `tf.saved_model.load` in a process that cannot import
this project, and `training.translate`.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_module

SIGNATURES = ("serving_default", "beam_search")
EXPORTS = ["cli_dates_export", "cli_tsv_export"]


def probe(export_dir):
    with open(os.path.join(export_dir, "1", "assets.extra", "evaluation.json"), encoding="utf-8") as file:
        return json.load(file)["in_process_probe"]


SAVED_MODEL_CLI_WITH_TEXT_OPS = """
import sys
import tensorflow_text  # SentencepieceOp & co.; the saved_model_cli binary cannot load custom ops
from tensorflow.python.tools import saved_model_cli
sys.argv[0] = "saved_model_cli"
saved_model_cli.main()
"""


@pytest.mark.slow
@pytest.mark.parametrize("export", EXPORTS)
@pytest.mark.parametrize("signature", SIGNATURES)
def test_saved_model_cli_run_gives_the_training_process_strings(export, signature, request, tmp_path):
    export_dir, _ = request.getfixturevalue(export)
    expected = probe(export_dir)
    inputs = str(tmp_path / "text.npy")
    np.save(inputs, np.array([t.encode("utf-8") for t in expected["texts"]], dtype=object))
    arguments = ["run", "--dir", os.path.join(export_dir, "1"), "--tag_set", "serve", "--signature_def", signature,
                 "--inputs", f"text={inputs}", "--outdir", str(tmp_path / "out")]
    if export == "cli_dates_export":  # core ops only: TensorFlow's own command, as installed
        command = [os.path.join(os.path.dirname(sys.executable), "saved_model_cli"), *arguments]
    else:
        command = [sys.executable, "-c", SAVED_MODEL_CLI_WITH_TEXT_OPS, *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    served = np.load(tmp_path / "out" / "translation.npy", allow_pickle=True)
    assert [t.decode("utf-8") for t in served] == expected[signature]


WITHOUT_THE_PROJECT = """
import sys
sys.modules["tf_transformer"] = None  # importing the project now fails: the export must not need it
sys.modules["training"] = None
import json, os, tensorflow as tf
try:
    import tensorflow_text  # subword exports' ops
except ImportError:
    pass
"""

LOAD_WITHOUT_THE_PROJECT = WITHOUT_THE_PROJECT + """
texts = json.loads(sys.stdin.read())
loaded = tf.saved_model.load(sys.argv[1])
print(json.dumps({
    name: [t.decode("utf-8") for t in loaded.signatures[name](text=tf.constant(texts))["translation"].numpy()]
    for name in ("serving_default", "beam_search")
}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("export", EXPORTS)
def test_reloaded_in_a_fresh_process_gives_the_training_process_strings(export, request):
    export_dir, _ = request.getfixturevalue(export)
    expected = probe(export_dir)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_THE_PROJECT, os.path.join(export_dir, "1")],
        input=json.dumps(expected["texts"]), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    for signature in SIGNATURES:
        assert served[signature] == expected[signature], signature


@pytest.mark.slow
@pytest.mark.parametrize("export", EXPORTS)
def test_translate_cli_gives_the_training_process_strings(export, request):
    export_dir, _ = request.getfixturevalue(export)
    expected = probe(export_dir)
    for flags, signature in (([], "serving_default"), (["--beam"], "beam_search")):
        result = run_module("training.translate", "--model", export_dir, *flags, *expected["texts"], timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout == "".join(t + "\n" for t in expected[signature]), signature


@pytest.mark.slow
@pytest.mark.parametrize("export", EXPORTS)
def test_printed_figures_are_the_reloaded_exports(export, request):
    export_dir, result = request.getfixturevalue(export)
    with open(os.path.join(export_dir, "1", "assets.extra", "evaluation.json"), encoding="utf-8") as file:
        evaluation = json.load(file)
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Held-out metrics"))
    assert "reloaded in a fresh process" in lines[start]
    assert os.path.join(export_dir, "1", "assets.extra", "evaluation.json") in lines[start]
    # The table's test row holds the figures of evaluation.json.
    metrics = evaluation["metrics"]
    row = next(line for line in lines[start:] if line.strip().startswith("test, greedy")).split()
    assert int(row[2].replace(",", "")) == metrics["examples"]
    if "bleu" in metrics:
        assert row[-2:] == [f"{metrics['bleu']:.1f}", f"{metrics['chrf']:.1f}"]
    else:
        assert row[-2] == f"{100 * metrics['exact_match']:.2f}%"
    # The probe holds the samples and the first test sources, checked equal to the training process's.
    assert evaluation["in_process_probe"]["texts"][: len(evaluation["samples"])] == list(evaluation["samples"])


REPLAY_WARMUP = WITHOUT_THE_PROJECT + """
from tensorflow_serving.apis import prediction_log_pb2
def compiled():  # TensorFlow's persistent XLA cache (TF_XLA_FLAGS) holds one file per program XLA compiled
    cache = os.environ["XLA_CACHE"]
    return len(os.listdir(cache)) if os.path.isdir(cache) else 0
loaded = tf.saved_model.load(sys.argv[1])
sizes = []
for record in tf.data.TFRecordDataset(os.path.join(sys.argv[1], "assets.extra", "tf_serving_warmup_requests")):
    request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
    inputs = {name: tf.constant(tf.make_ndarray(tensor)) for name, tensor in request.inputs.items()}
    outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
    texts = inputs["text"]
    out = outputs["translation"] if "translation" in outputs else outputs["translations"] if "translations" in outputs else outputs["score"]
    assert out.shape[0] == len(texts)
    sizes.append(len(texts))
after_warmup = compiled()
# Requests as clients send them, of sizes and lengths the records do not hold, up to 128 texts.
for name in ("serving_default", "beam_search"):
    for size in (1, 3, 5, 13, 33, 100, 128):
        texts = [" ".join(["Je t'aime."] * ((size + 3 * i) % 12)) for i in range(size)]
        loaded.signatures[name](text=tf.constant(texts))
        loaded.signatures[name](text=tf.constant(["x" * 10000] + texts[1:]))
print(json.dumps({"sizes": sizes, "compiled_after_warmup": after_warmup, "compiled_after_requests": compiled()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("export", EXPORTS)
def test_warmup_records_replay_and_leave_no_request_to_compile(export, request, tmp_path):
    export_dir, _ = request.getfixturevalue(export)
    path = os.path.join(export_dir, "1")
    cache = str(tmp_path / "xla")
    env = {**os.environ, "XLA_CACHE": cache,
           "TF_XLA_FLAGS": f"{os.environ.get('TF_XLA_FLAGS', '')} --tf_xla_persistent_cache_directory={cache}"}
    result = subprocess.run([sys.executable, "-c", REPLAY_WARMUP, path], capture_output=True, text=True,
                            timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    replayed = json.loads(result.stdout.strip().splitlines()[-1])
    assert 2 <= len(replayed["sizes"]) <= 1000 and len(set(replayed["sizes"])) >= 2
    with open(os.path.join(path, "assets.extra", "signatures.json"), encoding="utf-8") as file:
        xla = json.load(file)["serving_default"]["compiled_with_xla"]
    assert xla == (export == "cli_tsv_export")
    if xla:  # the records compiled every program those requests need
        assert replayed["compiled_after_warmup"] > 0
        assert replayed["compiled_after_requests"] == replayed["compiled_after_warmup"]
    else:  # core ops: nothing is compiled, at load or later
        assert replayed["compiled_after_warmup"] == replayed["compiled_after_requests"] == 0


HOSTILE = WITHOUT_THE_PROJECT + """
loaded = tf.saved_model.load(sys.argv[1])
hostile = [b"\\xff\\xfe25 juin 2009", b"25 juin\\x00 2009", b"x" * 10000, "\U0001F600 25 juin 2009".encode(),
           "\u0662\u0665 \u064a\u0648\u0646\u064a\u0648 \u05e9\u05dc\u05d5\u05dd".encode(), b"   \\t ", b""]
result = {}
for name in ("serving_default", "beam_search"):
    signature = loaded.signatures[name]
    alone = signature(text=tf.constant([b"25 juin 2009"]))["translation"].numpy()[0]
    answers = []
    for text in hostile:  # beside an ordinary input, which must not change
        out = signature(text=tf.constant([text, b"25 juin 2009"]))["translation"].numpy()
        assert out.shape == (2,) and out[1] == alone, (text[:20], out)
        answers.append(out[0].decode("utf-8"))
    many = signature(text=tf.constant([b"25 juin 2009"] * 2000))["translation"].numpy()
    assert many.shape == (2000,) and set(many) == {alone}
    result[name] = answers
print(json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.parametrize("export", EXPORTS)
def test_hostile_inputs_get_one_string_each_and_fail_no_batch(export, request):
    """Invalid UTF-8, NUL, 10,000 characters, emoji, right-to-left scripts, blanks, a batch of 2,000."""
    export_dir, _ = request.getfixturevalue(export)
    result = subprocess.run([sys.executable, "-c", HOSTILE, os.path.join(export_dir, "1")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    answers = json.loads(result.stdout.strip().splitlines()[-1])
    for signature in SIGNATURES:
        assert len(answers[signature]) == 7
        assert answers[signature][-2:] == ["", ""]  # blank and empty in, empty out


@pytest.mark.slow
def test_translate_cli_n_best_sample_and_score(cli_dates_export, tmp_path):
    """`--n-best N --scores`, `--sample`, `--score`: the signatures' answers, in the CLI's line formats."""
    export_dir, _ = cli_dates_export
    expected = probe(export_dir)
    texts = expected["texts"][:6]

    def run(*flags, stdin=None):
        result = run_module("training.translate", "--model", export_dir, *flags, *([] if stdin else texts),
                            input=stdin, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout.splitlines()

    lines = run("--n-best", "3", "--scores")
    assert len(lines) == 3 * len(texts)
    for i, text in enumerate(texts):
        scored = [line.split("\t", 1) for line in lines[3 * i: 3 * i + 3]]
        assert scored[0][1] == expected["beam_search"][i]  # the first of the n best is beam search's answer
        assert [float(s) for s, _ in scored] == sorted((float(s) for s, _ in scored), reverse=True)
    # top-k 1 sampling is greedy, its score the decoding loop's sum of log-probabilities; a seed repeats a sample.
    sampled = [line.split("\t", 1) for line in run("--sample", "--top-k", "1", "--seed", "3", "--scores")]
    assert [t for _, t in sampled] == expected["serving_default"][:6]
    assert run("--sample", "--temperature", "2", "--seed", "5") == run("--sample", "--temperature", "2", "--seed", "5")
    # --score: forced decoding of those answers gives the same log-probabilities (where the answer is the
    # model's own: the dates export answers "" for a calendar-invalid output, a string the model did not write).
    pairs = "".join(f"{text}\t{translation}\n" for text, (_, translation) in zip(texts, sampled))
    scored = [line.split("\t") for line in run("--score", stdin=pairs)]
    assert len(scored) == len(texts)
    for (score, translation), (forced, tokens) in zip(sampled, scored):
        assert int(tokens) == len(translation) + 1  # one token a character, and the end token
        if translation:
            assert abs(float(score) - float(forced)) < 2e-3, (translation, score, forced)
    bad = run_module("training.translate", "--model", export_dir, "--sample", "--top-p", "0", "a", timeout=600)
    assert bad.returncode != 0 and "--top-p" in bad.stderr
