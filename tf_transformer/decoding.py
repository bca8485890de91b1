"""Greedy search, beam search (n-best with scores), sampling and scoring, in `keras.ops` only.

The searches run a `while_loop` over fixed-size buffers (the output ids, the cache),
so they work eagerly, inside `tf.function` (with or without XLA, and in an
exported SavedModel) and under `jax.jit`. Every example of a batch stops on
its own: once it has produced `end_id` it only receives padding, and the
loop ends when all have.

Every search can forbid the end id before `min_length` generated ids and
any token that would repeat an n-gram of `no_repeat_ngram_size` ids
(CTranslate2's `min_decoding_length` and `no_repeat_ngram_size`). A
forbidden token is never chosen; the scores stay the model's own
log-probabilities of what was chosen, so they equal `score`'s.

We use the notation B batch, S source length, L `max_length`, V target
vocabulary size, K beam size, N hypotheses returned.
"""

from keras import ops

from tf_transformer.special_tokens import PAD
from tf_transformer.fast_paths import argmax, hash_uniform, write_at_index

_NEG_INF = -1e9


def _prepare(model, encoder_tokens, max_length):
    for method in ("encode", "initial_cache", "decode_step", "logits"):
        if not callable(getattr(model, method, None)):
            raise ValueError(
                f"`model` must be a `tf_transformer.Transformer` (it has no `{method}` method). "
                f"Received: {type(model).__name__}"
            )
    if not 2 <= max_length <= model.max_length:
        raise ValueError(
            f"`max_length` must be between 2 and the model's max_length "
            f"{model.max_length}. Received: max_length={max_length}"
        )
    encoder_tokens = ops.convert_to_tensor(encoder_tokens, "int32")
    if len(encoder_tokens.shape) != 2:
        raise ValueError(f"`encoder_tokens` must have shape [batch, length]. Received: {encoder_tokens.shape}")
    context, context_padding_mask = model.encode(encoder_tokens, training=False)
    return context, context_padding_mask


def _next_token_logits(model, tokens, index, cache, context, context_padding_mask, use_cache):
    """float32 logits `[B, V]` of the token after position `index`, and the new cache.

    Padding (id 0) is never generated: its logit is set very low.
    """
    if use_cache:
        current = ops.take_along_axis(tokens, ops.full((ops.shape(tokens)[0], 1), index, "int32"), axis=1)
        logits, cache = model.decode_step(current, index, cache, context_padding_mask)
        logits = logits[:, 0]  # [B, V]
    else:
        # The whole buffer, every step: causal attention keeps positions
        # after `index` (still padding) from affecting its logits.
        hidden = model.decoder(tokens, context, context_padding_mask=context_padding_mask, training=False)
        logits = ops.take_along_axis(
            model.logits(hidden), ops.full((ops.shape(tokens)[0], 1, 1), index, "int32"), axis=1
        )[:, 0]
    logits = ops.cast(logits, "float32")
    is_padding = ops.equal(ops.arange(ops.shape(logits)[-1]), PAD)
    return ops.where(is_padding, _NEG_INF, logits), cache


def _check_controls(min_length, no_repeat_ngram_size, max_length):
    if not 0 <= int(min_length):
        raise ValueError(f"`min_length` must be at least 0. Received: min_length={min_length}")
    if not 0 <= int(no_repeat_ngram_size) < max_length:
        raise ValueError(f"`no_repeat_ngram_size` must be between 0 (off) and max_length - 1. "
                         f"Received: no_repeat_ngram_size={no_repeat_ngram_size}")


def _forbid(log_probs, tokens, index, end_id, min_length, no_repeat_ngram_size):
    """`log_probs` `[N, V]` of the token at position `index + 1` with the forbidden ones set very low.

    `tokens` `[N, L]` holds the start id and the `index` ids generated so
    far. Forbidden: the end id while fewer than `min_length` ids were
    generated; every token that would complete an n-gram of
    `no_repeat_ngram_size` ids already in `tokens`.
    """
    if not (min_length and end_id is not None) and not no_repeat_ngram_size:
        return log_probs  # nothing to forbid: no op added
    vocab_size = ops.shape(log_probs)[-1]
    if min_length and end_id is not None:
        too_short = ops.logical_and(ops.equal(ops.arange(vocab_size), end_id), index < min_length)
        log_probs = ops.where(too_short, _NEG_INF, log_probs)
    n = int(no_repeat_ngram_size)
    if n:
        rows, length = ops.shape(tokens)[0], tokens.shape[1]
        windows = length - n + 1  # n-grams starting at positions 0 … L - n
        # The n - 1 ids the new token follows (positions index - n + 2 … index).
        prefix = ops.take(tokens, ops.maximum(index - n + 2 + ops.arange(n - 1, dtype="int32"), 0), axis=1)
        matches = ops.ones((rows, windows), "bool")
        for offset in range(n - 1):  # window j matches where its first n - 1 ids are the prefix
            matches = ops.logical_and(matches, ops.equal(tokens[:, offset: offset + windows], prefix[:, offset: offset + 1]))
        # A window counts once all its n ids were written (j + n - 1 ≤ index).
        written = ops.logical_and(ops.arange(windows) + n - 1 <= index, index >= n - 2)
        matches = ops.logical_and(matches, written[None, :])
        completing = tokens[:, n - 1: n - 1 + windows]  # the id each window's prefix led to
        row = ops.repeat(ops.arange(rows, dtype="int32")[:, None], windows, axis=1)
        indices = ops.reshape(ops.stack([row, ops.cast(completing, "int32")], axis=-1), (-1, 2))
        # Summed where several windows forbid the same id.
        count = ops.scatter(indices, ops.reshape(ops.cast(matches, "float32"), (-1,)), (rows, vocab_size))
        log_probs = ops.where(count > 0, _NEG_INF, log_probs)
    return log_probs


def _sequence_search(model, encoder_tokens, start_id, end_id, max_length, choose, min_length=0,
                     no_repeat_ngram_size=0, use_cache=True, return_scores=False, normalize=True):
    """One output per example, each token chosen by `choose(values [B, V], index)`: greedy's and sampling's loop.

    `values` are the log-probabilities when `normalize` or `return_scores`,
    else the logits (greedy's argmax needs no softmax); forbidden tokens
    (`_forbid`) are set very low. Returns the ids `[B, L]`, and with
    `return_scores` `(ids, scores)`: scores float32 `[B]`, the sum of the
    model's log-probabilities of the generated ids (end id included).
    """
    _check_controls(min_length, no_repeat_ngram_size, max_length)
    normalize = normalize or return_scores
    context, context_padding_mask = _prepare(model, encoder_tokens, max_length)
    batch_size = ops.shape(context)[0]
    tokens = ops.zeros((batch_size, max_length), "int32")
    tokens = write_at_index(tokens, ops.full((batch_size, 1), start_id, "int32"), 0, axis=-1)
    finished = ops.zeros((batch_size,), "bool")
    cache = model.initial_cache(context, max_length) if use_cache else ()
    # The scores ride in the loop only when asked for: greedy's serving path stays as lean as it was.
    scores = (ops.zeros((batch_size,), "float32"),) if return_scores else ()

    def cond(index, tokens, finished, cache, *scores):
        return ops.logical_and(index < max_length - 1, ops.logical_not(ops.all(finished)))

    def body(index, tokens, finished, cache, *scores):
        logits, cache = _next_token_logits(model, tokens, index, cache, context, context_padding_mask, use_cache)
        values = ops.log_softmax(logits, axis=-1) if normalize else logits
        next_token = choose(_forbid(values, tokens, index, end_id, min_length, no_repeat_ngram_size), index)
        if return_scores:
            chosen = ops.take_along_axis(values, next_token[:, None], axis=1)[:, 0]
            scores = (scores[0] + ops.where(finished, 0.0, chosen),)
        next_token = ops.where(finished, PAD, next_token)
        if end_id is not None:
            finished = ops.logical_or(finished, ops.equal(next_token, end_id))
        return (index + 1, write_at_index(tokens, next_token[:, None], index + 1, axis=-1), finished, cache, *scores)

    _, tokens, _, _, *scores = ops.while_loop(
        cond, body, (ops.convert_to_tensor(0, "int32"), tokens, finished, cache, *scores)
    )
    return (tokens, scores[0]) if return_scores else tokens


def greedy_search(model, encoder_tokens, start_id, end_id, max_length, use_cache=True, return_scores=False,
                  min_length=0, no_repeat_ngram_size=0):
    """Translates by taking the most probable token at each step.

    Args:
        model: a `Transformer` (fresh or reloaded).
        encoder_tokens: int `[B, S]`, 0 = padding.
        start_id: the id every output starts with.
        end_id: the id that ends an output; None never stops early.
        max_length: L, the length of the output including `start_id`
            (at most the model's `max_length`).
        use_cache: decode incrementally with the key/value cache (O(L) per
            step) rather than re-running the decoder on the whole prefix.
        return_scores: also return each output's log-probability.
        min_length: the fewest ids generated before `end_id` may be.
        no_repeat_ngram_size: n > 0 forbids generating any n-gram twice.

    Returns:
        int32 `[B, L]`: `start_id`, the generated ids up to and including
        `end_id`, then 0s. With `return_scores`, `(ids, scores)`, scores
        float32 `[B]`: the sum of the generated ids' log-probabilities
        (end id included), as `score` computes them.

    Example:

    >>> from tf_transformer import Transformer, TransformerConfig
    >>> model = Transformer(TransformerConfig.preset("tiny", source_vocab_size=30, target_vocab_size=20))
    >>> ids = greedy_search(model, np.array([[5, 6, 7, 0]]), start_id=1, end_id=2, max_length=8)
    >>> ids = keras.ops.convert_to_numpy(ids)
    >>> bool(ids.shape[1] <= 8 and ids[0, 0] == 1)  # starts with start_id; untrained, so any ids follow
    True
    """
    return _sequence_search(model, encoder_tokens, start_id, end_id, max_length,
                            lambda values, index: argmax(values),  # the logits' argmax: no softmax needed
                            min_length, no_repeat_ngram_size, use_cache, return_scores, normalize=False)


def sample(model, encoder_tokens, start_id, end_id, max_length, temperature=1.0, top_k=0, top_p=1.0, seed=0,
           min_length=0, no_repeat_ngram_size=0, return_scores=False):
    """Translates by drawing each token at random from the model's distribution.

    Each step samples from `softmax(log_probs / temperature)`, restricted
    to the `top_k` most probable tokens and then to the smallest set of
    them whose probability reaches `top_p` (nucleus sampling, Holtzman et
    al. 2020). Every option may be a scalar or one value per example `[B]`.
    The draws come from a keyed hash of `(seed, step, token)`
    (`fast_paths.hash_uniform`) and the Gumbel-max trick: an example's
    sample depends on its own seed only, not on the batch it is in, and is
    the same on TensorFlow and JAX (`keras.random` draws differ by
    backend and take one seed per call, not one per example).

    Args:
        model, encoder_tokens, start_id, end_id, max_length: as for
            `greedy_search`.
        temperature: > 0; 0 takes the most probable token (greedy).
        top_k: keep the k most probable tokens (0: all); 1 is greedy.
        top_p: in (0, 1]; 1 keeps all.
        seed: int; the same seed gives the same sample.
        min_length, no_repeat_ngram_size, return_scores: as for
            `greedy_search` (the score is the model's log-probability of
            the sample, at temperature 1 and without the cut-offs).

    Returns:
        int32 `[B, L]` in greedy's format, or `(ids, scores)`.

    Example:

    >>> from tf_transformer import Transformer, TransformerConfig
    >>> model = Transformer(TransformerConfig.preset("tiny", source_vocab_size=30, target_vocab_size=20))
    >>> source = np.array([[5, 6, 7, 0], [8, 9, 0, 0]])
    >>> first = keras.ops.convert_to_numpy(sample(model, source, 1, 2, 8, seed=[3, 4]))
    >>> again = keras.ops.convert_to_numpy(sample(model, source[:1], 1, 2, 8, seed=3))
    >>> bool(np.all(first[:1] == again))  # the same seed, the same sample, whatever the batch
    True
    """
    batch_size = ops.shape(ops.convert_to_tensor(encoder_tokens))[0]

    def per_example(value, dtype):
        return ops.broadcast_to(ops.cast(ops.convert_to_tensor(value), dtype), (batch_size,))

    temperature, top_k = per_example(temperature, "float32"), per_example(top_k, "int32")
    top_p, seed = per_example(top_p, "float32"), per_example(seed, "int32")
    top_k = ops.where(ops.equal(temperature, 0.0), 1, top_k)  # temperature 0: the most probable token
    temperature = ops.where(ops.equal(temperature, 0.0), 1.0, temperature)

    def choose(log_probs, index):
        vocab_size = ops.shape(log_probs)[-1]
        allowed = log_probs > _NEG_INF / 2  # not padding, not forbidden by `_forbid`
        scaled = ops.where(allowed, log_probs / temperature[:, None], _NEG_INF)
        ranked, _ = ops.top_k(scaled, vocab_size)  # [B, V], most probable first
        rank = ops.arange(vocab_size, dtype="int32")[None, :]
        ranked = ops.where(ops.logical_or(top_k[:, None] <= 0, rank < top_k[:, None]), ranked, _NEG_INF)
        probs = ops.softmax(ranked, axis=-1)
        before = ops.cumsum(probs, axis=-1) - probs  # the probability of the tokens ranked above each one
        kept = ops.logical_or(before < top_p[:, None], ops.equal(rank, 0))
        kept = ops.logical_and(kept, ranked > _NEG_INF / 2)
        count = ops.sum(ops.cast(kept, "int32"), axis=-1)
        threshold = ops.take_along_axis(ranked, ops.maximum(count - 1, 0)[:, None], axis=1)  # [B, 1]
        uniform = hash_uniform(seed, index, vocab_size)  # [B, V] in (0, 1)
        gumbel = -ops.log(-ops.log(uniform))
        return argmax(ops.where(scaled >= threshold, scaled + gumbel, 2 * _NEG_INF))

    return _sequence_search(model, encoder_tokens, start_id, end_id, max_length, choose, min_length,
                            no_repeat_ngram_size, return_scores=return_scores)


def score(model, encoder_tokens, decoder_tokens):
    """The model's log-probabilities of given outputs (forced decoding: scoring, filtering, reranking).

    The same distribution the searches draw from: padding is never a
    candidate (its logit is set very low before the softmax).

    Args:
        model: a `Transformer`.
        encoder_tokens: int `[B, S]`, 0 = padding.
        decoder_tokens: int `[B, T]`: the start id, the output's ids, the
            end id, then 0s (a search's output format).

    Returns:
        `(token_log_probs, scores)`: float32 `[B, T - 1]`, the
        log-probability of each id after the start (0 at padding), and
        `[B]`, their sum.

    Example:

    >>> from tf_transformer import Transformer, TransformerConfig
    >>> model = Transformer(TransformerConfig.preset("tiny", source_vocab_size=30, target_vocab_size=20))
    >>> source = np.array([[5, 6, 7, 0]])
    >>> ids, scores = greedy_search(model, source, 1, 2, 8, return_scores=True)
    >>> _, forced = score(model, source, ids)
    >>> bool(np.allclose(keras.ops.convert_to_numpy(forced), keras.ops.convert_to_numpy(scores), atol=1e-4))
    True
    """
    encoder_tokens = ops.convert_to_tensor(encoder_tokens, "int32")
    decoder_tokens = ops.convert_to_tensor(decoder_tokens, "int32")
    if len(decoder_tokens.shape) != 2:
        raise ValueError(f"`decoder_tokens` must have shape [batch, length]. Received: {decoder_tokens.shape}")
    logits = ops.cast(model({"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens[:, :-1]}, training=False),
                      "float32")
    logits = ops.where(ops.equal(ops.arange(ops.shape(logits)[-1]), PAD), _NEG_INF, logits)
    labels = decoder_tokens[:, 1:]
    token_log_probs = ops.take_along_axis(ops.log_softmax(logits, axis=-1), labels[..., None], axis=-1)[..., 0]
    token_log_probs = ops.where(ops.equal(labels, PAD), 0.0, token_log_probs)
    return token_log_probs, ops.sum(token_log_probs, axis=-1)


def _penalty(length, alpha):
    """GNMT's length penalty `((5 + length) / 6) ** alpha` (Wu et al. 2016)."""
    return ops.power((5.0 + ops.cast(length, "float32")) / 6.0, alpha)


def beam_search(model, encoder_tokens, start_id, end_id, max_length, beam_size=4, length_penalty=0.6,
                num_hypotheses=1, return_scores=False, min_length=0, no_repeat_ngram_size=0):
    """Translates by keeping the `beam_size` best partial outputs at each step.

    Outputs are ranked by `log P(y | x) / ((5 + |y|) / 6) ** length_penalty`,
    |y| counting the generated ids (the end id included, the start id not);
    the paper uses a beam of 4 and α = 0.6. A finished beam keeps its score
    and competes with the live ones; the search ends when every beam of
    every example has finished, or at `max_length`.

    Args:
        model, encoder_tokens, start_id, end_id, max_length: as for
            `greedy_search`.
        beam_size: K; 1 gives greedy search.
        length_penalty: α; 0 ranks by plain log-probability.
        num_hypotheses: N ≤ K; above 1, the N best beams per example,
            best first (n-best lists, for reranking or alternatives).
        return_scores: also return the score each output was ranked by.
        min_length, no_repeat_ngram_size: as for `greedy_search`.

    Returns:
        int32 `[B, L]`: the best beam per example, in greedy's format;
        `[B, N, L]` when `num_hypotheses > 1`. With `return_scores`,
        `(ids, scores)`, scores float32 `[B]` (or `[B, N]`): the
        length-penalised log-probabilities above.

    Example:

    >>> from tf_transformer import Transformer, TransformerConfig
    >>> model = Transformer(TransformerConfig.preset("tiny", source_vocab_size=30, target_vocab_size=20))
    >>> source = np.array([[5, 6, 7, 0]])
    >>> one = beam_search(model, source, start_id=1, end_id=2, max_length=8, beam_size=1)
    >>> bool(np.all(keras.ops.convert_to_numpy(one) == keras.ops.convert_to_numpy(greedy_search(model, source, 1, 2, 8))))
    True
    """
    alpha = float(length_penalty)
    if beam_size < 1:
        raise ValueError(f"`beam_size` must be at least 1. Received: beam_size={beam_size}")
    if not 1 <= num_hypotheses <= beam_size:
        raise ValueError(f"`num_hypotheses` must be between 1 and beam_size {beam_size}. "
                         f"Received: num_hypotheses={num_hypotheses}")
    _check_controls(min_length, no_repeat_ngram_size, max_length)
    context, context_padding_mask = _prepare(model, encoder_tokens, max_length)
    batch_size = ops.shape(context)[0]
    k = beam_size

    def merge(x):  # [B, K, ...] -> [B * K, ...]
        return ops.reshape(x, (-1,) + tuple(ops.shape(x)[2:]))

    def split(x):  # [B * K, ...] -> [B, K, ...]
        return ops.reshape(x, (batch_size, k) + tuple(ops.shape(x)[1:]))

    def repeat(x):  # each example's row K times: [B, ...] -> [B * K, ...]
        return merge(ops.repeat(ops.expand_dims(x, 1), k, axis=1))

    context, context_padding_mask = repeat(context), repeat(context_padding_mask)
    tokens = ops.zeros((batch_size, k, max_length), "int32")
    tokens = write_at_index(tokens, ops.full((batch_size, k, 1), start_id, "int32"), 0, axis=-1)
    # Only the first beam is alive at the start, or all K would be copies.
    log_probs = ops.tile(ops.convert_to_tensor([[0.0] + [_NEG_INF] * (k - 1)]), (batch_size, 1))
    finished = ops.zeros((batch_size, k), "bool")
    lengths = ops.zeros((batch_size, k), "int32")
    cache = model.initial_cache(context, max_length)

    def cond(index, tokens, log_probs, finished, lengths, cache):
        return ops.logical_and(index < max_length - 1, ops.logical_not(ops.all(finished)))

    def body(index, tokens, log_probs, finished, lengths, cache):
        logits, cache = _next_token_logits(
            model, merge(tokens), index, cache, context, context_padding_mask, use_cache=True
        )
        step_log_probs = ops.log_softmax(logits, axis=-1)
        if min_length or no_repeat_ngram_size:  # without them, the graph is what it was before they existed
            step_log_probs = _forbid(step_log_probs, merge(tokens), index, end_id, min_length, no_repeat_ngram_size)
        vocab_size = ops.shape(step_log_probs)[-1]
        step_log_probs = split(step_log_probs)  # [B, K, V]
        # A finished beam may only be extended by padding, at no cost.
        only_padding = ops.where(ops.equal(ops.arange(vocab_size), PAD), 0.0, _NEG_INF)
        step_log_probs = ops.where(finished[..., None], only_padding, step_log_probs)
        candidates = log_probs[..., None] + step_log_probs  # [B, K, V]
        candidate_lengths = ops.where(finished, lengths, index + 1)  # [B, K]
        scores = candidates / _penalty(candidate_lengths, alpha)[..., None]
        _, best = ops.top_k(ops.reshape(scores, (batch_size, -1)), k)  # [B, K] over K * V
        beam = best // vocab_size
        token = ops.cast(best % vocab_size, "int32")

        def pick(x):  # x[b, beam[b, j]] for each new beam j
            index_shape = (batch_size, k) + (1,) * (len(x.shape) - 2)
            return ops.take_along_axis(x, ops.reshape(beam, index_shape), axis=1)

        was_finished = pick(finished)
        log_probs = ops.take_along_axis(ops.reshape(candidates, (batch_size, -1)), best, axis=1)
        lengths = ops.where(was_finished, pick(lengths), index + 1)
        finished = ops.logical_or(was_finished, ops.equal(token, end_id)) if end_id is not None else was_finished
        tokens = write_at_index(pick(tokens), token[..., None], index + 1, axis=-1)
        rows = ops.reshape(ops.arange(batch_size)[:, None] * k + beam, (-1,))  # each new beam's row in [B * K]
        cache = cache.reorder(rows)
        return index + 1, tokens, log_probs, finished, lengths, cache

    _, tokens, log_probs, finished, lengths, _ = ops.while_loop(
        cond, body, (ops.convert_to_tensor(0, "int32"), tokens, log_probs, finished, lengths, cache)
    )
    # Live beams that hit max_length count all their positions.
    lengths = ops.where(finished, lengths, max_length - 1)
    final = log_probs / _penalty(lengths, alpha)
    if num_hypotheses == 1:
        best = ops.argmax(final, axis=1)  # [B]
        ids = ops.take_along_axis(tokens, ops.reshape(best, (-1, 1, 1)), axis=1)[:, 0]
        return (ids, ops.take_along_axis(final, best[:, None], axis=1)[:, 0]) if return_scores else ids
    scores, best = ops.top_k(final, num_hypotheses)  # [B, N], best first
    ids = ops.take_along_axis(tokens, best[..., None], axis=1)
    return (ids, scores) if return_scores else ids
