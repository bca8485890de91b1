"""The decoder: token and position embedding, then N decoder blocks.

We use the notation B batch, T target length, S source length,
D model width (d_model), H heads.
"""

import keras

from tf_transformer import masks
from tf_transformer.layers.decoder_block import DecoderBlock
from tf_transformer.layers.encoder import Encoder
from tf_transformer.layers.transformer_block import first_given


def run_decoder(
    embedding,
    dropout,
    blocks,
    final_norm,
    tokens,
    context,
    context_padding_mask,
    training=None,
    return_attention_scores=False,
):
    """The decoder's computation, shared by `Decoder` and `build_transformer`.

    Returns:
        `(output [B, T, D], scores)`, `scores` a list of
        `{"self": [B, H, T, T], "cross": [B, H, T, S]}` per block.
    """
    padding_mask = masks.padding_mask(tokens)
    x = dropout(embedding(tokens), training=training)
    scores = []
    for block in blocks:
        x = block(
            x,
            context,
            padding_mask=padding_mask,
            context_padding_mask=context_padding_mask,
            training=training,
            return_attention_scores=return_attention_scores,
        )
        if return_attention_scores:
            x, block_scores = x
            scores.append(block_scores)
    if final_norm is not None:
        x = final_norm(x)
    return x, scores


@keras.saving.register_keras_serializable(package="tf_transformer")
class Decoder(Encoder):
    """The Transformer decoder (the paper's right half), without the final projection.

    `TokenAndPositionEmbedding`, dropout, then `num_layers` `DecoderBlock`s
    attending causally to the target and to the encoder output; pre-LN stacks
    end with a final layer normalisation. It takes the same arguments as
    `Encoder` (and shares its bookkeeping); project its output onto the
    vocabulary with a `Dense` layer, or with the embedding in reverse.

    Args:
        Same as `Encoder`; `vocab_size` is the target vocabulary.

    Call arguments:
        tokens: int `[B, T]`, 0 = padding.
        context: `[B, S, D]`, the encoder output.
        context_padding_mask: bool `[B, S]`, True on real source tokens
            (defaults to `context`'s Keras mask, which `Encoder` sets).
        training: whether dropout is active.
        return_attention_scores: also return a list of
            `{"self": [B, H, T, T], "cross": [B, H, T, S]}`.

    Returns:
        `[B, T, D]`, and the scores if asked for.

    Example:

    >>> encoder = Encoder(2, 16, 2, 32, vocab_size=100, max_length=10)
    >>> decoder = Decoder(2, 16, 2, 32, vocab_size=80, max_length=10)
    >>> context = encoder(np.array([[3, 9, 4, 0]]))
    >>> decoder(np.array([[1, 7, 7]]), context).shape
    (1, 3, 16)
    """

    block_class = DecoderBlock

    def build(self, tokens_shape, context_shape):
        self._build_stack(tokens_shape, context_shape)

    def call(
        self,
        tokens,
        context,
        context_padding_mask=None,
        training=None,
        return_attention_scores=False,
        context_mask=None,
    ):
        x, scores = run_decoder(
            self.embedding, self.embedding_dropout, self.blocks, self.final_norm,
            tokens, context, first_given(context_padding_mask, context_mask),
            training, return_attention_scores,
        )
        return (x, scores) if return_attention_scores else x
