"""The encoder–decoder Transformer as a functional `keras.Model`.

We use the notation B batch, S source length, T target length, D d_model,
V target vocabulary size, H heads.
"""

import dataclasses
import re

import keras
from keras import ops

from tf_transformer.config import TransformerConfig
from tf_transformer.layers.decoder import run_decoder
from tf_transformer.layers.decoder_block import DecoderBlock
from tf_transformer.layers.dropout import Dropout
from tf_transformer.layers.encoder import run_encoder
from tf_transformer.layers.encoder_block import EncoderBlock
from tf_transformer.layers.layer_normalization import LayerNormalization
from tf_transformer.layers.token_and_position_embedding import TokenAndPositionEmbedding


@dataclasses.dataclass
class TransformerParts:
    """The layers of a model built by `build_transformer`, found by name.

    Decoding and attention plots run the same layers step by step, so they
    need them individually; `from_model` finds them in a freshly built or a
    reloaded model alike.
    """

    source_embedding: TokenAndPositionEmbedding
    target_embedding: TokenAndPositionEmbedding
    embedding_dropout: keras.layers.Dropout
    encoder_blocks: list
    decoder_blocks: list
    encoder_norm: keras.layers.Layer | None
    decoder_norm: keras.layers.Layer | None
    output_projection: keras.layers.Dense | None  # None: tied to target_embedding
    logits_cast: keras.layers.Layer

    @classmethod
    def create(cls, config):
        def embedding(vocab_size, name):
            return TokenAndPositionEmbedding(vocab_size, config.d_model, config.max_length, name=name)

        def blocks(block_class, prefix):
            return [
                block_class(
                    config.d_model,
                    config.num_heads,
                    config.dff,
                    dropout=config.dropout,
                    norm_first=config.norm_first,
                    layer_norm_epsilon=config.layer_norm_epsilon,
                    activation=config.activation,
                    attention_dropout=config.attention_dropout,
                    name=f"{prefix}_{i}",
                )
                for i in range(config.num_layers)
            ]

        def final_norm(name):
            if not config.norm_first:
                return None
            return LayerNormalization(epsilon=config.layer_norm_epsilon, name=name)

        if config.share_embeddings:
            source = target = embedding(config.source_vocab_size, "shared_embedding")
        else:
            source = embedding(config.source_vocab_size, "source_embedding")
            target = embedding(config.target_vocab_size, "target_embedding")
        return cls(
            source_embedding=source,
            target_embedding=target,
            embedding_dropout=Dropout(config.dropout, name="embedding_dropout"),
            encoder_blocks=blocks(EncoderBlock, "encoder_block"),
            decoder_blocks=blocks(DecoderBlock, "decoder_block"),
            encoder_norm=final_norm("encoder_norm"),
            decoder_norm=final_norm("decoder_norm"),
            output_projection=(
                None if config.tie_output_embedding else keras.layers.Dense(config.target_vocab_size, name="output_projection")
            ),
            # Logits leave the model in the compute dtype: a float32 copy of a
            # bfloat16 matmul adds no precision, and at a 32k vocabulary it
            # costs gigabytes a step. The softmax runs in float32 where it is
            # taken (the loss, `decoding`).
            logits_cast=keras.layers.Activation("linear", name="logits"),
        )

    @classmethod
    def from_model(cls, model):
        layers = {layer.name: layer for layer in model.layers}

        def numbered(prefix):
            pattern = re.compile(rf"{prefix}_(\d+)")
            matches = [(pattern.fullmatch(name), layer) for name, layer in layers.items()]
            found = sorted((int(match.group(1)), layer) for match, layer in matches if match)
            return [layer for _, layer in found]

        try:
            shared = layers.get("shared_embedding")
            return cls(
                source_embedding=shared or layers["source_embedding"],
                target_embedding=shared or layers["target_embedding"],
                embedding_dropout=layers["embedding_dropout"],
                encoder_blocks=numbered("encoder_block"),
                decoder_blocks=numbered("decoder_block"),
                encoder_norm=layers.get("encoder_norm"),
                decoder_norm=layers.get("decoder_norm"),
                output_projection=layers.get("output_projection"),
                logits_cast=layers["logits"],
            )
        except KeyError as error:
            raise ValueError(
                f"Model {model.name!r} was not built by `build_transformer`: it has no layer {error}."
            ) from None

    @property
    def max_length(self):
        return self.target_embedding.max_length

    def encode(self, encoder_tokens, training=None, return_attention_scores=False):
        """`(context [B, S, D], context_padding_mask [B, S], scores)`."""
        return run_encoder(
            self.source_embedding, self.embedding_dropout, self.encoder_blocks, self.encoder_norm,
            encoder_tokens, training, return_attention_scores,
        )

    def decode(self, decoder_tokens, context, context_padding_mask, training=None, return_attention_scores=False):
        """`(hidden [B, T, D], scores)`."""
        return run_decoder(
            self.target_embedding, self.embedding_dropout, self.decoder_blocks, self.decoder_norm,
            decoder_tokens, context, context_padding_mask, training, return_attention_scores,
        )

    def logits(self, hidden):
        """`[B, T, D]` → logits `[B, T, V]` in the compute dtype."""
        if self.output_projection is None:
            logits = self.target_embedding(hidden, reverse=True)  # the paper's tied projection
        else:
            logits = self.output_projection(hidden)
        return self.logits_cast(logits)

    def initial_cache(self, context, max_length):
        """One cache per decoder block (see `DecoderBlock.initial_cache`)."""
        batch_size = ops.shape(context)[0]
        return [block.initial_cache(batch_size, max_length, context) for block in self.decoder_blocks]

    def decode_step(self, tokens, index, cache, context, context_padding_mask):
        """Logits `[B, 1, V]` for `tokens` `[B, 1]` at position `index`, and the new cache."""
        x = self.target_embedding(tokens, start_index=index)
        new_cache = []
        for block, block_cache in zip(self.decoder_blocks, cache):
            x, block_cache = block(
                x, context,
                context_padding_mask=context_padding_mask,
                cache=block_cache,
                cache_update_index=index,
            )
            new_cache.append(block_cache)
        if self.decoder_norm is not None:
            x = self.decoder_norm(x)
        return self.logits(x), new_cache


def build_transformer(config=None):
    """Builds the encoder–decoder Transformer of "Attention Is All You Need".

    Args:
        config: a `TransformerConfig` (defaults to the paper's base model).

    Returns:
        A functional `keras.Model` with int32 inputs `encoder_tokens` `[B, S]`
        and `decoder_tokens` `[B, T]` (call it with a dict keyed by those
        names; 0 = padding) and logits `[B, T, target_vocab_size]` in the
        compute dtype (bfloat16 under `mixed_bfloat16`: take the softmax in
        float32, as `recipe`'s loss and `decoding` do).
        The inputs are cast to int32, so float ids are not caught there; see
        `TokenAndPositionEmbedding` for the checks on ids and lengths.

    Example:

    >>> model = build_transformer(TransformerConfig.preset("tiny", source_vocab_size=100, target_vocab_size=90))
    >>> logits = model({"encoder_tokens": np.array([[5, 6, 7, 0]]),
    ...                 "decoder_tokens": np.array([[1, 8, 9]])})
    >>> logits.shape
    (1, 3, 90)
    """
    config = TransformerConfig() if config is None else config
    if not isinstance(config, TransformerConfig):
        raise ValueError(f"`config` must be a TransformerConfig. Received: {type(config).__name__}")

    # Layers.
    parts = TransformerParts.create(config)

    # Graph.
    encoder_tokens = keras.Input(shape=(None,), dtype="int32", name="encoder_tokens")
    decoder_tokens = keras.Input(shape=(None,), dtype="int32", name="decoder_tokens")
    context, context_padding_mask, _ = parts.encode(encoder_tokens)
    hidden, _ = parts.decode(decoder_tokens, context, context_padding_mask)
    logits = parts.logits(hidden)

    return keras.Model(
        inputs={"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens},
        outputs=logits,
        name="transformer",
    )


def attention_weights(model, encoder_tokens, decoder_tokens):
    """Every attention layer's weights, for plots and inspection.

    Args:
        model: a model from `build_transformer` (fresh or reloaded).
        encoder_tokens: int `[B, S]`.
        decoder_tokens: int `[B, T]`.

    Returns:
        dict with `"encoder"`: a list (one per block) of `[B, H, S, S]`,
        `"decoder_self"`: `[B, H, T, T]` per block and `"decoder_cross"`:
        `[B, H, T, S]` per block.
    """
    parts = TransformerParts.from_model(model)
    context, context_padding_mask, encoder_scores = parts.encode(encoder_tokens, return_attention_scores=True)
    _, decoder_scores = parts.decode(decoder_tokens, context, context_padding_mask, return_attention_scores=True)
    return {
        "encoder": encoder_scores,
        "decoder_self": [scores["self"] for scores in decoder_scores],
        "decoder_cross": [scores["cross"] for scores in decoder_scores],
    }


__all__ = ["build_transformer", "attention_weights", "TransformerParts"]
