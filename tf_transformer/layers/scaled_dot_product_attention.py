"""Scaled dot-product attention: `Attention(Q, K, V) = softmax(QKᵀ / √d_k) V`.

Shapes: `...` any leading axes (batch, heads), T query length, S key length,
K key size (d_k), V value size.
"""

import math

from keras import ops

# Masked scores are filled with this before the softmax. The softmax always
# runs in float32 (see `masked_softmax`), so it cannot overflow even when the
# layer computes in float16, where the usual -1e9 becomes -inf and a fully
# masked row turns into NaN (a known bug of several peers).
_MASK_VALUE = -1e9


def masked_softmax(scores, mask=None):
    """Softmax over the last axis that gives masked positions exactly zero.

    Computed in float32 for stability under mixed precision, returned in the
    dtype of `scores`. A row whose every position is masked gives all zeros,
    never NaN.

    Args:
        scores: float tensor `[..., T, S]`.
        mask: bool (or 0/1) tensor broadcastable to `scores`, True = keep.

    Returns:
        Tensor like `scores`.
    """
    logits = ops.cast(scores, "float32")
    if mask is None:
        return ops.cast(ops.softmax(logits, axis=-1), scores.dtype)
    mask = ops.cast(mask, "bool")
    logits = ops.where(mask, logits, _MASK_VALUE)
    weights = ops.softmax(logits, axis=-1)
    # A fully masked row would otherwise be uniform; zero it like Keras does.
    weights = ops.where(mask, weights, 0.0)
    return ops.cast(weights, scores.dtype)


def scaled_dot_product_attention(query, key, value, mask=None):
    """`softmax(QKᵀ / √d_k) V`, the attention of "Attention Is All You Need".

    Each query `q<t>` scores every key `k<s>` by `q<t>·k<s> / √d_k`; the
    softmax of those scores weights the values: the course's
    `A(q, K, V) = Σ_s softmax_s(q·k<s>) v<s>`, with the √d_k scaling of the
    paper (Eq. 1) that keeps the dot products from saturating the softmax.

    Args:
        query: `[..., T, K]`.
        key: `[..., S, K]`.
        value: `[..., S, V]`.
        mask: optional bool tensor broadcastable to `[..., T, S]`; True means
            the query may attend to that key. Masked keys get exactly zero
            weight; a query with no key left gets zero output (no NaN).

    Returns:
        `(output, weights)`: `output` `[..., T, V]`, `weights` `[..., T, S]`
        (each unmasked row sums to 1).

    Example:

    >>> q = keras.random.normal((2, 3, 8))
    >>> k = v = keras.random.normal((2, 5, 8))
    >>> out, w = scaled_dot_product_attention(q, k, v)
    >>> tuple(out.shape), tuple(w.shape)
    ((2, 3, 8), (2, 3, 5))
    """
    if len(query.shape) < 2 or len(query.shape) != len(key.shape):
        raise ValueError(
            "`query` and `key` must have the same rank (at least 2). "
            f"Received: query.shape={query.shape}, key.shape={key.shape}"
        )
    depth = query.shape[-1]
    if depth is None or key.shape[-1] != depth:
        raise ValueError(
            "`query` and `key` must have the same, known last dimension d_k. "
            f"Received: query.shape={query.shape}, key.shape={key.shape}"
        )
    scores = ops.matmul(query, ops.swapaxes(key, -1, -2))  # [..., T, S]
    scores = scores / ops.cast(math.sqrt(depth), scores.dtype)
    weights = masked_softmax(scores, mask)
    return ops.matmul(weights, value), weights
