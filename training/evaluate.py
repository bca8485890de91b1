"""Held-out metrics: exact match and character error rate (dates), BLEU and chrF (text)."""

import sacrebleu
import tensorflow as tf


def exact_match(hypotheses, references):
    return sum(h == r for h, r in zip(hypotheses, references)) / max(len(references), 1)


def character_error_rate(hypotheses, references):
    """Character edit distance / reference characters, with TensorFlow's edit distance."""
    hypothesis = tf.strings.unicode_split(tf.constant(hypotheses, tf.string), "UTF-8").to_sparse()
    reference = tf.strings.unicode_split(tf.constant(references, tf.string), "UTF-8").to_sparse()
    edits = tf.reduce_sum(tf.edit_distance(hypothesis, reference, normalize=False))
    return float(edits) / max(sum(len(r) for r in references), 1)


def text_metrics(hypotheses, references):
    """Corpus sacreBLEU (cased, 13a tokenisation) and chrF on detokenised text."""
    return {
        "bleu": round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2),
    }


def evaluate(kind, hypotheses, references):
    metrics = {"examples": len(references), "exact_match": round(exact_match(hypotheses, references), 5)}
    if kind == "dates":
        metrics["character_error_rate"] = round(character_error_rate(hypotheses, references), 5)
    else:
        metrics.update(text_metrics(hypotheses, references))
    return metrics
