"""The Transformer's layers, each usable in any Keras model."""

from tf_transformer.layers.decoder import Decoder
from tf_transformer.layers.decoder_block import DecoderBlock
from tf_transformer.layers.dropout import Dropout
from tf_transformer.layers.encoder import Encoder
from tf_transformer.layers.encoder_block import EncoderBlock
from tf_transformer.layers.feed_forward import FeedForward
from tf_transformer.layers.layer_normalization import LayerNormalization
from tf_transformer.layers.multi_head_attention import MultiHeadAttention
from tf_transformer.layers.positional_encoding import PositionalEncoding, positional_encoding
from tf_transformer.layers.scaled_dot_product_attention import scaled_dot_product_attention
from tf_transformer.layers.self_attention import SelfAttention
from tf_transformer.layers.token_and_position_embedding import TokenAndPositionEmbedding

__all__ = [
    "Decoder",
    "DecoderBlock",
    "Dropout",
    "Encoder",
    "EncoderBlock",
    "FeedForward",
    "LayerNormalization",
    "MultiHeadAttention",
    "PositionalEncoding",
    "SelfAttention",
    "TokenAndPositionEmbedding",
    "positional_encoding",
    "scaled_dot_product_attention",
]
