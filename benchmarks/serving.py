"""What a request costs through the exported SavedModel, against the TF text tutorial's way of exporting the same weights.

    python -m benchmarks.serving [--dates saved_models/dates] [--text saved_models/tatoeba-eng-fra-reversed]

For each export (the newest version under each directory; a missing one is
skipped with a line saying so), loaded with `tf.saved_model.load` as a
Python client or `training.translate` loads it:

* latency of one-sentence requests, one after another: p50 / p95 / p99,
  for `serving_default` (greedy) and `beam_search`;
* throughput at batch 1, 8 and 64: sentences/s and generated target
  tokens/s (real tokens of the outputs, end token included, no padding);
  the first call of each batch size is timed apart (`first_call_s`: where
  an XLA export compiles);
* 16 concurrent callers sending one-sentence requests to `serving_default`:
  requests/s and their p50 / p99 latency;
* what loading costs a server (`warmup`): a fresh process that cannot import
  this package loads each of our exports and replays its warm-up records as
  TF Serving does at load — seconds, records, peak memory after loading
  and after the replay, and the XLA programs the replay compiled
  (TensorFlow's persistent XLA cache, one file per program).

Decoders, each a SavedModel written and reloaded in this run (but the first):

* `ours`: the export as it is (core TensorFlow ops; any TF Serving build);
* `ours_xla`: the same weights, tokenizers and postprocess exported again
  with `export(..., jit_compile=True)` (the decoding loops compiled by XLA;
  TF Serving needs `--xla_cpu_compilation_enabled=true` on CPU); skipped
  if the export is already compiled;
* `tutorial`: the TensorFlow text tutorial's `Translator` / `ExportTranslator`
  on the same weights (`assets.extra/model.keras`) and tokenizers — a
  `tf.function` loop that reruns the whole model (encoder and decoder, no
  cache) on the growing output at every step. As the tutorial exports it,
  it takes one sentence per call (`input_signature=[tf.TensorSpec([],
  tf.string)]`), so its batch of N is N requests, one after another;
* `tutorial_batched`: our generalisation of that loop to a batch (it stops
  when every sentence has ended): the strictest peer, not the tutorial's.
* `ctranslate2_float32`, `ctranslate2_int8` (SentencePiece exports, when
  the `ctranslate2` package is installed): the same weights converted by
  `training.export_ctranslate2`, run by CTranslate2's `Translator` on the
  CPU, greedy and beam 4 (its beam's 4 hypotheses ranked by our GNMT
  penalty, `best_hypothesis`: its own ranks by `length ** 0.6`), SentencePiece encoding and decoding in
  Python counted in each request as the SavedModel counts its in-graph
  tokenizers. OpenNMT's own fastest CPU runtime: the peer to beat.

The peers never generate padding, as ours; their outputs are compared with
ours (`agreement`: the fraction of identical strings). Ratios are ours ÷
peer for throughput, peer ÷ ours for latency.

Inputs are the export's real held-out sources recorded in
`assets.extra/evaluation.json` (the probe its training checked), cycled to
fill a batch. Results go to `benchmarks/results/serving.json`.
"""

import argparse
import json
import os
import sys
import tempfile
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
from tf_transformer.export import Translator, export, latest_version  # noqa: E402
from tf_transformer.tokenizers import END, START, load_tokenizers  # noqa: E402
from training.serving_config import batch_of, compiled_with_xla, export_texts  # noqa: E402
from training import timing  # noqa: E402
from training.timing import percentiles, seconds_per_call  # noqa: E402

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
        # The tutorial's own signature: one sentence per call (a scalar string).
        self.translate_one = tf.function(
            lambda text: {"translation": self._translate(text[tf.newaxis])["translation"][0]},
            input_signature=[tf.TensorSpec([], tf.string, name="text")],
        )

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


def export_parts(path):
    """An export's Keras model, tokenizers and documented signature, from its `assets.extra/`."""
    extra = os.path.join(path, "assets.extra")
    model = keras.saving.load_model(os.path.join(extra, "model.keras"))
    source_tokenizer, target_tokenizer = load_tokenizers(extra)
    with open(os.path.join(extra, "signatures.json"), encoding="utf-8") as file:
        documented = json.load(file)
    return model, source_tokenizer, target_tokenizer, documented


def export_peer(parts, directory):
    """The peer written as a SavedModel from an export's parts (`export_parts`), then reloaded.

    Returns its batched signature, its one-sentence signature (the tutorial's) and the target tokenizer.
    """
    model, source_tokenizer, target_tokenizer, documented = parts
    greedy = documented["serving_default"]
    max_output = greedy.get("max_output_tokens") or greedy["max_input_tokens"]
    peer = TutorialTranslator(model, source_tokenizer, target_tokenizer, greedy["max_input_tokens"], max_output)
    archive = keras.export.ExportArchive()
    archive.track(model)
    for tokenizer in {id(t): t for t in (source_tokenizer, target_tokenizer)}.values():
        archive.track(tokenizer)
    archive.add_endpoint("serving_default", peer.translate)
    archive.add_endpoint("one_sentence", peer.translate_one)
    archive.write_out(directory, verbose=False)
    signatures = tf.saved_model.load(directory).signatures
    return signatures["serving_default"], signatures["one_sentence"], target_tokenizer


def export_compiled(parts, directory, name, warmup_texts=None, warmup_largest_batch=None):
    """An export's parts (`export_parts`) exported again with XLA-compiled decoding and its postprocess, reloaded.

    Returns its greedy and beam callers and its path.
    """
    model, source_tokenizer, target_tokenizer, documented = parts
    greedy, beam = documented["serving_default"], documented["beam_search"]
    postprocess = None
    if name == "dates":  # the dates export's calendar check, as training.train exports it
        from training.dates import valid_date_or_empty as postprocess
    translator = Translator(model, source_tokenizer, target_tokenizer, greedy.get("max_output_tokens"),
                            beam_size=beam.get("beam_size", 4), postprocess=postprocess, jit_compile=True)
    path = export(model, source_tokenizer, target_tokenizer, directory, translator=translator,
                  warmup_texts=warmup_texts, warmup_largest_batch=warmup_largest_batch)
    compiled = tf.saved_model.load(path)
    return {"greedy": caller(compiled.signatures["serving_default"]), "beam": caller(compiled.signatures["beam_search"]),
            "path": path}


WARMUP_REPLAY = """
import sys
sys.modules["tf_transformer"] = sys.modules["training"] = None  # as a server: the export alone
import json, os, resource, time
import tensorflow as tf
try:
    import tensorflow_text  # SentencePiece ops of subword exports
except ImportError:
    pass
from tensorflow_serving.apis import prediction_log_pb2
def peak_mib():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
path, cache = sys.argv[1], sys.argv[2]
start = time.perf_counter()
loaded = tf.saved_model.load(path)
result = {"load_s": round(time.perf_counter() - start, 2), "peak_mib_after_load": peak_mib()}
start, records = time.perf_counter(), 0
for record in tf.data.TFRecordDataset(os.path.join(path, "assets.extra", "tf_serving_warmup_requests")):
    request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
    loaded.signatures[request.model_spec.signature_name](
        **{name: tf.constant(tf.make_ndarray(tensor)) for name, tensor in request.inputs.items()})
    records += 1
result.update(replay_s=round(time.perf_counter() - start, 2), records=records, peak_mib_after_replay=peak_mib(),
              xla_programs=len(os.listdir(cache)) if os.path.isdir(cache) else 0)
print(json.dumps(result))
"""


def warmup_cost(path, directory):
    """Load `path` in a fresh process without this package and replay its warm-up records, as TF Serving loads it.

    Twice when XLA compiled programs: the second load finds them in the
    persistent cache the first one filled (`replay_s_from_cache`).
    """
    import subprocess

    cache = tempfile.mkdtemp(prefix="xla-cache-", dir=directory)
    env = {**os.environ, "TF_XLA_FLAGS": f"{os.environ.get('TF_XLA_FLAGS', '')} "
                                         f"--tf_xla_persistent_cache_directory={cache}"}

    def replay():
        result = subprocess.run([sys.executable, "-c", WARMUP_REPLAY, path, cache], capture_output=True, text=True,
                                env=env, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"Replaying the warm-up records of {path} failed:\n{result.stderr[-3000:]}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    cost = replay()
    if cost["xla_programs"]:
        again = replay()
        cost.update(replay_s_from_cache=again["replay_s"], xla_programs_after_reload=again["xla_programs"])
    return cost


def as_strings(outputs):
    return [t.decode("utf-8") for t in outputs["translation"].numpy()]


def caller(signature):
    return lambda texts: signature(text=tf.constant(texts, tf.string))["translation"].numpy()


def one_per_call(signature):
    """A batch sent as the tutorial's export takes it: one request per sentence, one after another."""
    return lambda texts: np.array([signature(text=tf.constant(text, tf.string))["translation"].numpy()
                                   for text in texts])


def one_sentence_latency(call, texts, requests):
    for text in texts:
        call([text])  # warm-up: every input's shape (an XLA export compiles once per padded source length)
    times = []
    for i in range(requests):
        start = time.perf_counter()
        call([texts[i % len(texts)]])
        times.append(time.perf_counter() - start)
    return percentiles(times)


def concurrent(call, texts, callers, requests_each):
    """`callers` threads each sending `requests_each` one-sentence requests at once."""
    times = [[] for _ in range(callers)]

    def run(i):
        for j in range(requests_each):
            start = time.perf_counter()
            call([texts[(i * requests_each + j) % len(texts)]])
            times[i].append(time.perf_counter() - start)

    elapsed = timing.in_threads(run, callers)
    all_times = [t for per_caller in times for t in per_caller]
    return {"callers": callers, "requests_per_s": round(len(all_times) / elapsed, 1), **percentiles(all_times)}


def target_tokens(tokenizer, translations):
    """Real target tokens of the outputs: subwords or characters plus the end token (an empty answer: 1)."""
    return int(tf.reduce_sum(tokenizer.tokenize(tf.constant(translations)).row_lengths()).numpy()) + len(translations)


def best_hypothesis(result, alpha=0.6):
    """A CTranslate2 result's hypothesis with the best GNMT-penalised score (`decoding.beam_search`'s rule).

    Its scores are log-probabilities with the end token's; `|y|` counts it, as ours does.
    """
    if not result.scores:
        return result.hypotheses[0]
    penalised = [score / ((5 + len(tokens) + 1) / 6) ** alpha for tokens, score in zip(result.hypotheses, result.scores)]
    return result.hypotheses[max(range(len(penalised)), key=penalised.__getitem__)]


def ctranslate2_decoders(path, directory, max_output_length):
    """CTranslate2 float32 and int8 translators of an export's weights: `{name: texts -> array of bytes}`, or {} without CTranslate2."""
    try:
        import ctranslate2
        import sentencepiece
    except ImportError:
        print("Skipping CTranslate2: pip install -e '.[ctranslate2]'", flush=True)
        return {}
    from training import export_ctranslate2

    decoders = {}
    for quantization in ("float32", "int8"):
        output = export_ctranslate2.convert(path, os.path.join(directory, "ctranslate2-" + quantization),
                                            quantization=quantization)
        translator = ctranslate2.Translator(output, device="cpu", compute_type=quantization)
        source = sentencepiece.SentencePieceProcessor(model_file=os.path.join(output, "source.model"))
        target = sentencepiece.SentencePieceProcessor(model_file=os.path.join(output, "target.model"))
        for search, beam in (("greedy", 1), ("beam", 4)):
            def call(texts, translator=translator, source=source, target=target, beam=beam):
                texts = [t.decode("utf-8", "replace") if isinstance(t, bytes) else t for t in texts]
                # Beam: CTranslate2 ranks finished hypotheses by log P / |y|^α; ours by GNMT's
                # log P / ((5 + |y|) / 6)^α. Its beam's hypotheses with their plain log-probabilities
                # (length_penalty 0), ranked by ours, decode by our rule with its search.
                results = translator.translate_batch(
                    [source.encode(t, out_type=str) for t in texts], beam_size=beam, length_penalty=0,
                    num_hypotheses=beam, return_scores=beam > 1, max_decoding_length=max_output_length - 1,
                    max_batch_size=64)
                return np.array([target.decode(best_hypothesis(r)).encode("utf-8") if text.strip() else b""
                                 for r, text in zip(results, texts)], dtype=object)

            decoders[f"ctranslate2_{quantization}_{search}"] = call
    return decoders


def bench_export(name, export_dir, args):
    path = latest_version(export_dir)
    loaded = tf.saved_model.load(path)
    texts = export_texts(path)
    with tempfile.TemporaryDirectory(prefix="serving-benchmark-") as directory:
        decoders = {"ours_greedy": caller(loaded.signatures["serving_default"]),
                    "ours_beam": caller(loaded.signatures["beam_search"])}
        parts = export_parts(path)
        warmup = {"ours": warmup_cost(path, directory)}
        print(f"{name} load and warm-up, {'ours_xla' if compiled_with_xla(path) else 'ours'}: {warmup['ours']}",
              flush=True)
        if not compiled_with_xla(path):
            evaluation = os.path.join(path, "assets.extra", "evaluation.json")
            samples = None  # then export's default warm-up texts
            if os.path.exists(evaluation):
                with open(evaluation, encoding="utf-8") as file:
                    samples = json.load(file).get("samples")  # the texts training.train warmed its export up with
            compiled = export_compiled(parts, os.path.join(directory, "xla"), name, samples, args.warmup_largest_batch)
            decoders.update({"ours_xla_greedy": compiled["greedy"], "ours_xla_beam": compiled["beam"]})
            warmup["ours_xla"] = warmup_cost(compiled["path"], directory)
            print(f"{name} load and warm-up, ours_xla: {warmup['ours_xla']}", flush=True)
        batched_peer, one_sentence_peer, target_tokenizer = export_peer(parts, os.path.join(directory, "tutorial"))
        if "tutorial" in args.peers:
            decoders.update({"tutorial_greedy": one_per_call(one_sentence_peer),
                             "tutorial_batched_greedy": caller(batched_peer)})
        if "ctranslate2" in args.peers and parts[1].kind == "sentencepiece":
            decoders.update(ctranslate2_decoders(path, directory, parts[0].config.max_length))
        ours = {search: [t.decode("utf-8") for t in decoders[f"ours_{search}"](texts)] for search in ("greedy", "beam")}
        # Over ours' non-empty answers: a postprocess (the dates export's calendar check) may blank an output.
        answered = [i for i, text in enumerate(ours["greedy"]) if text]
        result = {"saved_model": path, "inputs": len(texts), "ours_empty": len(texts) - len(answered),
                  "warmup": warmup, "agreement_with_ours_greedy": {}, "agreement_with_ours_beam": {}, "latency": {},
                  "throughput": {}}
        for decoder, call in decoders.items():
            search = decoder.rsplit("_", 1)[1]
            if not decoder.startswith("ours_") or decoder.startswith("ours_xla"):
                outputs = [t.decode("utf-8") for t in call(texts)]
                same = sum(outputs[i] == ours[search][i] for i in answered) / max(len(answered), 1)
                result[f"agreement_with_ours_{search}"][decoder] = round(same, 4)
            requests = args.requests if "beam" not in decoder else max(args.requests // 2, 10)
            result["latency"][decoder] = one_sentence_latency(call, texts, requests)
            print(f"{name} {decoder:>23} one sentence: {result['latency'][decoder]}", flush=True)
            result["throughput"][decoder] = {}
            for size in args.batch_sizes:
                batch = batch_of(texts, size)
                start = time.perf_counter()
                outputs = [t.decode("utf-8") for t in call(batch)]
                first_call = time.perf_counter() - start  # a new batch shape: XLA compiles here
                seconds = seconds_per_call(call, batch, args.seconds)
                result["throughput"][decoder][size] = {
                    "sentences_per_s": round(size / seconds, 1),
                    "target_tokens_per_s": round(target_tokens(target_tokenizer, outputs) / seconds, 1),
                    "first_call_s": round(first_call, 3),
                }
                print(f"{name} {decoder:>23} batch {size:>3}: {result['throughput'][decoder][size]}", flush=True)
        print(f"{name} agreement with ours (greedy): {result['agreement_with_ours_greedy']}; "
              f"(beam): {result['agreement_with_ours_beam']}", flush=True)
        result["concurrent"] = {}
        for decoder in ("ours_greedy", "ours_xla_greedy"):
            if decoder in decoders:
                result["concurrent"][decoder] = concurrent(decoders[decoder], texts, CONCURRENT_CALLERS,
                                                           args.concurrent_requests)
                print(f"{name} {decoder:>23} {CONCURRENT_CALLERS} callers: {result['concurrent'][decoder]}",
                      flush=True)
    result["ratios"] = ratios(result, args.batch_sizes)
    for ours, against in result["ratios"].items():
        print(f"{name} ratios of {ours} (throughput ours/peer, latency peer/ours): {against}", flush=True)
    return result


def ratios(result, batch_sizes):
    """`{ours: {peer: {"batch_N": throughput ratio, ..., "p50_latency": latency ratio}}}` for greedy decoding."""
    throughput, latency = result["throughput"], result["latency"]
    ours_decoders = [d for d in ("ours_greedy", "ours_xla_greedy") if d in throughput]
    return {
        ours: {
            peer: {
                **{f"batch_{size}": round(throughput[ours][size]["sentences_per_s"]
                                          / throughput[peer][size]["sentences_per_s"], 2) for size in batch_sizes},
                "p50_latency": round(latency[peer]["p50_ms"] / latency[ours]["p50_ms"], 2),
            }
            for peer in ("tutorial_greedy", "tutorial_batched_greedy", "ctranslate2_float32_greedy",
                         "ctranslate2_int8_greedy")
            if peer in throughput
        }
        for ours in ours_decoders
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n")[0])
    parser.add_argument("--dates", default="saved_models/dates", help="the dates export ('' to skip)")
    parser.add_argument("--text", default="saved_models/tatoeba-eng-fra-reversed", help="a Tatoeba export ('' to skip)")
    parser.add_argument("--requests", type=int, default=100, help="one-sentence requests timed per decoder")
    parser.add_argument("--concurrent-requests", type=int, default=10, help="requests per concurrent caller")
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each batch size (at least 3 calls)")
    parser.add_argument("--batch-sizes", type=lambda t: [int(v) for v in t.split(",")], default=list(BATCH_SIZES),
                        help="comma-separated batch sizes of the throughput figures")
    parser.add_argument("--warmup-largest-batch", type=int, default=None,
                        help="largest batch the XLA export's warm-up records compile (default: export's, 128)")
    parser.add_argument("--peers", type=lambda t: set(t.split(",")), default={"tutorial", "ctranslate2"},
                        help="comma-separated peers to measure beside ours: tutorial, ctranslate2")
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
