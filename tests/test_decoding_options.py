"""n-best with scores, sampling, forced-decoding scores, min_length and no_repeat_ngram_size, in the library.

The export's signatures built on them are tested in test_export.py and
test_served_exports.py.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from layer_test_helper import run_on_jax
from tf_transformer import TransformerConfig, build_transformer, decoding

START, END = 1, 2


def numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def small_vocab_model():
    """Untrained, 6 target ids (padding, start, end, 3 words): few enough sequences to enumerate."""
    keras.utils.set_random_seed(5)
    config = TransformerConfig.preset("tiny", source_vocab_size=12, target_vocab_size=6, max_length=8)
    model = build_transformer(config)
    source = np.random.default_rng(2).integers(3, 12, size=(3, 5)).astype("int32")
    return model, source


@pytest.fixture(scope="module")
def model_and_sources():
    keras.utils.set_random_seed(1)
    config = TransformerConfig.preset("tiny", source_vocab_size=20, target_vocab_size=9, max_length=16)
    model = build_transformer(config)
    rng = np.random.default_rng(4)
    source = rng.integers(3, 20, size=(300, 6)).astype("int32")
    source[rng.random(source.shape) < 0.2] = 0  # some padding
    source[:, 0] = rng.integers(3, 20, size=300)
    return model, source


def teacher_forced(model, source, outputs):
    """Per-sequence sum of log-probabilities (padding excluded from the softmax), in NumPy."""
    logits = numpy(model({"encoder_tokens": source, "decoder_tokens": outputs[:, :-1]})).astype("float64")
    logits[..., 0] = -1e9
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    labels = outputs[:, 1:]
    token = np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
    return (token * (labels != 0)).sum(1), token * (labels != 0)


def all_outputs(vocab_size, max_length):
    """Every output of at most `max_length - 1` generated ids: ended by END, or cut at the last position."""
    words = range(1, vocab_size)  # any id but padding may be generated
    outputs = []
    for length in range(1, max_length):
        for body in itertools.product([w for w in words if w != END], repeat=length - 1):
            outputs.append([START, *body, END])
        if length == max_length - 1:
            outputs.extend([START, *body] for body in itertools.product([w for w in words if w != END], repeat=length))
    padded = np.zeros((len(outputs), max_length), "int32")
    for row, output in zip(padded, outputs):
        row[: len(output)] = output
    return padded


def test_n_best_equals_an_exhaustive_search(small_vocab_model):
    model, source = small_vocab_model
    max_length, alpha = 4, 0.6
    candidates = all_outputs(6, max_length)  # 85 outputs
    # A beam wider than the number of outputs keeps every prefix: the search is then exhaustive.
    ids, scores = decoding.beam_search(model, source, START, END, max_length, beam_size=100, length_penalty=alpha,
                                       num_hypotheses=5, return_scores=True)
    ids, scores = numpy(ids), numpy(scores)
    assert ids.shape == (3, 5, max_length) and scores.shape == (3, 5)
    for example in range(len(source)):
        sums, _ = teacher_forced(model, np.repeat(source[example: example + 1], len(candidates), 0), candidates)
        lengths = (candidates[:, 1:] != 0).sum(1)
        penalised = sums / ((5 + lengths) / 6) ** alpha
        order = np.argsort(-penalised, kind="stable")[:5]
        np.testing.assert_array_equal(ids[example], candidates[order])
        np.testing.assert_allclose(scores[example], penalised[order], atol=1e-4)
        assert np.all(np.diff(scores[example]) <= 0)


def test_first_of_the_n_best_is_beam_search(model_and_sources):
    model, source = model_and_sources
    source = source[:16]
    best = numpy(decoding.beam_search(model, source, START, END, 10, beam_size=4))
    n_best, scores = decoding.beam_search(model, source, START, END, 10, beam_size=4, num_hypotheses=4,
                                          return_scores=True)
    n_best = numpy(n_best)
    np.testing.assert_array_equal(n_best[:, 0], best)
    # The scores are what the hypotheses were ranked by: penalised teacher-forced log-probabilities.
    for rank in range(4):
        sums, _ = teacher_forced(model, source, n_best[:, rank])
        lengths = (n_best[:, rank, 1:] != 0).sum(1)
        # A hypothesis cut at max_length without an end id counts every position.
        np.testing.assert_allclose(numpy(scores)[:, rank], sums / ((5 + lengths) / 6) ** 0.6, atol=1e-4)


def test_score_is_the_teacher_forced_log_probability(model_and_sources):
    model, source = model_and_sources
    source = source[:32]
    ids, greedy_scores = decoding.greedy_search(model, source, START, END, 10, return_scores=True)
    token_log_probs, scores = decoding.score(model, source, ids)
    expected, expected_tokens = teacher_forced(model, source, numpy(ids))
    np.testing.assert_allclose(numpy(scores), expected, atol=1e-4)
    np.testing.assert_allclose(numpy(token_log_probs), expected_tokens, atol=1e-4)
    np.testing.assert_allclose(numpy(greedy_scores), expected, atol=1e-4)
    # Any given output, not only the model's own: a random one scores lower than greedy's.
    rng = np.random.default_rng(0)
    other = np.zeros_like(numpy(ids))
    other[:, 0] = START
    other[:, 1:6] = rng.integers(3, 9, size=(32, 5))
    other[:, 6] = END
    _, other_scores = decoding.score(model, source, other)
    np.testing.assert_allclose(numpy(other_scores), teacher_forced(model, source, other)[0], atol=1e-4)
    assert np.all(numpy(other_scores) <= expected + 1e-4)


def test_top_k_1_and_temperature_0_sample_greedy(model_and_sources):
    model, source = model_and_sources
    greedy = numpy(decoding.greedy_search(model, source, START, END, 10))
    seeds = np.arange(len(source))
    np.testing.assert_array_equal(numpy(decoding.sample(model, source, START, END, 10, top_k=1, seed=seeds)), greedy)
    np.testing.assert_array_equal(numpy(decoding.sample(model, source, START, END, 10, temperature=0.0, seed=seeds)),
                                  greedy)


def test_a_seed_gives_the_same_sample_whatever_the_batch(model_and_sources):
    model, source = model_and_sources
    seeds = np.arange(40) % 7  # repeated seeds
    together, scores = decoding.sample(model, source[:40], START, END, 10, temperature=1.5, seed=seeds,
                                       return_scores=True)
    together = numpy(together)
    reordered = numpy(decoding.sample(model, source[:40][::-1], START, END, 10, temperature=1.5, seed=seeds[::-1]))
    np.testing.assert_array_equal(reordered[::-1], together)
    alone = numpy(decoding.sample(model, source[5:6], START, END, 10, temperature=1.5, seed=seeds[5]))
    np.testing.assert_array_equal(alone[0], together[5])
    # Different seeds draw different outputs; the score is the sample's model log-probability.
    other = numpy(decoding.sample(model, source[:40], START, END, 10, temperature=1.5, seed=seeds + 100))
    assert np.mean(np.all(other == together, axis=1)) < 0.5
    np.testing.assert_allclose(numpy(scores), teacher_forced(model, source[:40], together)[0], atol=1e-4)
    # Inside a compiled function: the same draws.
    compiled = tf.function(lambda s, seed: decoding.sample(model, s, START, END, 10, temperature=1.5, seed=seed),
                           jit_compile=True)
    np.testing.assert_array_equal(compiled(tf.constant(source[:40]), tf.constant(seeds)).numpy(), together)


def test_top_p_and_top_k_keep_only_the_most_probable_tokens(model_and_sources):
    model, source = model_and_sources
    source = source[:64]
    for options in ({"top_k": 2}, {"top_p": 0.5}, {"top_k": 3, "top_p": 0.7, "temperature": 2.0}):
        ids = numpy(decoding.sample(model, source, START, END, 8, seed=np.arange(64), **options))
        # Each drawn id must be among the kept ones of its step's distribution (recomputed here).
        logits = numpy(model({"encoder_tokens": source, "decoder_tokens": ids[:, :-1]})).astype("float64")
        logits[..., 0] = -1e9
        scaled = logits / options.get("temperature", 1.0)
        for row in range(64):
            for step in range(ids.shape[1] - 1):
                chosen = ids[row, step + 1]
                if chosen == 0:
                    break
                order = np.argsort(-scaled[row, step])
                k = options.get("top_k", 0) or len(order)
                probs = np.exp(scaled[row, step][order[:k]] - scaled[row, step][order[0]])
                probs /= probs.sum()
                keep = max(1, int(np.sum(np.cumsum(probs) - probs < options.get("top_p", 1.0) - 1e-6)))
                assert chosen in order[:keep], (options, row, step)
        assert len({tuple(r) for r in ids}) > 1


@pytest.mark.parametrize("search", ["greedy", "beam", "sample"])
def test_min_length_and_no_repeat_ngram_size_hold_on_every_output(model_and_sources, search):
    model, source = model_and_sources
    min_length, n, max_length = 3, 2, 12
    run = {
        "greedy": lambda **k: decoding.greedy_search(model, source, START, END, max_length, **k),
        "beam": lambda **k: decoding.beam_search(model, source, START, END, max_length, beam_size=3, **k),
        "sample": lambda **k: decoding.sample(model, source, START, END, max_length, temperature=1.5,
                                              seed=np.arange(len(source)), **k),
    }[search]
    free = numpy(run())
    ids = numpy(run(min_length=min_length, no_repeat_ngram_size=n))
    assert ids.shape == (len(source), max_length)
    for row in ids:
        generated = [int(t) for t in row[1:] if t != 0]
        ended = END in generated
        body = generated[: generated.index(END)] if ended else generated
        assert not ended or len(body) >= min_length
        ngrams = [tuple(row[i: i + n]) for i in range(len(generated) + 1 - n + 1)]
        assert len(ngrams) == len(set(ngrams)), row
    # The controls changed something: without them, some outputs are short or repeat.
    def violates(row):
        generated = [int(t) for t in row[1:] if t != 0]
        ngrams = [tuple(row[i: i + n]) for i in range(len(generated) + 1 - n + 1)]
        return (END in generated and generated.index(END) < min_length) or len(ngrams) != len(set(ngrams))
    assert any(violates(row) for row in free)


def test_options_are_checked(model_and_sources):
    model, source = model_and_sources
    with pytest.raises(ValueError, match="num_hypotheses"):
        decoding.beam_search(model, source[:2], START, END, 8, beam_size=2, num_hypotheses=3)
    with pytest.raises(ValueError, match="no_repeat_ngram_size"):
        decoding.greedy_search(model, source[:2], START, END, 8, no_repeat_ngram_size=8)
    with pytest.raises(ValueError, match="min_length"):
        decoding.greedy_search(model, source[:2], START, END, 8, min_length=-1)
    with pytest.raises(ValueError, match="beam_size=1"):
        model.generate(source[:2], START, END, 8, beam_size=2, sampling={"seed": 1})


def test_generate_exposes_every_option(model_and_sources):
    model, source = model_and_sources
    source = source[:4]
    ids, scores = model.generate(source, START, END, 8, beam_size=3, num_hypotheses=2, return_scores=True)
    assert tuple(ids.shape) == (4, 2, 8) and tuple(scores.shape) == (4, 2)
    sampled = numpy(model.generate(source, START, END, 8, sampling={"top_k": 1, "seed": 0}))
    np.testing.assert_array_equal(sampled, numpy(model.generate(source, START, END, 8)))
    _, forced = model.score(source, sampled)
    assert forced.shape == (4,)


JAX_SAMPLE = """
import numpy as np, keras, jax
import tf_transformer as tt
from tf_transformer import decoding
keras.utils.set_random_seed(0)
model = tt.build_transformer(tt.TransformerConfig.preset("tiny", source_vocab_size=20, target_vocab_size=9, max_length=16))
model.load_weights(WEIGHTS)
source = np.load(SOURCE)
ids = np.asarray(decoding.sample(model, source, 1, 2, 10, temperature=1.5, seed=np.arange(len(source))))
jitted = np.asarray(jax.jit(lambda s: decoding.sample(model, s, 1, 2, 10, temperature=1.5, seed=np.arange(len(source))))(source))
assert (ids == jitted).all()
print("SAMPLES", ids.tolist())
"""


def test_a_seed_draws_the_same_samples_on_tensorflow_and_jax(model_and_sources, tmp_path):
    model, source = model_and_sources
    source = source[:24]
    weights, source_file = tmp_path / "model.weights.h5", tmp_path / "source.npy"
    model.save_weights(weights)
    np.save(source_file, source)
    expected = numpy(decoding.sample(model, source, START, END, 10, temperature=1.5, seed=np.arange(24)))
    script = JAX_SAMPLE.replace("WEIGHTS", repr(str(weights))).replace("SOURCE", repr(str(source_file)))
    run_on_jax(script, "SAMPLES " + str(expected.tolist()))
