"""The CTranslate2 conversion: the same weights give the same log-probabilities and translations as the SavedModel."""

import os

import numpy as np
import pytest
import tensorflow as tf

ctranslate2 = pytest.importorskip("ctranslate2")
sentencepiece = pytest.importorskip("sentencepiece")

from conftest import TATOEBA  # noqa: E402
from tf_transformer import Transformer, TransformerConfig  # noqa: E402
from tf_transformer.export import export  # noqa: E402
from tf_transformer.special_tokens import END, START  # noqa: E402
from tf_transformer.tokenizers import SentencePieceTokenizer  # noqa: E402
from training import export_ctranslate2  # noqa: E402


def pairs(count=600):
    with open(TATOEBA, encoding="utf-8") as file:
        rows = [line.rstrip("\n").split("\t") for line in file if "\t" in line][:count]
    return [r[1] for r in rows], [r[0] for r in rows]  # French → English


@pytest.mark.parametrize("norm_first, shared", [(False, False), (True, True)], ids=["post-LN", "pre-LN-shared-tied"])
def test_converted_model_scores_and_translates_as_the_saved_model(tmp_path, norm_first, shared):
    sources, targets = pairs()
    if shared:
        source_tokenizer = target_tokenizer = SentencePieceTokenizer.train(sources + targets, 500)
    else:
        source_tokenizer = SentencePieceTokenizer.train(sources, 400)
        target_tokenizer = SentencePieceTokenizer.train(targets, 400)
    config = TransformerConfig.preset(
        "tiny", source_vocab_size=source_tokenizer.vocab_size, target_vocab_size=target_tokenizer.vocab_size,
        max_length=32, norm_first=norm_first, share_embeddings=shared, tie_output_embedding=shared)
    model = Transformer(config)
    path = export(model, source_tokenizer, target_tokenizer, str(tmp_path / "export"))
    output = export_ctranslate2.convert(str(tmp_path / "export"), str(tmp_path / "ct2"))
    assert {"model.bin", "source.model", "target.model"} <= set(os.listdir(output))
    translator = ctranslate2.Translator(output, device="cpu")
    source_sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(output, "source.model"))
    target_sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(output, "target.model"))

    # Teacher-forced log-probabilities of given translations (end token included), ours against CTranslate2's.
    texts, references = sources[100:106], targets[100:106]
    scored = translator.score_batch([source_sp.encode(t, out_type=str) for t in texts],
                                    [target_sp.encode(t, out_type=str) for t in references])
    for text, reference, result in zip(texts, references, scored):
        source_ids = np.array([source_tokenizer.tokenize(tf.constant([text])).to_list()[0]], "int32")
        target_ids = target_tokenizer.tokenize(tf.constant([reference])).to_list()[0]
        logits = model({"encoder_tokens": source_ids, "decoder_tokens": np.array([[START] + target_ids], "int32")})
        log_probs = tf.nn.log_softmax(tf.cast(logits[0], tf.float32)).numpy()
        ours = log_probs[np.arange(len(target_ids) + 1), target_ids + [END]]
        np.testing.assert_allclose(result.log_probs, ours, atol=2e-4, rtol=1e-4)

    # And the same strings as the SavedModel's greedy signature.
    import tensorflow_text  # noqa: F401

    texts = sources[200:216]
    served = tf.saved_model.load(path).signatures["serving_default"](text=tf.constant(texts))["translation"].numpy()
    results = translator.translate_batch([source_sp.encode(t, out_type=str) for t in texts], beam_size=1,
                                         max_decoding_length=config.max_length - 1)
    assert [target_sp.decode(r.hypotheses[0]) for r in results] == [t.decode("utf-8") for t in served]


@pytest.mark.slow
def test_character_exports_are_refused_with_the_reason(cli_dates_export, tmp_path):
    export_dir, _ = cli_dates_export
    with pytest.raises(SystemExit, match="character \\(dates\\) export"):
        export_ctranslate2.convert(export_dir, str(tmp_path / "ct2"))
