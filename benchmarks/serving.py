"""What a request costs through the exported SavedModel, against the TF text tutorial's way of exporting the same weights.

    python -m benchmarks.serving [--dates saved_models/dates] [--text saved_models/tatoeba-eng-fra-reversed]

For each export (the newest version under each directory; a missing one is
skipped with a line saying so), loaded with `tf.saved_model.load` as a
Python client or `training.translate` loads it:

* latency of one-sentence requests, one after another: p50 / p95 / p99,
  for `serving_default` (greedy) and `beam_search`;
* throughput at batch 1, 8 and 64: sentences/s and generated target
  tokens/s (real tokens of the outputs, end token included, no padding);
* 16 concurrent callers sending one-sentence requests to `serving_default`:
  requests/s and their p50 / p99 latency;
* the peer, in the same run: the same weights (`assets.extra/model.keras`)
  and tokenizers exported as the TensorFlow text tutorial's `Translator`
  does — a `tf.function` loop that reruns the whole model (encoder and
  decoder, no cache) on the growing output at every step and stops when
  every sentence has ended — written as a SavedModel the same way as ours
  and reloaded. It never generates padding, as ours; its outputs are
  compared with ours (`agreement`: the fraction of identical strings).
  Ratios are ours ÷ peer for throughput, peer ÷ ours for latency.

Inputs are the export's real held-out sources recorded in
`assets.extra/evaluation.json` (the probe its training checked), cycled to
fill a batch. Results go to `benchmarks/results/serving.json`.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

try:
    import tensorflow_text  # noqa: F401, E402  SentencePiece ops of subword exports
except ImportError:
    pass

import tf_transformer  # noqa: E402, F401  registers the layers for model.keras
from tf_transformer.export import latest_version  # noqa: E402
from tf_transformer.tokenizers import END, START, load_tokenizers  # noqa: E402
from training.serving_config import batch_of, export_texts, seconds_per_call  # noqa: E402

BATCH_SIZES = (1, 8, 64)
CONCURRENT_CALLERS = 16
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "serving.json")


class TutorialTranslator(tf.Module):
    """The TF text tutorial's `Translator`, batched: the whole model rerun on the growing output every step.

    As in the tutorial: the source tokenised, a `tf.TensorArray` of output
    ids started with the start token, and at each step the model called on
    `(source, output so far)` with only the last position's argmax kept;
    the loop breaks once every sentence has produced the end token (the
    tutorial's single sentence: once it has). Like ours, padding (id 0) is
    never generated, and ids after an end token are padding.
    """

    def __init__(self, model, source_tokenizer, target_tokenizer, max_input_length, max_output_length):
        super().__init__(name="tutorial_translator")
        self.model, self.source_tokenizer, self.target_tokenizer = model, source_tokenizer, target_tokenizer
        self.max_length, self.max_output_length = max_input_length, max_output_length
        self.translate = tf.function(self._translate, input_signature=[tf.TensorSpec([None], tf.string, name="text")])

    def _translate(self, text):
        source = self.source_tokenizer.tokenize(text)[:, : self.max_length].to_tensor(default_value=0)
        source = tf.pad(source, [[0, 0], [0, tf.maximum(1 - tf.shape(source)[1], 0)]])
        batch = tf.shape(source)[0]
        output_array = tf.TensorArray(tf.int32, size=0, dynamic_size=True)
        output_array = output_array.write(0, tf.fill([batch], START))
        finished = tf.zeros([batch], tf.bool)
        for i in tf.range(self.max_output_length - 1):
            output = tf.transpose(output_array.stack())  # [B, i + 1]
            logits = self.model({"encoder_tokens": source, "decoder_tokens": output}, training=False)[:, -1, :]
            logits = tf.where(tf.range(tf.shape(logits)[-1]) == 0, tf.cast(-1e9, logits.dtype), logits)
            predicted = tf.cast(tf.argmax(logits, axis=-1), tf.int32)
            output_array = output_array.write(i + 1, predicted)
            finished = finished | tf.equal(predicted, END)
            if tf.reduce_all(finished):
                break
        ids = tf.transpose(output_array.stack())
        after_end = tf.cumsum(tf.cast(tf.equal(ids, END), tf.int32), axis=1, exclusive=True) > 0
        translation = self.target_tokenizer.detokenize(tf.where(after_end, 0, ids))
        blank = tf.equal(tf.strings.length(tf.strings.strip(text)), 0)
        return {"translation": tf.where(blank, tf.constant(""), translation)}


def export_peer(path, directory):
    """The peer written as a SavedModel from the export's model and tokenizers, then reloaded; its signature."""
    extra = os.path.join(path, "assets.extra")
    model = keras.saving.load_model(os.path.join(extra, "model.keras"))
    source_tokenizer, target_tokenizer = load_tokenizers(extra)
    with open(os.path.join(extra, "signatures.json"), encoding="utf-8") as file:
        documented = json.load(file)["serving_default"]
    max_output = documented.get("max_output_tokens") or documented["max_input_tokens"]
    peer = TutorialTranslator(model, source_tokenizer, target_tokenizer, documented["max_input_tokens"], max_output)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for tokenizer in {id(t): t for t in (source_tokenizer, target_tokenizer)}.values():
        archive.track(tokenizer)
    archive.add_endpoint("serving_default", peer.translate)
    archive.write_out(directory, verbose=False)
    return tf.saved_model.load(directory).signatures["serving_default"], target_tokenizer


def as_strings(outputs):
    return [t.decode("utf-8") for t in outputs["translation"].numpy()]


def caller(signature):
    return lambda texts: signature(text=tf.constant(texts, tf.string))["translation"].numpy()


def percentiles(seconds):
    values = np.array(seconds) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(values, q)), 2) for q in (50, 95, 99)}


def one_sentence_latency(call, texts, requests):
    for text in texts[:2]:
        call([text])  # warm-up
    times = []
    for i in range(requests):
        start = time.perf_counter()
        call([texts[i % len(texts)]])
        times.append(time.perf_counter() - start)
    return percentiles(times)


def concurrent(call, texts, callers, requests_each):
    """`callers` threads each sending `requests_each` one-sentence requests at once."""
    times = [[] for _ in range(callers)]
    barrier = threading.Barrier(callers)

    def run(i):
        barrier.wait()
        for j in range(requests_each):
            start = time.perf_counter()
            call([texts[(i * requests_each + j) % len(texts)]])
            times[i].append(time.perf_counter() - start)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(callers)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    all_times = [t for per_caller in times for t in per_caller]
    return {"callers": callers, "requests_per_s": round(len(all_times) / elapsed, 1), **percentiles(all_times)}


def target_tokens(tokenizer, translations):
    """Real target tokens of the outputs: subwords or characters plus the end token (an empty answer: 1)."""
    return int(tf.reduce_sum(tokenizer.tokenize(tf.constant(translations)).row_lengths()).numpy()) + len(translations)


def bench_export(name, export_dir, args):
    path = latest_version(export_dir)
    loaded = tf.saved_model.load(path)
    ours = {"greedy": caller(loaded.signatures["serving_default"]), "beam": caller(loaded.signatures["beam_search"])}
    texts = export_texts(path)
    with tempfile.TemporaryDirectory(prefix="tutorial-peer-") as directory:
        peer_signature, target_tokenizer = export_peer(path, directory)
        peer = caller(peer_signature)
        ours_greedy = as_strings(loaded.signatures["serving_default"](text=tf.constant(texts)))
        peer_greedy = [t.decode("utf-8") for t in peer(texts)]
        # Over ours' non-empty answers: a postprocess (the dates export's calendar check) may blank an output.
        answered = [(a, b) for a, b in zip(ours_greedy, peer_greedy) if a]
        agreement = sum(a == b for a, b in answered) / max(len(answered), 1)
        result = {"saved_model": path, "inputs": len(texts), "ours_empty": len(texts) - len(answered),
                  "agreement_with_peer": round(agreement, 4), "latency": {}, "throughput": {}}
        decoders = {"ours_greedy": ours["greedy"], "ours_beam": ours["beam"], "tutorial_greedy": peer}
        for decoder, call in decoders.items():
            requests = args.requests if decoder != "ours_beam" else max(args.requests // 2, 10)
            result["latency"][decoder] = one_sentence_latency(call, texts, requests)
            print(f"{name} {decoder:>16} one sentence: {result['latency'][decoder]}", flush=True)
            result["throughput"][decoder] = {}
            for size in args.batch_sizes:
                batch = batch_of(texts, size)
                seconds = seconds_per_call(call, batch, args.seconds)
                outputs = [t.decode("utf-8") for t in call(batch)]
                result["throughput"][decoder][size] = {
                    "sentences_per_s": round(size / seconds, 1),
                    "target_tokens_per_s": round(target_tokens(target_tokenizer, outputs) / seconds, 1),
                }
                print(f"{name} {decoder:>16} batch {size:>3}: {result['throughput'][decoder][size]}", flush=True)
        result["concurrent"] = concurrent(ours["greedy"], texts, CONCURRENT_CALLERS, args.concurrent_requests)
        print(f"{name} {'ours_greedy':>16} {CONCURRENT_CALLERS} callers: {result['concurrent']}", flush=True)
    throughput = result["throughput"]
    result["ratios"] = {
        f"greedy_batch_{size}": round(throughput["ours_greedy"][size]["sentences_per_s"]
                                      / throughput["tutorial_greedy"][size]["sentences_per_s"], 2)
        for size in args.batch_sizes
    }
    result["ratios"]["greedy_p50_latency"] = round(
        result["latency"]["tutorial_greedy"]["p50_ms"] / result["latency"]["ours_greedy"]["p50_ms"], 2)
    print(f"{name} ratios (ours vs the tutorial's decoding of the same weights): {result['ratios']}", flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n")[0])
    parser.add_argument("--dates", default="saved_models/dates", help="the dates export ('' to skip)")
    parser.add_argument("--text", default="saved_models/tatoeba-eng-fra-reversed", help="a Tatoeba export ('' to skip)")
    parser.add_argument("--requests", type=int, default=100, help="one-sentence requests timed per decoder")
    parser.add_argument("--concurrent-requests", type=int, default=10, help="requests per concurrent caller")
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each batch size (at least 3 calls)")
    parser.add_argument("--batch-sizes", type=lambda t: [int(v) for v in t.split(",")], default=list(BATCH_SIZES),
                        help="comma-separated batch sizes of the throughput figures")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    started = time.time()
    results = {"cpu_cores": os.cpu_count(), "tensorflow": tf.__version__, "keras": keras.__version__, "exports": {}}
    for name, export_dir in (("dates", args.dates), ("text", args.text)):
        if not export_dir:
            continue
        if not os.path.isdir(export_dir):
            print(f"Skipping {name}: no export at {export_dir} (train one with python -m training.train).")
            continue
        results["exports"][name] = bench_export(name, export_dir, args)
    if not results["exports"]:
        raise SystemExit("No export to measure: give --dates and/or --text export directories.")
    results["seconds"] = round(time.time() - started, 1)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(results, file, indent=2)
    print(f"Wrote {args.output} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
