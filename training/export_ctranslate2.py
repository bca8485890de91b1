"""Convert an export to a CTranslate2 model: the same weights, for CTranslate2's CPU and GPU runtime.

    python -m training.export_ctranslate2 saved_models/NAME[/VERSION] --output DIR [--quantization int8]

Reads the export's `assets.extra/model.keras` and SentencePiece models and
describes the model with CTranslate2's own `TransformerSpec` (post-LN as the
paper, or pre-LN with its final norms; sinusoids as our table, embeddings
scaled by √d_model, shared and tied embeddings as trained), then lets
CTranslate2's converter validate, quantise and write it. The SentencePiece
models go beside it as `DIR/source.model` and `DIR/target.model`, as
CTranslate2 users expect:

    import ctranslate2, sentencepiece
    source = sentencepiece.SentencePieceProcessor(model_file="DIR/source.model")
    target = sentencepiece.SentencePieceProcessor(model_file="DIR/target.model")
    translator = ctranslate2.Translator("DIR", device="cpu")
    results = translator.translate_batch([source.encode("Je t'aime.", out_type=str)], beam_size=4)
    print(target.decode(results[0].hypotheses[0]))

Character (dates) exports are refused: their source side is folded (case,
commas, spaces) and their answers checked against the calendar inside the
SavedModel's graph, which a CTranslate2 model cannot hold, so its strings
would differ from the export's.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "decoder_start_token": "<s>"}


def _linear(spec, kernel, bias=None):
    """A CTranslate2 `LinearSpec` from a Keras kernel `[in, out]` (CTranslate2 keeps `[out, in]`)."""
    spec.weight = np.ascontiguousarray(np.asarray(kernel, np.float32).T)
    if bias is not None:
        spec.bias = np.asarray(bias, np.float32)


def _norm(spec, layer):
    spec.gamma = np.asarray(layer.gamma, np.float32)
    spec.beta = np.asarray(layer.beta, np.float32)


def _attention(spec, layer, fused_self):
    """Our `MultiHeadAttention` (Keras's layout: kernels `[D, H, d_head]`, output `[H, d_head, D]`) as CTranslate2's.

    Self-attention has one fused query-key-value projection; cross-attention
    a query projection and a fused key-value one.
    """

    def kernel(name):
        value = np.asarray(getattr(layer, name + "_kernel"), np.float32)
        return value.reshape(value.shape[0], -1)  # [D, H·d_head]: heads are contiguous blocks, as CTranslate2 splits them

    def bias(name):
        value = getattr(layer, name + "_bias")
        width = np.asarray(getattr(layer, name + "_kernel")).shape
        return np.zeros(width[1] * width[2], np.float32) if value is None else np.asarray(value, np.float32).reshape(-1)

    if fused_self:
        _linear(spec.linear[0], np.concatenate([kernel(n) for n in ("query", "key", "value")], axis=1),
                np.concatenate([bias(n) for n in ("query", "key", "value")]))
        output = spec.linear[1]
    else:
        _linear(spec.linear[0], kernel("query"), bias("query"))
        _linear(spec.linear[1], np.concatenate([kernel("key"), kernel("value")], axis=1),
                np.concatenate([bias("key"), bias("value")]))
        output = spec.linear[2]
    out_kernel = np.asarray(layer.output_kernel, np.float32)
    _linear(output, out_kernel.reshape(-1, out_kernel.shape[-1]), layer.output_bias)


def _feed_forward(spec, block):
    ffn = block.feed_forward
    _linear(spec.linear_0, ffn.inner_dense.kernel, ffn.inner_dense.bias)
    _linear(spec.linear_1, ffn.output_dense.kernel, ffn.output_dense.bias)
    _norm(spec.layer_norm, block.feed_forward_norm)


def transformer_spec(model, source_vocabulary, target_vocabulary):
    """CTranslate2's `TransformerSpec` of a `tf_transformer.Transformer`, holding its weights (float32)."""
    import ctranslate2
    from ctranslate2.specs import common_spec, transformer_spec as specs

    from tf_transformer.layers.positional_encoding import positional_encoding

    config = model.config
    activations = {"relu": common_spec.Activation.RELU, "gelu": common_spec.Activation.GELU}
    if config.activation not in activations:
        raise ValueError(f"CTranslate2 has no {config.activation!r} feed-forward activation here (relu, gelu).")
    spec = specs.TransformerSpec.from_config(
        config.num_layers, config.num_heads, pre_norm=config.norm_first, activation=activations[config.activation])
    encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
    # Our table (sines on even, cosines on odd dimensions), not CTranslate2's default (halves).
    table = np.asarray(positional_encoding(config.max_length, config.d_model), np.float32)
    for side_spec, side in ((spec.encoder, encoder), (spec.decoder, decoder)):
        embeddings = side_spec.embeddings[0] if isinstance(side_spec.embeddings, list) else side_spec.embeddings
        embeddings.weight = np.asarray(side.embedding.embeddings, np.float32)
        side_spec.scale_embeddings = True  # × √d_model, as TokenAndPositionEmbedding
        side_spec.position_encodings.encodings = table
        if config.norm_first:
            _norm(side_spec.layer_norm, side.final_norm)
    for layer_spec, block in zip(spec.encoder.layer, encoder.blocks):
        _attention(layer_spec.self_attention, block.self_attention, fused_self=True)
        _norm(layer_spec.self_attention.layer_norm, block.self_attention_norm)
        _feed_forward(layer_spec.ffn, block)
    for layer_spec, block in zip(spec.decoder.layer, decoder.blocks):
        _attention(layer_spec.self_attention, block.self_attention, fused_self=True)
        _norm(layer_spec.self_attention.layer_norm, block.self_attention_norm)
        _attention(layer_spec.attention, block.cross_attention, fused_self=False)
        _norm(layer_spec.attention.layer_norm, block.cross_attention_norm)
        _feed_forward(layer_spec.ffn, block)
    if config.tie_output_embedding:
        _linear(spec.decoder.projection, np.asarray(decoder.embedding.embeddings, np.float32).T)
    else:
        projection = model.get_layer("output_projection")
        _linear(spec.decoder.projection, projection.kernel, projection.bias)
    spec.config.layer_norm_epsilon = float(config.layer_norm_epsilon)
    for name, token in SPECIAL_TOKENS.items():
        setattr(spec.config, name, token)
    spec.register_source_vocabulary(source_vocabulary)
    spec.register_target_vocabulary(target_vocabulary)
    del ctranslate2
    return spec


def _pieces(model_file):
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=model_file)
    return [processor.id_to_piece(i) for i in range(processor.get_piece_size())]


def convert(export_path, output_dir, quantization=None, force=False):
    """Writes the CTranslate2 model of an export (its newest version when given the model's directory); returns `output_dir`."""
    import ctranslate2
    import keras

    import tf_transformer  # noqa: F401  registers the layers model.keras is made of
    from tf_transformer.export import latest_version
    from tf_transformer.special_tokens import END, PAD, START, UNK

    version = latest_version(export_path)
    extra = os.path.join(version, "assets.extra")
    with open(os.path.join(extra, "tokenizers.json"), encoding="utf-8") as file:
        index = json.load(file)
    if any(index[role]["kind"] != "sentencepiece" for role in ("source", "target")):
        raise SystemExit(f"{version} is a character (dates) export: its folding and calendar check live in the "
                         "SavedModel's graph, which CTranslate2 cannot hold; only SentencePiece exports convert.")
    files = {role: os.path.join(extra, index[role]["file"]) for role in ("source", "target")}
    vocabularies = {role: _pieces(path) for role, path in files.items()}
    for role, pieces in vocabularies.items():  # the ids our decoding reserves, under the names CTranslate2 looks for
        expected = {PAD: "<pad>", START: "<s>", END: "</s>", UNK: "<unk>"}
        if any(pieces[i] != piece for i, piece in expected.items()):
            raise SystemExit(f"The {role} vocabulary's reserved pieces are {pieces[:4]}, not <pad> <s> </s> <unk>.")
    model = keras.saving.load_model(os.path.join(extra, "model.keras"), compile=False)

    class _Converter(ctranslate2.converters.Converter):
        def _load(self):
            return transformer_spec(model, vocabularies["source"], vocabularies["target"])

    _Converter().convert(output_dir, quantization=quantization, force=force)
    for role, path in files.items():
        shutil.copyfile(path, os.path.join(output_dir, f"{role}.model"))
    return output_dir


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.export_ctranslate2", description=__doc__.splitlines()[0])
    parser.add_argument("export", help="an export directory (its newest version is used) or one version")
    parser.add_argument("--output", required=True, help="the CTranslate2 model directory to write")
    parser.add_argument("--quantization", choices=["int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                                                   "float16", "bfloat16", "float32"],
                        help="weight type (default: float32, as trained)")
    parser.add_argument("--force", action="store_true", help="replace OUTPUT if it exists")
    args = parser.parse_args(argv)
    try:
        path = convert(args.export, args.output, args.quantization, args.force)
    except (FileNotFoundError, RuntimeError) as error:
        raise SystemExit(str(error)) from None
    print(f"Wrote {path} (source.model and target.model beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
