"""The SavedModel for TF Serving: text in, text out, without this package."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_transformer import TransformerConfig, build_transformer, export, losses, schedules
from tf_transformer.tokenizers import CharacterTokenizer, SentencePieceTokenizer

TEXTS = ["25 septembre 2009", "Tuesday, June 25, 2009", "2009-06-25", "3 de abril de 1975"]


def tiny_trained_model(source_tokenizer, target_tokenizer):
    # No reseeding here: in eager mode setting a seed clears TensorFlow's kernel
    # cache, and with it the SentencePiece model resource of a live tokenizer.
    config = TransformerConfig.preset(
        "tiny", num_layers=1, source_vocab_size=source_tokenizer.vocab_size,
        target_vocab_size=target_tokenizer.vocab_size, max_length=32,
    )
    model = build_transformer(config)
    model.compile(schedules.paper_optimizer(config.d_model, 10), losses.MaskedSparseCategoricalCrossentropy())
    source = source_tokenizer.tokenize(tf.constant(TEXTS)).to_tensor()
    target = np.pad(np.array([[1, 5, 6, 7, 2]] * len(TEXTS), "int32"), ((0, 0), (0, 1)))
    model.fit({"encoder_tokens": source, "decoder_tokens": target[:, :-1]}, target[:, 1:], epochs=2, verbose=0)
    return model


@pytest.fixture(scope="module")
def character_export(tmp_path_factory):
    keras.utils.set_random_seed(0)
    source_tokenizer = CharacterTokenizer.train(TEXTS)
    target_tokenizer = CharacterTokenizer.train(["0123456789-"])
    model = tiny_trained_model(source_tokenizer, target_tokenizer)
    export_dir = str(tmp_path_factory.mktemp("saved_models") / "dates")
    path = export.export(model, source_tokenizer, target_tokenizer, export_dir, extra_files={"note.json": {"a": 1}})
    return export_dir, path, model


LOAD_WITHOUT_PACKAGE = """
import sys
sys.modules["tf_transformer"] = None  # importing the package now fails: the export must not need it
import json, tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
beam = tf.saved_model.load(sys.argv[1]).signatures["beam_search"]
batches = [[""], ["25 septembre 2009"], ["x" * 5000], ["", "25/06/2009", "x" * 5000, "   ", "Tuesday, June 25, 2009"]]
results = []
for batch in batches:
    for signature in (serve, beam):
        out = signature(text=tf.constant(batch))["translation"]
        assert out.dtype == tf.string and out.shape == (len(batch),), out
        results.append([t.decode() for t in out.numpy()])
print(json.dumps(results))
"""


def test_loads_and_serves_without_the_package(character_export):
    export_dir, path, _ = character_export
    assert path == os.path.join(export_dir, "1")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_PACKAGE, path], capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    assert results[0] == [""] and results[1] == [""]  # empty in, empty out
    mixed = results[6]
    assert mixed[0] == "" and mixed[3] == "" and len(mixed) == 5


def test_signatures_listed_by_saved_model_cli(character_export):
    _, path, _ = character_export
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("serving_default", "beam_search", "text", "translation"):
        assert name in result.stdout


def test_character_export_needs_only_core_ops(character_export):
    _, path, _ = character_export
    assert export.non_core_ops(path) == {"custom": [], "xla": []}


def test_assets_and_versions(character_export):
    export_dir, path, model = character_export
    extra = os.path.join(path, "assets.extra")
    assert sorted(os.listdir(extra)) == sorted(
        ["model.keras", "note.json", "signatures.json", "source_tokenizer.json", "target_tokenizer.json",
         "tokenizers.json", "tf_serving_warmup_requests"]
    )
    reloaded = keras.saving.load_model(os.path.join(extra, "model.keras"))
    tokens = {"encoder_tokens": np.array([[5, 6, 7]]), "decoder_tokens": np.array([[1, 5]])}
    np.testing.assert_array_equal(reloaded(tokens), model(tokens))
    assert export.next_version(export_dir) == 2
    # Nothing half-written is left beside the versions.
    assert [name for name in os.listdir(export_dir) if not name.isdigit()] == []


def test_export_matches_in_process_decoding(character_export):
    _, path, model = character_export
    from tf_transformer import decoding
    from tf_transformer.tokenizers import END, START

    source_tokenizer = CharacterTokenizer.train(TEXTS)
    target_tokenizer = CharacterTokenizer.train(["0123456789-"])
    ids = decoding.greedy_search(model, source_tokenizer.tokenize(tf.constant(TEXTS)).to_tensor(), START, END, 32)
    expected = target_tokenizer.detokenize(ids).numpy()
    served = tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(TEXTS))["translation"].numpy()
    np.testing.assert_array_equal(served, expected)


def test_subword_export_lists_its_custom_op(tmp_path):
    corpus = [line.split("\t")[0] for line in open("../shared/data/tatoeba-eng-fra.tsv", encoding="utf-8")][:2000]
    tokenizer = SentencePieceTokenizer.train(corpus, vocab_size=400)
    model = tiny_trained_model(tokenizer, tokenizer)
    path = export.export(model, tokenizer, tokenizer, str(tmp_path / "text"))
    script = "import sys, json; from tf_transformer.export import non_core_ops; print(json.dumps(non_core_ops(sys.argv[1])))"
    result = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, timeout=300)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert any("Sentencepiece" in op for op in found["custom"]), found
    assert found["xla"] == []


@pytest.mark.parametrize("shared", [False, True])
def test_subword_export_translates_as_in_process_once_reloaded(shared, tmp_path):
    """Two SentencePiece models in one export stay two (they once reloaded as one), under both loaders."""
    from training import evaluate

    pairs = [line.rstrip("\n").split("\t") for line in open("../shared/data/tatoeba-eng-fra.tsv", encoding="utf-8")]
    english, french = [p[0] for p in pairs[:3000]], [p[1] for p in pairs[:3000]]
    if shared:
        source_tokenizer = target_tokenizer = SentencePieceTokenizer.train(french + english, vocab_size=700)
    else:
        source_tokenizer = SentencePieceTokenizer.train(french, vocab_size=500)
        target_tokenizer = SentencePieceTokenizer.train(english, vocab_size=700)
    model = tiny_trained_model(source_tokenizer, target_tokenizer)
    translator = export.Translator(model, source_tokenizer, target_tokenizer, max_output_length=12)
    texts = ["Va !", "Jane visite l'Afrique en septembre.", "", "Où est la gare ?"]
    expected = {
        export.SERVING_KEY: [t.decode() for t in translator.translate(tf.constant(texts))["translation"].numpy()],
        export.BEAM_KEY: [t.decode() for t in translator.translate_beam(tf.constant(texts))["translation"].numpy()],
    }
    path = export.export(model, source_tokenizer, target_tokenizer, str(tmp_path / "text"), translator=translator)
    request = {name: texts for name in expected}
    result = evaluate.translate_reloaded(path, {"saved_model_load": request, "session_loader": request})
    assert result == {"saved_model_load": expected, "session_loader": expected}
    if not shared:  # ids past the source vocabulary: the target model must be the one detokenizing
        assert target_tokenizer.vocab_size > source_tokenizer.vocab_size


def test_character_export_runs_under_the_session_loader(character_export):
    """TF Serving's loader restores the variables the signatures read (it once could not find them)."""
    from training import evaluate

    _, path, model = character_export
    translator = export.Translator(model, CharacterTokenizer.train(TEXTS), CharacterTokenizer.train(["0123456789-"]))
    expected = [t.decode() for t in translator.translate(tf.constant(TEXTS))["translation"].numpy()]
    result = evaluate.translate_reloaded(path, {"session_loader": {export.SERVING_KEY: TEXTS}})
    assert result["session_loader"][export.SERVING_KEY] == expected


def test_xla_export_translates_as_the_core_export_under_both_loaders(character_export, tmp_path):
    """`jit_compile=True` compiles the decoding loops: same strings, under `tf.saved_model.load` and the session
    loader, in a process without the package, for sources of several lengths (padded to a multiple of 8)."""
    from training import evaluate

    _, core_path, model = character_export
    xla_path = export.export(model, CharacterTokenizer.train(TEXTS), CharacterTokenizer.train(["0123456789-"]),
                             str(tmp_path / "dates_xla"), jit_compile=True)
    with open(os.path.join(xla_path, "assets.extra", "signatures.json"), encoding="utf-8") as file:
        documented = json.load(file)
    assert documented["serving_default"]["compiled_with_xla"] and documented["beam_search"]["beam_size"] == 4
    assert export.non_core_ops(xla_path)["custom"] == []  # its XLA ops run inside the compiled function
    texts = TEXTS + ["", "3", "x" * 40]
    request = {loader: {export.SERVING_KEY: texts, export.BEAM_KEY: texts} for loader in ("saved_model_load", "session_loader")}
    core, compiled = evaluate.translate_reloaded(core_path, request), evaluate.translate_reloaded(xla_path, request)
    assert compiled == core
    assert len(core["saved_model_load"][export.SERVING_KEY]) == len(texts) and core["saved_model_load"][export.SERVING_KEY][4] == ""
    # One sentence is decoded as a batch of two under XLA (faster on a CPU); the copy never shows.
    for name in (export.SERVING_KEY, export.BEAM_KEY):
        signature = tf.saved_model.load(xla_path).signatures[name]
        for i, text in enumerate(texts[:3]):
            assert [t.decode() for t in signature(text=tf.constant([text]))["translation"].numpy()] == [core["saved_model_load"][name][i]]
        assert signature(text=tf.constant([], tf.string))["translation"].shape == (0,)


REPLAY_WARMUP_WITHOUT_THE_PACKAGE = """
import sys
sys.modules["tf_transformer"] = None
import json, os, tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2
path = sys.argv[1]
loaded = tf.saved_model.load(path)
replayed = []
for record in tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests")):
    log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
    request = log.predict_log.request
    inputs = {name: tf.constant(tf.make_ndarray(tensor)) for name, tensor in request.inputs.items()}
    outputs = loaded.signatures[request.model_spec.signature_name](**inputs)
    first = outputs.get("translation", outputs.get("translations", outputs.get("score")))
    replayed.append([request.model_spec.signature_name, int(inputs["text"].shape[0]), int(first.shape[0])])
print(json.dumps(replayed))
"""


def test_warmup_records_parse_and_replay_without_the_package(character_export):
    _, path, _ = character_export
    result = subprocess.run([sys.executable, "-c", REPLAY_WARMUP_WITHOUT_THE_PACKAGE, path],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    replayed = json.loads(result.stdout.strip().splitlines()[-1])
    assert 2 <= len(replayed) <= 1000
    assert {name for name, _, _ in replayed} == {"serving_default", "beam_search", "n_best", "sample", "score"}
    assert len({size for _, size, _ in replayed}) >= 2  # requests of different sizes
    assert all(size == served for _, size, served in replayed)  # one translation per text


CONCURRENT_CALLERS = """
import sys
sys.modules["tf_transformer"] = None
import json, threading, tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
batches = [[f"{d} septembre 20{d:02d}", "Tuesday, June 25, 2009", "x" * (d * 3)] for d in range(1, 17)]
expected = {name: [loaded.signatures[name](text=tf.constant(b))["translation"].numpy().tolist() for b in batches]
            for name in ("serving_default", "beam_search")}
got = {name: [None] * len(batches) for name in expected}
def call(name, i):
    got[name][i] = loaded.signatures[name](text=tf.constant(batches[i]))["translation"].numpy().tolist()
threads = [threading.Thread(target=call, args=(name, i)) for name in expected for i in range(len(batches))]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({name: got[name] == expected[name] for name in expected}))
"""


def test_sixteen_concurrent_callers_get_the_sequential_results(character_export):
    _, path, _ = character_export
    result = subprocess.run([sys.executable, "-c", CONCURRENT_CALLERS, path], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"serving_default": True, "beam_search": True}


def test_xla_translator_gives_every_batch_size_the_core_ops_strings(character_export):
    # Under XLA the rows are repeated up to a power of two and the sources padded to a multiple of 8;
    # neither may change a translation, nor the number of them (0, 1, 3, 5 rows).
    from tf_transformer.tokenizers import CharacterTokenizer

    _, _, model = character_export
    source_tokenizer = CharacterTokenizer.train(TEXTS)
    target_tokenizer = CharacterTokenizer.train(["0123456789-"])
    core = export.Translator(model, source_tokenizer, target_tokenizer, max_output_length=12)
    xla = export.Translator(model, source_tokenizer, target_tokenizer, max_output_length=12, jit_compile=True)
    texts = TEXTS + ["x" * 100, ""]
    for rows in (0, 1, 3, 5):
        batch = tf.constant(texts[:rows], tf.string)
        for core_call, xla_call in ((core.translate, xla.translate), (core.translate_beam, xla.translate_beam)):
            want, got = core_call(batch)["translation"].numpy(), xla_call(batch)["translation"].numpy()
            assert got.shape == (rows,) and got.tolist() == want.tolist()


def test_decoding_option_signatures_agree_in_process_and_under_both_loaders(character_export):
    """n_best, sample and score: what the library computes, the same reloaded by `tf.saved_model.load` and by
    the session loader in a process without the package; options out of range fail the request by name."""
    from training import evaluate
    from tf_transformer import decoding
    from tf_transformer.special_tokens import END, START

    _, path, model = character_export
    source_tokenizer, target_tokenizer = CharacterTokenizer.train(TEXTS), CharacterTokenizer.train(["0123456789-"])
    translator = export.Translator(model, source_tokenizer, target_tokenizer)  # as the fixture exported it
    texts = TEXTS + ["", "12 mai 1999"]
    n = len(texts)
    sample = {"text": texts + texts, "temperature": [1.5] * n + [1.0] * n, "top_k": [0] * n + [1] * n,
              "top_p": [0.9] * n + [1.0] * n, "seed": list(range(n)) + [0] * n}
    score = {"text": texts, "translation": ["2009-09-25", "2009-06-25", "", "1975-04-03", "0", "1999-05-12"]}
    request = {export.SERVING_KEY: texts, export.BEAM_KEY: texts, export.N_BEST_KEY: {"text": texts},
               export.SAMPLE_KEY: sample, export.SCORE_KEY: score}
    result = evaluate.translate_reloaded(path, {"saved_model_load": request, "session_loader": request})
    reloaded = result["saved_model_load"]
    for loader in ("saved_model_load", "session_loader"):
        got = result[loader]
        assert got[export.N_BEST_KEY]["translations"] == reloaded[export.N_BEST_KEY]["translations"]
        assert got[export.SAMPLE_KEY]["translation"] == reloaded[export.SAMPLE_KEY]["translation"]
        for name, key in ((export.N_BEST_KEY, "scores"), (export.SAMPLE_KEY, "score"), (export.SCORE_KEY, "score")):
            np.testing.assert_allclose(got[name][key], reloaded[name][key], atol=1e-5)

    # n_best: the beam's hypotheses, best first; the first is beam_search's answer.
    n_best = reloaded[export.N_BEST_KEY]
    assert [len(row) for row in n_best["translations"]] == [4] * n
    assert [row[0] for row in n_best["translations"]] == reloaded[export.BEAM_KEY]
    assert all(np.all(np.diff(row) <= 1e-6) for row in n_best["scores"])
    assert n_best["translations"][4] == [""] * 4 and n_best["scores"][4] == [0.0] * 4  # a blank text
    in_process = translator.translate_n_best(tf.constant(texts))
    np.testing.assert_allclose(in_process["scores"].numpy(), n_best["scores"], atol=1e-5)

    # sample: top_k=1 is greedy; a seed gives the same sample in process, reloaded, and alone in its batch.
    samples = reloaded[export.SAMPLE_KEY]["translation"]
    assert samples[n:] == reloaded[export.SERVING_KEY]
    in_process = translator.translate_sample(*(tf.constant(v) for v in sample.values()))
    assert [t.decode() for t in in_process["translation"].numpy()] == samples
    alone = translator.translate_sample(tf.constant(texts[1:2]), tf.constant([1.5]), tf.constant([0]),
                                        tf.constant([0.9]), tf.constant([1]))
    assert alone["translation"].numpy()[0].decode() == samples[1]

    # score: the teacher-forced log-probability of the given translation's ids, end included.
    target = target_tokenizer.tokenize(tf.constant(score["translation"]))
    ids = tf.concat([tf.fill([n, 1], START), target, tf.fill([n, 1], END)], axis=1).to_tensor()
    source = source_tokenizer.tokenize(tf.constant(texts)).to_tensor()
    _, expected = decoding.score(model, source, ids)
    np.testing.assert_allclose(reloaded[export.SCORE_KEY]["score"], expected.numpy(), atol=1e-4)
    assert reloaded[export.SCORE_KEY]["tokens"] == [int(t) + 1 for t in target.row_lengths().numpy()]

    loaded = tf.saved_model.load(path).signatures[export.SAMPLE_KEY]
    good = {"text": tf.constant(["25 juin 2009"]), "temperature": tf.constant([1.0]), "top_k": tf.constant([0]),
            "top_p": tf.constant([1.0]), "seed": tf.constant([0])}
    for name, value, match in (("temperature", [-1.0], "temperature"), ("top_p", [0.0], "top_p"),
                               ("top_p", [1.5], "top_p"), ("top_k", [-2], "top_k"), ("seed", [1, 2], "seed")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=match):
            loaded(**{**good, name: tf.constant(value)})
    with pytest.raises(tf.errors.InvalidArgumentError, match="translation"):
        tf.saved_model.load(path).signatures[export.SCORE_KEY](text=tf.constant(["a", "b"]), translation=tf.constant(["1"]))


def test_n_best_signature_equals_an_exhaustive_search_once_reloaded(tmp_path):
    """A 6-id target vocabulary, outputs of at most 3 ids and a beam of 100: the exported beam keeps every
    output, so the reloaded `n_best` (both loaders) must list the exhaustive search's best, in order, with its scores."""
    from test_decoding_options import all_outputs, teacher_forced
    from training import evaluate

    keras.utils.set_random_seed(7)
    source_tokenizer, target_tokenizer = CharacterTokenizer.train(TEXTS), CharacterTokenizer.train(["ab"])
    assert target_tokenizer.vocab_size == 6
    model = build_transformer(TransformerConfig.preset(
        "tiny", source_vocab_size=source_tokenizer.vocab_size, target_vocab_size=6, max_length=32))
    translator = export.Translator(model, source_tokenizer, target_tokenizer, max_output_length=4, beam_size=100)
    path = export.export(model, source_tokenizer, target_tokenizer, str(tmp_path / "tiny"), translator=translator)
    texts = TEXTS[:3]
    request = {export.N_BEST_KEY: {"text": texts}}
    result = evaluate.translate_reloaded(path, {"saved_model_load": request, "session_loader": request})
    candidates = all_outputs(6, 4)  # every output: 85
    source = source_tokenizer.tokenize(tf.constant(texts)).to_tensor().numpy()
    lengths = (candidates[:, 1:] != 0).sum(1)
    strings = [t.decode() for t in target_tokenizer.detokenize(candidates).numpy()]
    for loader in ("saved_model_load", "session_loader"):
        n_best = result[loader][export.N_BEST_KEY]
        for row in range(len(texts)):
            sums, _ = teacher_forced(model, np.repeat(source[row: row + 1], len(candidates), 0), candidates)
            penalised = sums / ((5 + lengths) / 6) ** 0.6
            order = np.argsort(-penalised, kind="stable")[:10]
            assert np.all(np.diff(penalised[order]) < -1e-5)  # no near-ties among the 10 best
            assert n_best["translations"][row][:10] == [strings[i] for i in order], (loader, row)
            np.testing.assert_allclose(n_best["scores"][row][:10], penalised[order], atol=1e-4)
