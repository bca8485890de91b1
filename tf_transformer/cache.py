"""The key/value cache of incremental decoding: one named type, documented here once.

We use the notation B batch (times the beam for beam search), H heads,
L the decoding length, S source length, K head size.
"""

from typing import NamedTuple

from keras import ops


class KVCache(NamedTuple):
    """What a decoder keeps between decoding steps, per decoder block.

    A `NamedTuple`, so `keras.ops.while_loop` carries it as loop state on
    every backend (a nest for TensorFlow, a pytree for JAX).

    Fields:
        self_attention: per block, `(key, value)` `[B, H, L, K]`: the
            self-attention keys and values of the positions decoded so far,
            a fixed-size buffer written in place at each step's position
            (positions not yet decoded hold zeros and are masked).
        cross_attention: per block, `(key, value)` `[B, H, S, K]`: the
            encoder output projected once by each block's cross-attention
            (None for a decoder-only block); it never changes while decoding.

    Heads come first (`[B, H, ·, K]`): a step's attention reads the cache in
    place instead of transposing it every step (see `MultiHeadAttention`).

    Example:

    >>> import numpy as np
    >>> from tf_transformer.layers import Decoder, Encoder
    >>> encoder = Encoder(2, 16, 2, 32, vocab_size=100, max_length=10)
    >>> decoder = Decoder(2, 16, 2, 32, vocab_size=80, max_length=10)
    >>> cache = decoder.initial_cache(encoder(np.array([[3, 9, 4, 0]])), max_length=6)
    >>> len(cache.self_attention), tuple(cache.self_attention[0][0].shape)
    (2, (1, 2, 6, 8))
    >>> tuple(cache.cross_attention[0][0].shape)  # the 4 source positions
    (1, 2, 4, 8)
    """

    self_attention: tuple
    cross_attention: tuple

    def reorder(self, indices):
        """The cache of the rows `indices` (int `[B']`), e.g. the beams that survive a beam-search step.

        Only the self-attention part depends on what was decoded; the
        cross-attention part is the same for every beam of an example and
        is kept as it is.

        Example:

        >>> rows = np.arange(3, dtype="float32").reshape(3, 1, 1, 1)  # one value per row
        >>> cache = KVCache(self_attention=((rows, rows),), cross_attention=((rows, rows),))
        >>> keras.ops.convert_to_numpy(cache.reorder(np.array([2, 2, 0])).self_attention[0][0]).ravel().tolist()
        [2.0, 2.0, 0.0]
        """
        return KVCache(
            tuple(tuple(ops.take(part, indices, axis=0) for part in key_value) for key_value in self.self_attention),
            self.cross_attention,
        )
