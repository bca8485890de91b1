"""The encoder block: self-attention and feed-forward, each with residual + norm.

We use the notation B batch, S source length, D model width (d_model),
H heads.
"""

import keras

from tf_transformer.layers.transformer_block import TransformerBlock, first_given


@keras.saving.register_keras_serializable(package="tf_transformer")
class EncoderBlock(TransformerBlock):
    """One encoder layer of the paper (section 3.1): self-attention, then FFN.

    Every position attends to every real (non-padded) position of the same
    sequence; each of the two sub-layers has a residual connection, dropout
    and layer normalisation (post-LN as in the paper, or pre-LN with
    `norm_first=True`). Heads have the paper's size `d_model // num_heads`.

    Args:
        d_model: D, the width of the input and output.
        num_heads: H; must divide `d_model`.
        dff: inner width of the feed-forward network.
        dropout: residual dropout rate (on each sub-layer's output).
        norm_first: pre-LN instead of the paper's post-LN.
        layer_norm_epsilon: epsilon of the layer normalisations.
        activation: activation of the feed-forward network.
        attention_dropout: dropout on the attention weights (0 in the paper,
            which lets the backend use its fused attention kernel).
        **kwargs: base `Layer` arguments.

    Call arguments:
        x: `[B, S, D]`.
        padding_mask: bool `[B, S]`, True on real tokens. When not given, the
            Keras mask of `x` (e.g. from `TokenAndPositionEmbedding`) is used.
        attention_mask: bool `[S, S]` or `[B, S, S]`, True = may attend,
            ANDed with the padding mask.
        training: whether dropout is active.
        return_attention_scores: also return the weights `[B, H, S, S]`.

    Returns:
        `[B, S, D]` (carrying `x`'s Keras mask), and the weights if asked for.

    Example:

    >>> from tf_transformer.layers import TokenAndPositionEmbedding
    >>> tokens = np.array([[4, 8, 15, 0]])
    >>> x = TokenAndPositionEmbedding(100, 16, max_length=8)(tokens)
    >>> tuple(EncoderBlock(d_model=16, num_heads=2, dff=32)(x).shape)
    (1, 4, 16)
    """

    def __init__(self, d_model, num_heads, dff, **kwargs):
        super().__init__(d_model, num_heads, dff, **kwargs)
        self.self_attention = self._attention("self_attention")
        self.self_attention_norm = self._layer_norm("self_attention_norm")

    def build(self, x_shape):
        self._check_width(x_shape)
        self.self_attention.build(x_shape, x_shape)
        self.self_attention_norm.build(x_shape)
        self.feed_forward.build(x_shape)
        self.feed_forward_norm.build(x_shape)

    def call(
        self,
        x,
        padding_mask=None,
        attention_mask=None,
        training=None,
        return_attention_scores=False,
        mask=None,
    ):
        padding_mask = first_given(padding_mask, mask)

        def attend(h):
            result = self.self_attention(
                h, h,
                query_mask=padding_mask,
                value_mask=padding_mask,
                attention_mask=attention_mask,
                return_attention_scores=return_attention_scores,
                training=training,
            )
            return result if return_attention_scores else (result, None)

        x, scores = self._residual(x, self.self_attention_norm, attend, training)
        x = self._feed_forward(x, training)
        return (x, scores) if return_attention_scores else x
