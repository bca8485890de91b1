"""The encoder–decoder Transformer: a functional `keras.Model` built from its config.

We use the notation B batch, S source length, T target length, D d_model,
V target vocabulary size, H heads, L decoding length.
"""

import keras

from tf_transformer import fast_paths, masks
from tf_transformer.config import TransformerConfig
from tf_transformer.layers.decoder import Decoder
from tf_transformer.layers.encoder import Encoder
from tf_transformer.layers.transformer_block import BLOCK_ARGUMENTS


@keras.saving.register_keras_serializable(package="tf_transformer")
class Transformer(keras.Model):
    """The encoder–decoder Transformer of "Attention Is All You Need".

    A functional model whose graph is built in `__init__` from a
    `TransformerConfig`, as KerasHub's backbones are: an `Encoder`, a
    `Decoder` (given the encoder's embedding when `share_embeddings`) and
    the output projection (a `Dense` layer, or the target embedding in
    reverse when `tie_output_embedding`). `model.config` is the config; it
    is all `get_config` keeps, so `from_config` and a `.keras` reload build
    the same model.

    Inputs: a dict with int32 `encoder_tokens` `[B, S]` and `decoder_tokens`
    `[B, T]` (0 = padding). Output: logits `[B, T, target_vocab_size]` in the
    compute dtype (bfloat16 under `mixed_bfloat16`: take the softmax in
    float32, as `losses` and `decoding` do). Functional inputs are cast
    to int32, so float ids are not caught here; see
    `TokenAndPositionEmbedding` for the checks on ids and lengths.

    For decoding, the pieces the model runs: `encode`, `initial_cache`,
    `decode_step` and `logits`; `generate` runs `decoding`'s greedy or beam
    search with them.

    Args:
        config: a `TransformerConfig` (default: the paper's base model).
        dtype: the dtype policy of every layer (default: Keras's global
            policy, e.g. `mixed_bfloat16`); kept by `get_config`.
        **kwargs: `keras.Model` arguments (`name`, `trainable`).

    Example:

    >>> import numpy as np
    >>> model = Transformer(TransformerConfig.preset("tiny", source_vocab_size=100, target_vocab_size=90))
    >>> logits = model({"encoder_tokens": np.array([[5, 6, 7, 0]]),
    ...                 "decoder_tokens": np.array([[1, 8, 9]])})
    >>> tuple(logits.shape)
    (1, 3, 90)
    >>> model.config.d_model
    64
    """

    def __init__(self, config=None, dtype=None, **kwargs):
        config = TransformerConfig() if config is None else config
        if not isinstance(config, TransformerConfig):
            raise ValueError(f"`config` must be a TransformerConfig. Received: {type(config).__name__}")
        kwargs.setdefault("name", "transformer")
        # Resolved now, so every layer and a reload get the policy of the model's creation.
        policy = keras.config.dtype_policy() if dtype is None else keras.dtype_policies.get(dtype)
        dtype = policy

        # === Layers ===
        stack = dict(
            num_layers=config.num_layers,
            max_length=config.max_length,
            **{name: getattr(config, name) for name in BLOCK_ARGUMENTS},
            dtype=dtype,
        )
        encoder = Encoder(vocab_size=config.source_vocab_size, name="encoder", **stack)
        decoder = Decoder(
            vocab_size=config.target_vocab_size,
            embedding=encoder.embedding if config.share_embeddings else None,
            name="decoder",
            **stack,
        )
        output_projection = (
            None if config.tie_output_embedding
            else fast_paths.TrainingMatmulDense(config.target_vocab_size, dtype=dtype, name="output_projection")
        )
        # Logits leave the model in the compute dtype: a float32 copy of a
        # bfloat16 matmul adds no precision, and at a 32k vocabulary it costs
        # gigabytes a step. The softmax runs in float32 where it is taken.
        logits_cast = keras.layers.Activation("linear", dtype=dtype, name="logits")

        # === Graph ===
        encoder_tokens = keras.Input(shape=(None,), dtype="int32", name="encoder_tokens")
        decoder_tokens = keras.Input(shape=(None,), dtype="int32", name="decoder_tokens")
        context = encoder(encoder_tokens)
        hidden = decoder(decoder_tokens, context, context_padding_mask=masks.padding_mask(encoder_tokens))
        projected = decoder.embedding(hidden, reverse=True) if output_projection is None else output_projection(hidden)
        super().__init__(
            inputs={"encoder_tokens": encoder_tokens, "decoder_tokens": decoder_tokens},
            outputs=logits_cast(projected),
            dtype=dtype,
            **kwargs,
        )

        # === Attributes ===
        self.config = config
        self.policy = policy
        self.encoder = encoder
        self.decoder = decoder
        self.output_projection = output_projection
        self.logits_cast = logits_cast

    @property
    def max_length(self):
        """The longest source or target sequence, in tokens."""
        return self.config.max_length

    def encode(self, encoder_tokens, training=False):
        """`(context [B, S, D], context_padding_mask [B, S])` of `encoder_tokens` `[B, S]`."""
        return self.encoder(encoder_tokens, training=training), masks.padding_mask(encoder_tokens)

    def initial_cache(self, context, max_length):
        """The `KVCache` for decoding up to `max_length` positions against `context`."""
        return self.decoder.initial_cache(context, max_length)

    def decode_step(self, tokens, index, cache, context_padding_mask):
        """Logits `[B, 1, V]` for `tokens` `[B, 1]` at position `index`, and the updated cache."""
        hidden, cache = self.decoder.decode_step(tokens, index, cache, context_padding_mask)
        return self.logits(hidden), cache

    def logits(self, hidden):
        """`[B, T, D]` → logits `[B, T, V]` in the compute dtype."""
        if self.output_projection is None:
            projected = self.decoder.embedding(hidden, reverse=True)  # the paper's tied projection
        else:
            projected = self.output_projection(hidden)
        return self.logits_cast(projected)

    def generate(self, encoder_tokens, start_id, end_id, max_length=None, beam_size=1, length_penalty=0.6,
                 num_hypotheses=1, return_scores=False, min_length=0, no_repeat_ngram_size=0, sampling=None):
        """Token ids `[B, ≤ max_length]` decoded from `encoder_tokens` with the key/value cache.

        Greedy search for `beam_size=1`, else beam search; with `sampling`
        (a dict of `decoding.sample`'s `temperature`, `top_k`, `top_p`,
        `seed`), sampling. `max_length` defaults to the model's. The other
        arguments are `decoding`'s: `num_hypotheses` (beam search's n-best,
        `[B, N, L]`), `return_scores` (then `(ids, scores)`), `min_length`
        and `no_repeat_ngram_size`.

        Example:

        >>> model = Transformer(TransformerConfig.preset("tiny", source_vocab_size=30, target_vocab_size=20))
        >>> ids = keras.ops.convert_to_numpy(model.generate(np.array([[5, 6, 7, 0]]), 1, 2, max_length=8, beam_size=2))
        >>> ids.shape[0], int(ids[0, 0])  # one output per source, starting with start_id
        (1, 1)
        >>> ids, scores = model.generate(np.array([[5, 6, 7, 0]]), 1, 2, max_length=8, beam_size=3, num_hypotheses=3,
        ...                              return_scores=True)
        >>> tuple(ids.shape), bool(np.all(np.diff(keras.ops.convert_to_numpy(scores)) <= 0))  # best first
        ((1, 3, 8), True)
        """
        from tf_transformer import decoding

        max_length = max_length or self.max_length
        controls = {"return_scores": return_scores, "min_length": min_length,
                    "no_repeat_ngram_size": no_repeat_ngram_size}
        if sampling is not None:
            if beam_size != 1 or num_hypotheses != 1:
                raise ValueError("Sampling draws one output per example: pass beam_size=1 and num_hypotheses=1 with it.")
            return decoding.sample(self, encoder_tokens, start_id, end_id, max_length, **sampling, **controls)
        if beam_size == 1 and num_hypotheses == 1:
            return decoding.greedy_search(self, encoder_tokens, start_id, end_id, max_length, **controls)
        return decoding.beam_search(self, encoder_tokens, start_id, end_id, max_length, beam_size, length_penalty,
                                    num_hypotheses=num_hypotheses, **controls)

    def score(self, encoder_tokens, decoder_tokens):
        """`decoding.score`: the log-probability of each given output's ids, `(per token [B, T - 1], sum [B])`."""
        from tf_transformer import decoding

        return decoding.score(self, encoder_tokens, decoder_tokens)

    def attention_weights(self, encoder_tokens, decoder_tokens):
        """Every attention layer's weights, for plots and inspection.

        Returns:
            dict with `"encoder"`: a list (one per block) of `[B, H, S, S]`,
            `"decoder_self"`: `[B, H, T, T]` per block and `"decoder_cross"`:
            `[B, H, T, S]` per block.
        """
        context, encoder_scores = self.encoder(encoder_tokens, return_attention_scores=True)
        _, decoder_scores = self.decoder(
            decoder_tokens, context, context_padding_mask=masks.padding_mask(encoder_tokens),
            return_attention_scores=True,
        )
        return {
            "encoder": encoder_scores,
            "decoder_self": [scores["self"] for scores in decoder_scores],
            "decoder_cross": [scores["cross"] for scores in decoder_scores],
        }

    def get_config(self):
        return {
            "config": self.config.to_dict(),
            "dtype": keras.dtype_policies.serialize(self.policy),
            "name": self.name,
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        model_config = TransformerConfig(**config.pop("config"))
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(model_config, **config)


def build_transformer(config=None):
    """`Transformer(config)`: the encoder–decoder model (default: the paper's base size).

    Example:

    >>> model = build_transformer(TransformerConfig.preset("tiny", source_vocab_size=100, target_vocab_size=90))
    >>> model.config == TransformerConfig.preset("tiny", source_vocab_size=100, target_vocab_size=90)
    True
    """
    return Transformer(config)


def attention_weights(model, encoder_tokens, decoder_tokens):
    """`model.attention_weights(encoder_tokens, decoder_tokens)` (kept for callers of the function).

    Example:

    >>> model = Transformer(TransformerConfig.preset("tiny", source_vocab_size=30, target_vocab_size=20))
    >>> weights = attention_weights(model, np.array([[5, 6, 7, 0]]), np.array([[1, 8, 9]]))
    >>> [tuple(w.shape) for w in weights["decoder_cross"]]  # per block: [B, H, T, S]
    [(1, 4, 3, 4), (1, 4, 3, 4)]
    """
    return model.attention_weights(encoder_tokens, decoder_tokens)


__all__ = ["Transformer", "build_transformer", "attention_weights"]
