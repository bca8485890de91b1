"""The benchmark harness measures what it claims: same-size peers, a correct KerasHub decoder."""

import json

import keras
import numpy as np
import pytest

from benchmarks import peers, run
from tf_transformer.layers import MultiHeadAttention

TINY = dict(layers=1, d_model=32, heads=2, dff=64, vocab=50, length=8, batch=4, dropout=0.1, positions=13)


def test_peers_have_the_same_size_and_the_fused_peer_only_drops_attention_dropout():
    models = {name: build(TINY) for name, build in peers.VARIANTS.items()}
    counts = peers.check_same_size(models)
    assert len(set(counts.values())) == 1
    fused = [layer for layer in models["keras_hub_fused"].layers if hasattr(layer, "_self_attention_layer")]
    assert fused and all(layer._self_attention_layer._dropout == 0.0 for layer in fused)
    assert all(layer.dropout == 0.1 for layer in fused)  # residual dropout kept
    attention = {
        name: [layer.flash_attention for layer in models[name]._flatten_layers() if isinstance(layer, MultiHeadAttention)]
        for name in ("ours", "ours_xla_attention")
    }
    assert len(attention["ours"]) == 3 and set(attention["ours"]) == {None}  # encoder, decoder self and cross
    assert len(attention["ours_xla_attention"]) == 3 and set(attention["ours_xla_attention"]) == {False}
    with pytest.raises(AssertionError, match="differ in size"):
        peers.check_same_size({"a": models["ours"], "b": peers.build_ours(dict(TINY, dff=65))})


def test_keras_hub_cached_greedy_equals_recomputing_the_prefix():
    size = dict(TINY, dropout=0.0)
    model = peers.build_keras_hub(size)
    x, _ = run.synthetic_batch(size, seed=3)
    source, new_tokens = x["encoder_tokens"], 6
    cached = keras.ops.convert_to_numpy(peers.keras_hub_greedy(model, source, 1, new_tokens))
    tokens = np.ones((len(source), 1), "int32")
    for _ in range(new_tokens):
        logits = model({"encoder_tokens": source, "decoder_tokens": tokens}, training=False)
        next_token = np.argmax(keras.ops.convert_to_numpy(logits)[:, -1], axis=-1).astype("int32")
        tokens = np.concatenate([tokens, next_token[:, None]], axis=1)
    np.testing.assert_array_equal(cached, tokens)


def test_run_writes_every_section(tmp_path):
    output = tmp_path / "result.json"
    arguments = ["--layers", "1", "--d-model", "32", "--heads", "2", "--dff", "64", "--vocab", "50",
                 "--length", "8", "--batch", "4", "--rounds", "1", "--steps", "3", "--new-tokens", "4",
                 "--xla", "off", "--skip", "memory", "--models", "ours", "keras_hub", "--output", str(output)]
    assert run.main(arguments) == 0
    report = json.loads(output.read_text())
    training, decoding = report["XLA off"]["training"], report["XLA off"]["decoding"]
    assert set(training) == {"ours", "keras_hub"} and report["XLA off"]["training_reference"] == "keras_hub"
    assert training["keras_hub"]["ratio"] == 1.0 and training["ours"]["rounds"][0] > 0
    assert {"ours (cache)", "ours (no cache)", "keras_hub (cache)"} == set(decoding)
    assert report["matmul_flops_per_second"] > 1e8


def test_peak_memory_runs_each_model_in_its_own_process_with_the_flash_switch():
    # The script each child runs is generated; this runs it (flash attention
    # off, as `--no-flash-attention` passes it on) and reads a real peak back:
    # at least the weights and Adam's two slots, far below the resident set.
    memory = run.peak_memory(["ours"], TINY, "float32", jit=False, flash_attention=False)
    weights = peers.build_ours(TINY).count_params() * 4
    assert isinstance(memory["ours"], int) and 3 * weights < memory["ours"] < 100 * 2**20


def test_training_peak_bytes_counts_what_a_bigger_model_holds():
    # The TensorFlow allocator's count, not the resident set (which grows
    # with tracing): a model with a 4x wider vocabulary needs more.
    small, big = (run.peak_memory(["ours"], dict(TINY, vocab=vocab), "float32", jit=False)["ours"]
                  for vocab in (500, 2000))
    growth = (peers.build_ours(dict(TINY, vocab=2000)).count_params()
              - peers.build_ours(dict(TINY, vocab=500)).count_params()) * 4
    assert big - small > 3 * growth  # weights, gradients and two Adam slots


def test_profile_variants_rejects_bad_arguments_before_compiling():
    from benchmarks import profile_variants

    with pytest.raises(SystemExit, match="Unknown size key 'layer'"):
        profile_variants.main(["ours:layers=1", "ours:layer=1"])
    with pytest.raises(SystemExit, match="Unknown model 'theirs'"):
        profile_variants.main(["theirs"])
    name, size = profile_variants.parse_variant("keras_hub_fused:vocab=8,dropout=0", {"vocab": 8000, "dropout": 0.1})
    assert name == "keras_hub_fused" and size == {"vocab": 8, "dropout": 0.0}
    with pytest.raises(SystemExit):  # argparse's error: --trace needs the JAX backend
        profile_variants.main(["ours", "--trace", "/tmp/unused"])


def test_profile_variants_times_tiny_variants_with_and_without_xla(tmp_path):
    from benchmarks import profile_variants

    tiny = "layers=1,d_model=32,heads=2,dff=64,length=8,batch=4"
    for xla in ("off", "on"):
        output = tmp_path / f"{xla}.json"
        profile_variants.main([f"ours:{tiny},vocab=50", f"ours:{tiny},vocab=8", "--xla", xla,
                               "--steps", "2", "--repeats", "1", "--output", str(output)])
        results = json.loads(output.read_text())
        assert len(results) == 2
        for result in results.values():
            assert result["step_s"] > 0
            assert result["tokens_per_s"] == pytest.approx(4 * 8 / result["step_s"])


@pytest.mark.slow
def test_serving_benchmark_peer_decodes_the_exports_weights_to_the_same_strings(tmp_path):
    # float32: under bfloat16 a cached and a recomputed step may round a near-tie differently.
    from conftest import run_module
    from tf_transformer import Transformer, TransformerConfig
    from tf_transformer.export import export
    from tf_transformer.tokenizers import CharacterTokenizer

    texts = ["25 septembre 2009", "Tuesday, June 25, 2009", "Je t'aime.", "Où est la gare ?"]
    source, target = CharacterTokenizer.train(texts), CharacterTokenizer.train(["2009-06-25", "I love you."])
    model = Transformer(TransformerConfig.preset("tiny", source_vocab_size=source.vocab_size,
                                                 target_vocab_size=target.vocab_size, max_length=24))
    export(model, source, target, str(tmp_path / "toy"))
    output = tmp_path / "serving.json"
    result = run_module("benchmarks.serving", "--dates", "", "--text", str(tmp_path / "toy"), "--requests", "4",
                        "--concurrent-requests", "2", "--seconds", "0.05", "--batch-sizes", "1,8",
                        "--warmup-largest-batch", "2", "--output", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(output.read_text())["exports"]["text"]
    # The peers rerun the whole model each step, and the XLA export compiles the same loop: greedy on the
    # same weights is the same argmax (a tiny model's logits are far apart).
    assert measured["ours_empty"] == 0
    assert measured["agreement_with_ours_greedy"] == {"ours_xla_greedy": 1.0, "tutorial_greedy": 1.0,
                                                      "tutorial_batched_greedy": 1.0}
    assert set(measured["throughput"]) == {"ours_greedy", "ours_beam", "ours_xla_greedy", "ours_xla_beam",
                                           "tutorial_greedy", "tutorial_batched_greedy"}
    assert all(set(by_size) == {"1", "8"} for by_size in measured["throughput"].values())
    assert all(m["first_call_s"] > 0 for by_size in measured["throughput"].values() for m in by_size.values())
    assert {c["callers"] for c in measured["concurrent"].values()} == {16}
    assert set(measured["ratios"]) == {"ours_greedy", "ours_xla_greedy"}
    for against in measured["ratios"].values():
        assert set(against) == {"tutorial_greedy", "tutorial_batched_greedy"}
        assert all(set(r) == {"batch_1", "batch_8", "p50_latency"} for r in against.values())
    # Loading replays the warm-up records in a process without the package: the core-ops export compiles
    # nothing; the XLA one has a record per translation signature and source width (8, 16, 24) at batch 2,
    # each a program, and three batches for each of the three option signatures, which run without XLA.
    warmup = measured["warmup"]
    assert warmup["ours"]["xla_programs"] == 0 and warmup["ours"]["records"] >= 2
    assert warmup["ours_xla"]["records"] == 2 * 3 + 3 * 3
    assert warmup["ours_xla"]["xla_programs"] == 2 * 3
    assert warmup["ours_xla"]["xla_programs_after_reload"] == 6  # the reload compiled nothing new
    assert all(w["peak_mib_after_replay"] >= w["peak_mib_after_load"] > 0 for w in warmup.values())


def test_input_pipeline_counts_real_target_tokens_and_padding(tmp_path):
    from benchmarks import input_pipeline

    # 640 pairs whose targets are all "a b" (reversed: the second column is the source):
    # the same labels for every pair (the pieces of "a b", then end), whatever the sources' lengths.
    lines = [f"a b\t{'mot ' * (1 + i % 3)}fin {i}" for i in range(640)]
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "ip.json"
    input_pipeline.main(["--tsv", str(tmp_path / "pairs.tsv"), "--dates", "0", "--epochs", "1",
                         "--vocab-size", "300", "--output", str(output)])
    measured = json.loads(output.read_text())["sentencepiece"]
    for way in ("in_memory", "streamed"):
        figures = measured[way]
        assert figures["batches"] == measured["steps_per_epoch"]  # one epoch of known steps
        real_per_batch = figures["real_target_tokens"] / figures["batches"]
        # Every label row is the same 3-5 tokens, and a batch holds at most 512 positions.
        assert 3 * 8 <= real_per_batch <= 512
        # Labels are padded to the length of the longer side (the source here), so much of them is padding.
        assert 0.3 < figures["padding_fraction"] < 1.0
        assert figures["real_target_tokens_per_s_per_thread"] > 0 and figures["cores_for_h200"] > 0


@pytest.mark.slow
def test_training_memory_does_not_grow_with_the_corpus(tmp_path):
    """30 steps on 20,000 and on 2,000,000 streamed pairs: peak memory within 1.25x (the time ratio is the benchmark's)."""
    from benchmarks import corpus_size

    results = corpus_size.compare(20_000, 2_000_000, steps=30, tokenizer_sample=20_000, directory=str(tmp_path),
                                  log=lambda message: None)
    print("corpus size:", results)
    assert "streamed from 8 file(s)" in results["large"]["data"] and "1978474 train" in results["large"]["data"]
    assert results["memory_ratio"] <= 1.25, results


@pytest.mark.slow
def test_real_batches_are_written_as_the_pipeline_makes_them_and_replayed(tmp_path):
    """The .npz holds the streamed token-budget batches (ladder lengths, rows in multiples of 8, real padding);
    replaying it trains every model on exactly those tokens and counts the real ones."""
    from benchmarks import real_batches
    from training import pipeline

    path = str(tmp_path / "batches.npz")
    summary = real_batches.write(batches=6, batch_tokens=1024, max_length=32, pairs=6000, vocab_size=500, sample=3000,
                                 output=path, log=lambda message: None)
    loaded, batches = real_batches.load(path)
    assert loaded == summary and len(batches) == 6
    real = 0
    for inputs, labels in batches:
        rows, length = labels.shape
        assert length in pipeline.bucket_lengths(32) and rows % 8 == 0 and rows * length <= 1024
        np.testing.assert_array_equal(inputs["decoder_tokens"][:, 1:], labels[:, :-1])
        real += int(np.count_nonzero(labels))
    assert real == summary["real_target_tokens"] and 0 < summary["padding_fraction"] < 0.5
    report = real_batches.replay(path, names=["ours", "keras_hub"], rounds=1, log=lambda message: None)
    counted = sum(int(np.count_nonzero(labels)) for _, labels in batches[1:])
    for row in report["training"].values():  # real tokens/s = counted real tokens over the same seconds
        assert row["positions_per_second"] > row["median"] > 0
        np.testing.assert_allclose(row["median"] / row["positions_per_second"],
                                   counted / sum(labels.size for _, labels in batches[1:]), rtol=1e-9)


def test_score_confidence_measures_what_it_reports(rng):
    from benchmarks import score_confidence

    scores = rng.normal(size=200).round(1)  # rounded: many ties
    right = rng.random(200) < 0.7
    pairs = [(s, w) for s in scores[right] for w in scores[~right]]
    brute = np.mean([1.0 if s > w else 0.5 if s == w else 0.0 for s, w in pairs])
    assert abs(score_confidence.right_above_wrong(scores, right) - brute) < 1e-9
    # The threshold: the lowest score whose answers above it are right at least `precision` of the time.
    scores, right = np.array([-0.1, -0.2, -0.3, -0.4, -0.5]), np.array([True, True, True, False, True])
    assert score_confidence.threshold_for(scores, right, 1.0) == -0.3
    assert score_confidence.threshold_for(scores, right, 0.8) == -0.5
    # What the dates export must answer: real dates stay, what is no date (or an impossible one) is "".
    assert [score_confidence.exported_reference(r) for r in ("2009-09-25", "2009-02-31", "", "1875-01-01")] == \
        ["2009-09-25", "", "", ""]


def test_the_bfloat16_peers_round_their_own_training_steps_only():
    from tf_transformer import fast_paths

    size = dict(TINY, dropout=0.0)
    ours, rounded = run.compiled_peer("ours", size, jit=False), run.compiled_peer("ours_bfloat16_matmuls", size, jit=False)
    rounded.set_weights(ours.get_weights())
    x, y = run.synthetic_batch(size)
    float32_loss, bfloat16_loss = float(ours.train_on_batch(x, y)), float(rounded.train_on_batch(x, y))
    assert float32_loss != bfloat16_loss and abs(float32_loss - bfloat16_loss) < 1e-2 * float32_loss
    assert fast_paths.training_matmul_dtype() is None  # switched on only around its own trace
    hub = peers.VARIANTS["keras_hub_fused_mixed_bfloat16"](size)
    assert hub.get_layer("logits").compute_dtype == "bfloat16" and keras.config.dtype_policy().name == "float32"
