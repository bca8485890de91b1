"""The encoder: token and position embedding, then N encoder blocks.

We use the notation B batch, S source length, D model width (d_model),
H heads.
"""

import keras

from tf_transformer import masks
from tf_transformer.layers.encoder_block import EncoderBlock
from tf_transformer.layers.stack import TransformerStack


@keras.saving.register_keras_serializable(package="tf_transformer")
class Encoder(TransformerStack):
    """The Transformer encoder (the paper's left half), as built in the course.

    `TokenAndPositionEmbedding` (× √d_model + sinusoids), dropout, then
    `num_layers` `EncoderBlock`s; pre-LN stacks (`norm_first=True`) end with
    a final layer normalisation. Padding (id 0) is masked throughout, and the
    output carries the padding mask as its Keras mask, so a `Decoder` (or
    any mask-aware Keras layer) placed after it ignores padded positions.

    Args:
        num_layers: N, the number of blocks.
        d_model, num_heads, dff: as for `EncoderBlock`.
        vocab_size: source vocabulary size.
        max_length: the longest source sequence.
        dropout: as for `EncoderBlock`, and on the embeddings.
        **kwargs: the blocks' other arguments (`norm_first`,
            `layer_norm_epsilon`, `activation`, `attention_dropout`: as for
            `EncoderBlock`), and base `Layer` arguments.

    Call arguments:
        tokens: int `[B, S]`, 0 = padding.
        training: whether dropout is active.
        return_attention_scores: also return a list of `[B, H, S, S]`.

    Returns:
        `[B, S, D]`, and the scores if asked for.

    Example:

    >>> encoder = Encoder(num_layers=2, d_model=16, num_heads=2, dff=32,
    ...                   vocab_size=100, max_length=10)
    >>> tuple(encoder(np.array([[3, 9, 4, 0]])).shape)
    (1, 4, 16)
    """

    block_class = EncoderBlock

    def build(self, tokens_shape):
        self.embedding.build(tokens_shape)
        x_shape = tuple(tokens_shape) + (self.block_config["d_model"],)
        for block in self.blocks:
            block.build(x_shape)
        if self.final_norm is not None:
            self.final_norm.build(x_shape)

    def call(self, tokens, training=None, return_attention_scores=False):
        padding_mask = masks.padding_mask(tokens)
        x = self.embedding_dropout(self.embedding(tokens), training=training)  # the paper drops out embeddings + PE
        scores = []
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask, training=training, return_attention_scores=return_attention_scores)
            if return_attention_scores:
                x, block_scores = x
                scores.append(block_scores)
        x = self._finish(x)
        return (x, scores) if return_attention_scores else x

    def compute_mask(self, tokens, mask=None):
        return masks.padding_mask(tokens)
