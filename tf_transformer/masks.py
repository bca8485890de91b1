"""Attention masks: building them and merging them.

Every mask in this package is boolean with True meaning "may attend" (or "is a
real token"), the convention of `keras.layers.MultiHeadAttention` and KerasHub.

We use the notation B batch, T query (target) length, S key (source) length.
"""

from keras import ops

from tf_transformer.special_tokens import PAD


def padding_mask(tokens, pad_id=PAD):
    """True on real tokens, False on padding.

    Args:
        tokens: int tensor `[B, T]`.
        pad_id: the id used for padding (0 everywhere in this package).

    Returns:
        bool tensor `[B, T]`.

    Example:

    >>> keras.ops.convert_to_numpy(padding_mask(np.array([[5, 7, 0, 0]]))).tolist()
    [[True, True, False, False]]
    """
    return ops.not_equal(tokens, pad_id)


def causal_mask(length, key_length=None, offset=0):
    """Lower-triangular mask: position t may attend to positions <= t.

    Args:
        length: query length T.
        key_length: key length S (defaults to T). Rows are aligned at the top
            left, as in `keras.layers.MultiHeadAttention(use_causal_mask=True)`.
        offset: the position of the first query (an int or int scalar
            tensor): with a key/value cache, query t of a step sits at
            `offset + t` and attends to keys <= `offset + t`.

    Returns:
        bool tensor `[T, S]`.

    Example:

    >>> keras.ops.convert_to_numpy(causal_mask(3)).astype(int).tolist()
    [[1, 0, 0], [1, 1, 0], [1, 1, 1]]
    """
    key_length = length if key_length is None else key_length
    rows = ops.expand_dims(ops.arange(length), -1) + offset  # [T, 1]
    cols = ops.expand_dims(ops.arange(key_length), 0)  # [1, S]
    return ops.greater_equal(rows, cols)


def merge_masks(
    query_length,
    key_length,
    query_mask=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask=False,
    causal_offset=0,
):
    """Merges every kind of mask into one attention mask (logical AND).

    This is the single place where padding, explicit attention and causal
    masks meet; all layers of the package call it.

    Args:
        query_length: T, a Python int or a scalar tensor.
        key_length: S.
        query_mask: bool or 0/1 `[B, T]`, False on padded queries (their rows
            are then fully masked: on the einsum path of `MultiHeadAttention`
            their output is exactly zero; on its fused path,
            `ops.dot_product_attention`, it is what the backend's kernel
            gives a fully masked row, typically the mean of the values.
            Either way nothing downstream reads a padded position).
        key_mask: bool or 0/1 `[B, S]`, False on padded keys/values.
        attention_mask: bool or 0/1 of rank 2 `[T, S]`, 3 `[B, T, S]` or
            4 `[B, H, T, S]`.
        use_causal_mask: AND a lower-triangular `[T, S]` mask.
        causal_offset: the causal mask's `offset` (a cached decoding step's
            position).

    Returns:
        None when no mask was given; otherwise a bool tensor of rank 3
        (`[B or 1, T or 1, S or 1]`) or 4 (`[B, H, T, S]` when
        `attention_mask` had rank 4), broadcastable to the scores
        `[B, H, T, S]` once a head axis is inserted with
        `expand_mask_for_heads`.

    Example:

    >>> keys = np.array([[True, True, False]])  # the third key is padding
    >>> mask = merge_masks(3, 3, key_mask=keys, use_causal_mask=True)
    >>> keras.ops.convert_to_numpy(mask).astype(int).tolist()
    [[[1, 0, 0], [1, 1, 0], [1, 1, 0]]]
    """
    mask = None

    def _and(a, b):
        return b if a is None else ops.logical_and(a, b)

    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "bool")
        rank = len(attention_mask.shape)
        if rank not in (2, 3, 4):
            raise ValueError(
                "`attention_mask` must have rank 2 [T, S], 3 [B, T, S] or "
                f"4 [B, H, T, S]. Received: shape={attention_mask.shape}"
            )
        if rank == 2:
            attention_mask = ops.expand_dims(attention_mask, 0)  # [1, T, S]
        mask = attention_mask
    if query_mask is not None:
        query_mask = ops.expand_dims(ops.cast(query_mask, "bool"), -1)  # [B, T, 1]
        mask = _and(mask, _match_rank(query_mask, mask))
    if key_mask is not None:
        key_mask = ops.expand_dims(ops.cast(key_mask, "bool"), -2)  # [B, 1, S]
        mask = _and(mask, _match_rank(key_mask, mask))
    if use_causal_mask:
        causal = ops.expand_dims(causal_mask(query_length, key_length, causal_offset), 0)
        mask = _and(mask, _match_rank(causal, mask))  # [1, T, S]
    return mask


def both(first, second):
    """The AND of two optional masks (None: no constraint), as bool; e.g. a value mask and a key mask.

    Example:

    >>> keras.ops.convert_to_numpy(both(np.array([True, True, False]), np.array([True, False, True]))).tolist()
    [True, False, False]
    """
    if first is None or second is None:
        return second if first is None else ops.cast(first, "bool")
    return ops.logical_and(ops.cast(first, "bool"), ops.cast(second, "bool"))


def expand_mask_for_heads(mask):
    """`[B, T, S]` → `[B, 1, T, S]`; a rank-4 mask is returned unchanged.

    Example:

    >>> tuple(expand_mask_for_heads(np.ones((2, 3, 5), bool)).shape)
    (2, 1, 3, 5)
    """
    if mask is None or len(mask.shape) == 4:
        return mask
    return ops.expand_dims(mask, 1)


def _match_rank(mask, other):
    """Inserts a head axis into a rank-3 mask when `other` is rank 4."""
    if other is not None and len(other.shape) == 4 and len(mask.shape) == 3:
        return ops.expand_dims(mask, 1)
    return mask
