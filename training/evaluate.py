"""Held-out metrics, measured where users meet the model: through the export reloaded in a fresh process.

Exact match and character error rate for dates; sacreBLEU and chrF (with
their signatures) for text.
"""

import json
import os
import subprocess
import sys
import tempfile

import sacrebleu
import tensorflow as tf

RELOADED_EXPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reloaded_export.py")


def translate_all(translate, texts, batch_size=256):
    """`translate` (a signature function: `text` in, `translation` out) over `texts` in batches, as strings."""
    outputs = []
    for start in range(0, len(texts), batch_size):
        batch = tf.constant(list(texts[start : start + batch_size]), tf.string)
        outputs += [t.decode("utf-8") for t in translate(text=batch)["translation"].numpy()]
    return outputs


def exact_match(hypotheses, references):
    return sum(h == r for h, r in zip(hypotheses, references)) / max(len(references), 1)


def character_error_rate(hypotheses, references):
    """Character edit distance / reference characters, with TensorFlow's edit distance."""
    hypothesis = tf.strings.unicode_split(tf.constant(hypotheses, tf.string), "UTF-8").to_sparse()
    reference = tf.strings.unicode_split(tf.constant(references, tf.string), "UTF-8").to_sparse()
    edits = tf.reduce_sum(tf.edit_distance(hypothesis, reference, normalize=False))
    return float(edits) / max(sum(len(r) for r in references), 1)


def text_metrics(hypotheses, references):
    """Corpus sacreBLEU (cased, 13a tokenisation) and chrF on detokenised text, with their signatures."""
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    return {
        "bleu": round(bleu.corpus_score(hypotheses, [references]).score, 2),
        "chrf": round(chrf.corpus_score(hypotheses, [references]).score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def evaluate(kind, hypotheses, references):
    metrics = {"examples": len(references), "exact_match": round(exact_match(hypotheses, references), 5)}
    if kind == "dates":
        metrics["character_error_rate"] = round(character_error_rate(hypotheses, references), 5)
        metrics["answered_empty"] = sum(h == "" and r != "" for h, r in zip(hypotheses, references))
    else:
        metrics.update(text_metrics(hypotheses, references))
    return metrics


def split_outputs(sets, outputs):
    """`outputs` of the concatenated sources of `sets` (name → (sources, references)), back per set."""
    result, start = {}, 0
    for name, (sources, references) in sets.items():
        result[name] = (sources, references, outputs[start : start + len(sources)])
        start += len(sources)
    return result


def held_out_sets(splits):
    """Per set of `split_outputs`: exact match and empty answers on dates; the rate of empty answers ("rejected") on non-dates."""
    metrics = {}
    for name, (_, references, hypotheses) in splits.items():
        empty = sum(h == "" for h in hypotheses)
        if all(r == "" for r in references):
            metrics[name] = {"examples": len(references), "rejected": round(empty / max(len(references), 1), 5)}
        else:
            metrics[name] = {"examples": len(references), "exact_match": round(exact_match(hypotheses, references), 5),
                             "answered_empty": empty}
    return metrics


def summary_table(metrics, beam_size=4):
    """The held-out figures as a short table, one row per set (the full record stays in evaluation.json).

    Columns: examples; exact match, or for text BLEU and chrF; answers left
    empty (for non-date sets, the share rightly refused).
    """
    text = "bleu" in metrics
    header = f"  {'set':<34}{'examples':>9}" + (f"{'BLEU':>8}{'chrF':>8}" if text else f"{'exact':>9}{'empty':>7}")

    def row(name, figures):
        if text:
            return f"  {name:<34}{figures['examples']:>9,}{figures['bleu']:>8.1f}{figures['chrf']:>8.1f}"
        if "rejected" in figures:
            return f"  {name:<34}{figures['examples']:>9,}{'':>9}{100 * figures['rejected']:>6.1f}% refused"
        return (f"  {name:<34}{figures['examples']:>9,}{100 * figures['exact_match']:>8.2f}%"
                f"{figures.get('answered_empty', 0):>7}")

    rows = [header, row("test, greedy", metrics)]
    if "beam_search" in metrics:
        rows.append(row(f"test, beam {beam_size}", metrics["beam_search"]))
    if "without_averaging" in metrics:
        rows.append(row(f"test, epoch {metrics['without_averaging']['kept_epoch']} alone (in process)",
                        metrics["without_averaging"]))
    for name, figures in metrics.get("held_out", {}).items():
        rows.append(row(name.replace("_", " "), figures))
    return "\n".join(rows)


def translate_reloaded(saved_model_dir, request, timeout=3600):
    """Runs `training/reloaded_export.py` on an export in a fresh process and returns its result.

    `request` is `{loader: {signature: [texts]}}` (that script says which
    loaders); the fresh process cannot import `tf_transformer` or `training`.
    """
    with tempfile.TemporaryDirectory(prefix="reloaded-") as directory:
        request_path, result_path = os.path.join(directory, "request.json"), os.path.join(directory, "result.json")
        with open(request_path, "w", encoding="utf-8") as file:
            json.dump(request, file, ensure_ascii=False)
        process = subprocess.run(
            [sys.executable, RELOADED_EXPORT, saved_model_dir, request_path, result_path],
            capture_output=True, text=True, timeout=timeout,
        )
        if process.returncode != 0:
            raise RuntimeError(
                f"The export {saved_model_dir} failed when reloaded in a fresh process:\n{process.stderr[-4000:]}"
            )
        with open(result_path, encoding="utf-8") as file:
            return json.load(file)
