"""TF Serving's two config files for exports, with the batching parameters chosen by measuring them here.

    python -m training.serving_config saved_models/dates [saved_models/NAME ...] [--output-dir saved_models]

Writes `OUTPUT_DIR/models.config` (a `model_config_list`: one entry per
export, its base path and a version policy serving the newest version) and
`OUTPUT_DIR/batching_parameters.txt` (`max_batch_size`,
`batch_timeout_micros`, `num_batch_threads`, `max_enqueued_batches`,
`allowed_batch_sizes`), then prints the `tensorflow_model_server` command
that uses them. Both files are protobuf text that TF Serving parses; the
measurements behind the batching choice are comments at the top of the
second one.

How the batching parameters are chosen, per export, from its
`serving_default` signature run the way TF Serving runs it (TensorFlow's
session loader, `Session.run`) on real inputs (the held-out sources
recorded in `assets.extra/evaluation.json`):

* the latency of a batch is measured at 1, 2, 4, … `--largest-batch`;
* `max_batch_size`: the smallest batch whose throughput reaches 90 % of the
  best measured — larger batches only add latency;
* `allowed_batch_sizes`: the measured sizes up to it, leaving out a size
  whose batch costs within 10 % of the next one kept (padding up to that one
  is then nearly free); TF Serving pads each batch to the next allowed size;
* `num_batch_threads`: how many batches at once gave the most throughput
  (1 up to the number of cores; each batch already uses every core through
  TensorFlow's intra-op threads, so more threads only help if a batch
  leaves cores idle);
* `batch_timeout_micros`: half the latency of a one-sentence request: a
  request that arrives alone waits at most that long for company;
* `max_enqueued_batches`: about one second of queued work; beyond it a
  request fails fast (UNAVAILABLE) rather than waiting.

With several exports, one set of parameters serves all (TF Serving's flag
is global): the one of the export with the smallest `max_batch_size`, so
none of them waits on batches too large for it.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from training import timing  # noqa: E402  (numpy only: TensorFlow stays imported lazily)

SIGNATURE = "serving_default"
DEFAULT_TEXTS = ["25 septembre 2009", "Tuesday, June 25, 2009", "Je t'aime.", "Où est la gare ?"]


def batching_parameters_class():
    """The `tensorflow.serving.BatchingParameters` message, built from its field list.

    tensorflow-serving-api ships the client protos (`apis/`, `config/`) but
    not `servables/tensorflow/session_bundle_config.proto`, where this
    message lives; it is declared here with that file's names and numbers
    so that the file written is checked protobuf text, not a hand-made string.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    field = descriptor_pb2.FieldDescriptorProto
    for name, number, wrapper in (
        ("max_batch_size", 1, "Int64Value"),
        ("batch_timeout_micros", 2, "Int64Value"),
        ("max_enqueued_batches", 3, "Int64Value"),
        ("num_batch_threads", 4, "Int64Value"),
        ("thread_pool_name", 5, "StringValue"),
    ):
        message.field.add(name=name, number=number, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                          type_name=f".google.protobuf.{wrapper}")
    message.field.add(name="allowed_batch_sizes", number=6, type=field.TYPE_INT64, label=field.LABEL_REPEATED)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def export_texts(path, limit=64):
    """Real inputs of an export: the held-out sources its evaluation recorded (blank ones left out)."""
    evaluation = os.path.join(path, "assets.extra", "evaluation.json")
    texts = []
    if os.path.exists(evaluation):
        with open(evaluation, encoding="utf-8") as file:
            texts = json.load(file).get("in_process_probe", {}).get("texts", [])
    return [t for t in texts if t.strip()][:limit] or DEFAULT_TEXTS


def batch_of(texts, size):
    return [texts[i % len(texts)] for i in range(size)]


class SessionSignature:
    """A signature of a SavedModel under TensorFlow's session loader, as TF Serving runs it.

    Callable from several threads at once (TensorFlow sessions are
    thread-safe), as TF Serving's batch threads call `Session::Run`.
    """

    def __init__(self, path, signature=SIGNATURE):
        import tensorflow as tf

        try:
            import tensorflow_text  # noqa: F401  SentencePiece ops of subword exports
        except ImportError:
            pass
        tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)  # the v1 loader's deprecation notice
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], path)
        spec = meta_graph.signature_def[signature]
        self.input = spec.inputs["text"].name
        self.output = spec.outputs["translation"].name

    def __call__(self, texts):
        return [t.decode("utf-8") for t in self.session.run(self.output, {self.input: texts})]

    def close(self):
        self.session.close()


def concurrent_throughput(function, texts, threads, seconds=1.5):
    """Examples per second with `threads` callers each sending `texts` again and again."""
    done, stop = [0] * threads, time.perf_counter() + seconds

    def caller(i):
        while time.perf_counter() < stop:
            function(texts)
            done[i] += len(texts)

    return sum(done) / timing.in_threads(caller, threads)


def choose(latencies, throughput_by_threads):
    """Batching parameters from measured latencies `{batch size: seconds}` and `{threads: examples/s}`."""
    sizes = sorted(latencies)
    throughput = {b: b / latencies[b] for b in sizes}
    best = max(throughput.values())
    max_batch_size = next(b for b in sizes if throughput[b] >= 0.9 * best)
    allowed = [max_batch_size]
    for b in reversed([s for s in sizes if s < max_batch_size]):
        if latencies[b] < 0.9 * latencies[allowed[0]]:
            allowed.insert(0, b)
    threads = 1
    for count in sorted(throughput_by_threads):  # more threads only when clearly better (5 %)
        if throughput_by_threads[count] > 1.05 * throughput_by_threads[threads]:
            threads = count
    timeout_micros = max(100, int(round(latencies[1] * 1e6 / 2, -2)))
    queued = max(threads, round(1.0 / latencies[max_batch_size]) * threads)
    return {
        "max_batch_size": max_batch_size,
        "batch_timeout_micros": timeout_micros,
        "num_batch_threads": threads,
        "max_enqueued_batches": min(queued, 1000),
        "allowed_batch_sizes": allowed,
    }


def measure(path, largest_batch=64, min_seconds=1.0, log=print):
    """Latency per batch size and throughput per thread count of an export's `serving_default`, session loader."""
    texts = export_texts(path)
    signature = SessionSignature(path)
    try:
        latencies, size = {}, 1
        while size <= largest_batch:
            latencies[size] = timing.seconds_per_call(signature, batch_of(texts, size), min_seconds)
            log(f"  batch {size:>4}: {latencies[size] * 1e3:8.1f} ms, {size / latencies[size]:8.1f} examples/s")
            size *= 2
        best_size = max(latencies, key=lambda b: b / latencies[b])
        by_threads = {}
        for threads in range(1, min(os.cpu_count() or 1, 4) + 1):
            by_threads[threads] = concurrent_throughput(signature, batch_of(texts, best_size), threads, 1.5 * min_seconds)
            log(f"  {threads} batch thread(s) at batch {best_size}: {by_threads[threads]:8.1f} examples/s")
    finally:
        signature.close()
    return latencies, by_threads


def model_server_config(exports, base_path_prefix=None):
    """A `ModelServerConfig` (the `--model_config_file`) serving the newest version of each export."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for export_dir in exports:
        name = os.path.basename(os.path.normpath(export_dir))
        model = config.model_config_list.config.add(name=name, model_platform="tensorflow")
        model.base_path = f"{base_path_prefix.rstrip('/')}/{name}" if base_path_prefix else os.path.abspath(export_dir)
        model.model_version_policy.latest.num_versions = 1
    return config


def _atomic_write(path, text):
    temporary = f"{path}.tmp-{os.getpid()}"
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.serving_config", description=__doc__.split("\n")[0])
    parser.add_argument("exports", nargs="+", help="export directories (TF Serving's base paths: NAME/<version>/)")
    parser.add_argument("--output-dir", default=None, help="where to write the two files (default: the exports' parent)")
    parser.add_argument("--base-path-prefix", default=None,
                        help="base paths as the server sees them, e.g. /models when saved_models/ is mounted there "
                        "(default: the absolute paths here)")
    parser.add_argument("--largest-batch", type=int, default=None,
                        help="largest batch size measured (default: export.XLA_WARMUP_LARGEST_BATCH, the largest batch "
                             "an XLA export's warm-up records compile)")
    parser.add_argument("--min-seconds", type=float, default=1.0, help="time spent measuring each batch size")
    args = parser.parse_args(argv)

    from google.protobuf import text_format

    from tf_transformer.export import XLA_WARMUP_LARGEST_BATCH, latest_version, non_core_ops
    from training.list_ops import outside_stock_ops

    args.largest_batch = args.largest_batch or XLA_WARMUP_LARGEST_BATCH

    output_dir = args.output_dir or os.path.dirname(os.path.abspath(os.path.normpath(args.exports[0])))
    paths = []
    for export_dir in args.exports:
        try:
            paths.append(latest_version(export_dir))
        except FileNotFoundError as error:
            raise SystemExit(str(error)) from None
        # Before any measurement: once tensorflow-text is loaded its ops count as registered.
        custom = non_core_ops(paths[-1])["custom"]
        outside = outside_stock_ops(paths[-1])
        if outside:
            print(f"Note: {paths[-1]} uses ops stock TF Serving 2.20 lacks ({', '.join(outside)}); serve it with a "
                  "server built with them (TF Serving's custom-op guide).")
        elif custom:
            print(f"Note: {paths[-1]} uses tensorflow-text's ops ({', '.join(custom)}), which the stock "
                  "tensorflow_model_server links (training.list_ops checks); Python clients import tensorflow_text "
                  "before loading it.")
    compiled = [path for path in paths if compiled_with_xla(path)]
    if compiled:
        print(f"Note: {', '.join(compiled)} decode(s) with XLA (training.train --export-xla); the command below "
              "enables XLA on CPU, which TF Serving leaves off by default.")
    chosen, lines = None, []
    for path in paths:
        print(f"Measuring {path} ({SIGNATURE}, session loader):", flush=True)
        latencies, by_threads = measure(path, args.largest_batch, args.min_seconds)
        parameters = choose(latencies, by_threads)
        lines.append(f"# {path}:")
        lines += [f"#   batch {b}: {latencies[b] * 1e3:.1f} ms, {b / latencies[b]:.1f} examples/s" for b in latencies]
        lines += [f"#   {t} batch thread(s): {v:.1f} examples/s" for t, v in by_threads.items()]
        lines.append(f"#   chosen: {json.dumps(parameters)}")
        if chosen is None or parameters["max_batch_size"] < chosen["max_batch_size"]:
            chosen = parameters

    batching = batching_parameters_class()(allowed_batch_sizes=chosen["allowed_batch_sizes"])
    for name in ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"):
        getattr(batching, name).value = chosen[name]
    header = [f"# Written by python -m training.serving_config on {os.cpu_count()} CPU cores; measured "
              f"{SIGNATURE} under the session loader (TF Serving's path). Chosen from the export with the "
              "smallest max_batch_size:"]
    os.makedirs(output_dir, exist_ok=True)
    models_config = os.path.join(output_dir, "models.config")
    batching_file = os.path.join(output_dir, "batching_parameters.txt")
    _atomic_write(models_config, text_format.MessageToString(model_server_config(args.exports, args.base_path_prefix)))
    _atomic_write(batching_file, "\n".join(header + lines) + "\n" + text_format.MessageToString(batching))
    print(f"Wrote {models_config} and {batching_file}: {json.dumps(chosen)}")
    print("Serve with: tensorflow_model_server --port=8500 --rest_api_port=8501 "
          f"--model_config_file={os.path.abspath(models_config)} --enable_batching "
          f"--batching_parameters_file={os.path.abspath(batching_file)}"
          + (" --xla_cpu_compilation_enabled=true" if compiled else ""))
    return 0


def compiled_with_xla(path):
    """Whether an export's signatures were compiled with XLA (`export(..., jit_compile=True)`)."""
    try:
        with open(os.path.join(path, "assets.extra", "signatures.json"), encoding="utf-8") as file:
            return bool(json.load(file)[SIGNATURE].get("compiled_with_xla"))
    except (OSError, KeyError, ValueError):
        return False


if __name__ == "__main__":
    sys.exit(main())
