"""`TransformerConfig`: the model's hyper-parameters, separate from training's."""

import dataclasses

from tf_transformer.checks import check_heads, check_positive_int, check_positive_number, check_rate


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Hyper-parameters of the encoder–decoder Transformer.

    The defaults are the paper's base model (Table 3, "base"), with a small
    vocabulary that tokenizers in this project usually replace; use
    `TransformerConfig.preset(name, **overrides)` for the named sizes.
    Every value is checked on creation, also through `dataclasses.replace`,
    and a bad one raises `ValueError` naming the field.

    Example:

    >>> config = TransformerConfig.preset("tiny", source_vocab_size=500)
    >>> dataclasses.replace(config, num_heads=3)  # 64 % 3 != 0
    Traceback (most recent call last):
    ValueError: `d_model` must be divisible by `num_heads` ...
    """

    num_layers: int = 6  # N: blocks in the encoder and in the decoder (paper: 6)
    d_model: int = 512  # width of every sub-layer's output (paper: 512)
    num_heads: int = 8  # H; each head has d_model // H dimensions (paper: 8)
    dff: int = 2048  # inner width of the feed-forward networks (paper: 2048)
    dropout: float = 0.1  # residual and embedding dropout (paper: 0.1)
    attention_dropout: float = 0.0  # on attention weights; the paper has none, and 0 allows fused kernels
    source_vocab_size: int = 8000  # set from the source tokenizer
    target_vocab_size: int = 8000  # set from the target tokenizer
    max_length: int = 128  # longest source or target sequence, in tokens
    norm_first: bool = False  # pre-LN; the paper is post-LN (False)
    layer_norm_epsilon: float = 1e-6
    activation: str = "relu"  # of the feed-forward networks (paper: ReLU)
    share_embeddings: bool = False  # one embedding for source and target (needs one shared vocabulary)
    tie_output_embedding: bool = False  # logits = hidden · Eᵀ of the target embedding (the paper ties both)

    def __post_init__(self):
        for name in ("num_layers", "d_model", "num_heads", "dff", "source_vocab_size", "target_vocab_size", "max_length"):
            check_positive_int(name, getattr(self, name))
        check_rate("dropout", self.dropout)
        check_rate("attention_dropout", self.attention_dropout)
        check_heads(self.d_model, self.num_heads)
        check_positive_number("layer_norm_epsilon", self.layer_norm_epsilon)
        for name in ("norm_first", "share_embeddings", "tie_output_embedding"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` must be True or False. Received: {name}={getattr(self, name)!r}")
        if self.share_embeddings and self.source_vocab_size != self.target_vocab_size:
            raise ValueError(
                "`share_embeddings=True` needs one vocabulary for source and target. Received: "
                f"source_vocab_size={self.source_vocab_size}, target_vocab_size={self.target_vocab_size}"
            )

    @classmethod
    def preset(cls, name, **overrides):
        """A named size, with any field overridden.

        `"tiny"` (tests and smoke runs), `"small"` (CPU-trainable in
        minutes), `"base"` and `"big"` (the paper's Table 3).
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown preset {name!r}. Choose one of: {', '.join(PRESETS)}")
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"Unknown TransformerConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self):
        return dataclasses.asdict(self)


PRESETS = {
    "tiny": dict(num_layers=2, d_model=64, num_heads=4, dff=128, max_length=64),
    "small": dict(num_layers=2, d_model=128, num_heads=4, dff=512, max_length=64),
    "base": dict(num_layers=6, d_model=512, num_heads=8, dff=2048, dropout=0.1),
    "big": dict(num_layers=6, d_model=1024, num_heads=16, dff=4096, dropout=0.3),
}
