"""Greedy and beam search with a key/value cache, in `keras.ops` only.

Both run a `while_loop` over fixed-size buffers (the output ids, the cache),
so they work eagerly, inside `tf.function` (with or without XLA, and in an
exported SavedModel) and under `jax.jit`. Every example of a batch stops on
its own: once it has produced `end_id` it only receives padding, and the
loop ends when all have.

We use the notation B batch, S source length, L `max_length`, V target
vocabulary size, K beam size.
"""

from keras import ops

from tf_transformer.special_tokens import PAD
from tf_transformer.fast_paths import argmax, write_at_index

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


def greedy_search(model, encoder_tokens, start_id, end_id, max_length, use_cache=True):
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

    Returns:
        int32 `[B, L]`: `start_id`, the generated ids up to and including
        `end_id`, then 0s.

    Example:

    >>> from tf_transformer import Transformer, TransformerConfig
    >>> model = Transformer(TransformerConfig.preset("tiny", source_vocab_size=30, target_vocab_size=20))
    >>> ids = greedy_search(model, np.array([[5, 6, 7, 0]]), start_id=1, end_id=2, max_length=8)
    >>> ids = keras.ops.convert_to_numpy(ids)
    >>> bool(ids.shape[1] <= 8 and ids[0, 0] == 1)  # starts with start_id; untrained, so any ids follow
    True
    """
    context, context_padding_mask = _prepare(model, encoder_tokens, max_length)
    batch_size = ops.shape(context)[0]
    tokens = ops.zeros((batch_size, max_length), "int32")
    tokens = write_at_index(tokens, ops.full((batch_size, 1), start_id, "int32"), 0, axis=-1)
    finished = ops.zeros((batch_size,), "bool")
    cache = model.initial_cache(context, max_length) if use_cache else ()

    def cond(index, tokens, finished, cache):
        return ops.logical_and(index < max_length - 1, ops.logical_not(ops.all(finished)))

    def body(index, tokens, finished, cache):
        logits, cache = _next_token_logits(model, tokens, index, cache, context, context_padding_mask, use_cache)
        next_token = argmax(logits)  # no softmax needed for the argmax
        next_token = ops.where(finished, PAD, next_token)
        if end_id is not None:
            finished = ops.logical_or(finished, ops.equal(next_token, end_id))
        return index + 1, write_at_index(tokens, next_token[:, None], index + 1, axis=-1), finished, cache

    _, tokens, _, _ = ops.while_loop(
        cond, body, (ops.convert_to_tensor(0, "int32"), tokens, finished, cache)
    )
    return tokens


def _penalty(length, alpha):
    """GNMT's length penalty `((5 + length) / 6) ** alpha` (Wu et al. 2016)."""
    return ops.power((5.0 + ops.cast(length, "float32")) / 6.0, alpha)


def beam_search(model, encoder_tokens, start_id, end_id, max_length, beam_size=4, length_penalty=0.6):
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

    Returns:
        int32 `[B, L]`: the best beam per example, in greedy's format.

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
    best = ops.argmax(log_probs / _penalty(lengths, alpha), axis=1)  # [B]
    return ops.take_along_axis(tokens, ops.reshape(best, (-1, 1, 1)), axis=1)[:, 0]
