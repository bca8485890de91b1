"""Speed of tf_transformer against KerasHub and keras.layers.MultiHeadAttention, in one run.

    python -m benchmarks.run                         # CPU, default sizes, TensorFlow backend
    python -m benchmarks.run --policy mixed_bfloat16
    python -m benchmarks.run --models ours ours_bfloat16_matmuls keras_hub_fused keras_hub_fused_mixed_bfloat16 --skip decode memory
    KERAS_BACKEND=jax python -m benchmarks.run --gpu # base size on one GPU, JAX, no TensorFlow needed

Builds the same encoder–decoder three ways (`benchmarks/peers.py`), checks
that their parameter counts match, then measures, interleaving the
implementations round by round so that ratios hold on a noisy machine:

* training throughput: target tokens/s of `model.fit` steps on synthetic
  tokens, XLA off and on, after warm-up; first-call (trace/compile) time;
* greedy decoding throughput: new tokens/s for a batch, ours with and
  without the key/value cache and KerasHub with its cache, compiled
  (`tf.function` or `jax.jit`), XLA off and on;
* peak memory (tensor bytes in use) of a few training steps, XLA off and
  on, each model in its own subprocess;
* model FLOPs utilisation: training FLOP/s ÷ the matmul FLOP/s of this
  machine, measured in the same run.

Prints a table (medians, spread as min–max, ratios to KerasHub) and writes JSON.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import peers  # noqa: E402

CPU_SIZE = dict(layers=2, d_model=128, heads=4, dff=512, vocab=8000, length=32, batch=32, dropout=0.1)
GPU_SIZE = dict(layers=6, d_model=512, heads=8, dff=2048, vocab=32768, length=128, batch=192, dropout=0.1)


def backend():
    return keras.backend.backend()


def compile_function(fn, jit):
    """`fn` compiled for the backend: tf.function (XLA or not) or jax.jit."""
    if backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=jit)
    if backend() == "jax":
        import jax

        return jax.jit(fn) if jit else fn
    return fn


def block(x):
    """Waits for asynchronous work (JAX dispatches ahead)."""
    return np.asarray(keras.ops.convert_to_numpy(x))


def synthetic_batch(size, seed=0):
    rng = np.random.default_rng(seed)
    source = rng.integers(3, size["vocab"], size=(size["batch"], size["length"])).astype("int32")
    target = rng.integers(3, size["vocab"], size=(size["batch"], size["length"] + 1)).astype("int32")
    return {"encoder_tokens": source, "decoder_tokens": target[:, :-1]}, target[:, 1:]


def training_flops(size):
    """Analytic FLOPs of one training step (forward × 3), matmuls and attention."""
    b, s, t, n, d, f, v = (size[k] for k in ("batch", "length", "length", "layers", "d_model", "dff", "vocab"))  # noqa: E501
    forward = 2 * b * (s * n * (4 * d * d + 2 * d * f) + t * n * (8 * d * d + 2 * d * f) + t * d * v)
    forward += 2 * b * n * d * (2 * s * s + 2 * t * t + 2 * t * s)  # QKᵀ and AV
    return 3 * forward


def matmul_flops_per_second(dtype, n=None, chain=16, repeats=5):
    """This machine's matmul rate, measured now (the MFU denominator).

    A chain of `chain` dependent n×n products in one compiled call, reduced
    to a scalar, so that neither dispatch nor the copy back is timed.
    """
    n = n or (8192 if backend() == "jax" and _on_gpu() else 1024)
    a = keras.random.normal((n, n), dtype=dtype)
    b = keras.ops.cast(keras.random.normal((n, n)) / np.sqrt(n), dtype)  # keeps the norm

    def products(a, b):
        for _ in range(chain):
            a = keras.ops.matmul(a, b)
        return keras.ops.sum(keras.ops.cast(a[:1], "float32"))

    run = compile_function(products, jit=True)
    block(run(a, b))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        block(run(a, b))
        times.append(time.perf_counter() - start)
    return chain * 2 * n**3 / min(times)


def _on_gpu():
    import jax

    return jax.devices()[0].platform == "gpu"


class StepTimer(keras.callbacks.Callback):
    """Times the steps inside `fit`, from the end of its first step to the end of its last.

    `fit`'s own set-up and tear-down (data adapter, iterator) are left out:
    on this project's CPU VM they add a stall of ≈ 0.5 s to some calls at
    random, which swamped the steps being compared.

    `async_safe`: Keras then runs this callback on a worker thread, after it
    has turned the step's logs into Python floats, so each time is taken
    when that step's results exist, while `fit` goes on dispatching the next
    steps. A callback that is not async-safe makes `fit` wait for every
    step before dispatching the next: on a GPU that idled the device for the
    ≈ 10 ms of Python each Keras step costs (a JAX profile of the base size:
    31.8 ms of kernels in a 44 ms step), and every implementation measured
    the same host instead of its own kernels.
    """

    async_safe = True

    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())  # list.append is atomic: safe from worker threads

    def steps_per_second(self):
        ends = sorted(self.ends)  # worker threads may record out of order
        return (len(ends) - 1) / (ends[-1] - ends[0])


def compiled_peer(name, size, jit):
    """Peer `name` built from seed 0 and compiled as every benchmark trains it."""
    keras.utils.set_random_seed(0)
    model = peers.VARIANTS[name](size)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def repeated(x, y, steps):
    """`steps` copies of one batch, one `fit` epoch of `steps` steps."""
    return {k: np.concatenate([v] * steps) for k, v in x.items()}, np.concatenate([y] * steps)


def measure_training(size, names, jit, rounds, steps):
    x, y = synthetic_batch(size)
    xs, ys = repeated(x, y, steps)
    models, first_call = {}, {}
    for name in names:
        model = compiled_peer(name, size, jit)
        gc.collect()  # not the previous models' garbage in this one's first call
        start = time.perf_counter()
        model.fit(x, y, batch_size=size["batch"], epochs=1, verbose=0)  # trace/compile
        first_call[name] = time.perf_counter() - start
        models[name] = model
    counts = peers.check_same_size(models)
    rates = {name: [] for name in names}
    timer = StepTimer()
    for _ in range(rounds):
        for name in names:  # interleaved: each round runs every implementation
            models[name].fit(xs, ys, batch_size=size["batch"], epochs=1, verbose=0, shuffle=False, callbacks=[timer])
            rates[name].append(timer.steps_per_second() * size["batch"] * size["length"])
    return rates, first_call, counts, models


def measure_decoding(size, models, jit, rounds, new_tokens):
    from tf_transformer import decoding

    x, _ = synthetic_batch(size, seed=1)
    source = x["encoder_tokens"]
    runs = {
        "ours (cache)": lambda s: decoding.greedy_search(models["ours"], s, 1, None, new_tokens + 1),
        "ours (no cache)": lambda s: decoding.greedy_search(models["ours"], s, 1, None, new_tokens + 1, use_cache=False),
    }
    for name in ("keras_hub", "keras_hub_fused"):
        if name in models:
            runs[f"{name} (cache)"] = (
                lambda s, model=models[name]: peers.keras_hub_greedy(model, s, 1, new_tokens)
            )
    compiled = {name: compile_function(fn, jit) for name, fn in runs.items()}
    first_call = {}
    for name, fn in compiled.items():
        gc.collect()
        start = time.perf_counter()
        block(fn(source))
        first_call[name] = time.perf_counter() - start
    rates = {name: [] for name in compiled}
    for _ in range(rounds):
        for name, fn in compiled.items():
            start = time.perf_counter()
            block(fn(source))
            rates[name].append(size["batch"] * new_tokens / (time.perf_counter() - start))
    return rates, first_call


def _memory_script(name, size, policy, jit, flash_attention=True):
    switch = "" if flash_attention else "keras.config.disable_flash_attention()\n"
    return (
        "import json, keras\n"
        f"keras.config.set_dtype_policy({policy!r})\n"
        f"{switch}"
        "from benchmarks import peers, run\n"
        f"size = {size!r}\n"
        f"model = run.compiled_peer({name!r}, size, jit={jit!r})\n"
        "xs, ys = run.repeated(*run.synthetic_batch(size), 4)\n"
        "fit = lambda: model.fit(xs, ys, batch_size=size['batch'], verbose=0)\n"
        "print(json.dumps(run.training_peak_bytes(fit)))\n"
    )


def training_peak_bytes(fit):
    """Peak bytes of tensors in use while `fit()` trains.

    What training holds at its peak: weights, optimizer state, activations
    kept for the backward pass, gradients, XLA's workspace. With TensorFlow,
    the allocator's own count (`get_memory_info`; on CPU it needs the BFC
    allocator, `TF_CPU_ALLOCATOR_USE_BFC=true`, which `peak_memory` sets),
    over a second `fit()`, after the first has traced and compiled; with JAX
    on a GPU, the device's `peak_bytes_in_use`; None with JAX on CPU, which
    keeps no statistics. Not the resident set, the benchmark's first
    measure: it also holds what tracing left behind (≈ 330 of the ≈ 350 MiB
    the default model's process grew by in its first `fit`).
    """
    if backend() == "tensorflow":
        import tensorflow as tf

        device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
        fit()
        tf.config.experimental.reset_memory_stats(device)
        fit()
        return tf.config.experimental.get_memory_info(device)["peak"]
    import jax

    if "peak_bytes_in_use" not in (jax.devices()[0].memory_stats() or {}):
        return None
    fit()
    return jax.devices()[0].memory_stats()["peak_bytes_in_use"]


def peak_memory(names, size, policy, jit, flash_attention=True):
    """`training_peak_bytes` of each model, each in a fresh process.

    The processes run side by side (no timing runs meanwhile: this waits
    for them), with JAX's preallocation off so that they do not take the
    card from each other.
    """
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", TF_CPU_ALLOCATOR_USE_BFC="true")
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", _memory_script(name, size, policy, jit, flash_attention)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        for name in names
    }
    return {name: _peak_of(process) for name, process in processes.items()}


def _peak_of(process):
    try:
        stdout, stderr = process.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        print("  memory run timed out")
        return None
    if process.returncode != 0:
        print(f"  memory run failed: {stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(stdout.strip().splitlines()[-1])


def fused_attention_probe(size):
    """Which attention kernel XLA compiled, ours vs keras's MultiHeadAttention (JAX only).

    Compiles one training-shaped forward call of each layer with a padding
    mask and looks for cuDNN's fused attention in the optimised HLO.
    """
    if backend() != "jax":
        return {}
    import jax

    from tf_transformer.layers import MultiHeadAttention

    batch, length, d_model, heads = size["batch"], size["length"], size["d_model"], size["heads"]
    x = keras.random.normal((batch, length, d_model))
    padding = np.ones((batch, length), bool)
    found = {}
    calls = {  # called as a model calls them, so that inputs are cast to the compute dtype
        "ours": (MultiHeadAttention(heads, d_model // heads), {"key_mask": padding}),
        "keras": (keras.layers.MultiHeadAttention(heads, d_model // heads),
                  {"attention_mask": padding[:, None, :] & padding[:, :, None]}),
    }
    for name, (layer, kwargs) in calls.items():
        try:
            text = jax.jit(lambda x, layer=layer, kwargs=kwargs: layer(x, x, **kwargs)).lower(x).compile().as_text()
            found[name] = "cudnn$fmha" in text
        except Exception as error:  # a probe: report, never stop the run
            found[name] = f"failed: {type(error).__name__}: {error}"[:200]
    return found


def best_keras_hub(rates):
    """The KerasHub configuration with the highest median: the peer to beat."""
    candidates = [name for name in rates if name.startswith("keras_hub")]
    return max(candidates, key=lambda name: statistics.median(rates[name]), default=None)


def summarise(rates, reference):
    rows = {}
    for name, values in rates.items():
        median = statistics.median(values)
        rows[name] = {"median": median, "min": min(values), "max": max(values), "rounds": values}
    # Ratios of medians, and of the best rounds: on a shared 2-core VM some
    # rounds stall for seconds whatever runs, and the best round is the
    # least disturbed measure of what the code itself costs (as timeit's min).
    base, best = rows.get(reference, {}).get("median"), rows.get(reference, {}).get("max")
    for row in rows.values():
        row["ratio"] = row["median"] / base if base else None
        row["best_ratio"] = row["max"] / best if best else None
    return rows


def print_table(title, rows, unit, reference):
    print(f"\n{title}; ratios to {reference}")
    print(f"  {'implementation':32s} {'median ' + unit:>18s} {'spread (min–max)':>22s} {'× median':>12s} {'× best round':>17s}")
    for name, row in rows.items():
        ratio = f"{row['ratio']:.2f}" if row.get("ratio") else "-"
        best = f"{row['best_ratio']:.2f}" if row.get("best_ratio") else "-"
        print(f"  {name:32s} {row['median']:18,.0f} {row['min']:10,.0f}–{row['max']:<10,.0f} {ratio:>12s} {best:>17s}", flush=True)


def save(report, path):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as file:
        json.dump(report, file, indent=2)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="the GPU size (base preset, vocab 32768, length 128, batch 192)")
    for key, value in CPU_SIZE.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(value), default=None)
    parser.add_argument("--policy", default=None, help="dtype policy (default float32 on CPU, mixed_bfloat16 with --gpu)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="training steps per round")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens decoded per example")
    parser.add_argument("--xla", choices=["off", "on", "both"], default=None,
                        help="default: both on TensorFlow; on with JAX, whose un-jitted mode runs op by op")
    parser.add_argument("--models", nargs="*", default=list(peers.BUILDERS), choices=list(peers.VARIANTS))
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "decode", "memory"])
    parser.add_argument("--no-flash-attention", action="store_true",
                        help="keras.config.disable_flash_attention() for every model: XLA's attention instead of cuDNN's flash kernel")
    parser.add_argument("--output", default="benchmarks/results/latest.json")
    args = parser.parse_args(argv)
    if args.no_flash_attention:
        keras.config.disable_flash_attention()  # before any model is built: keras's layer reads it then

    size = dict(GPU_SIZE if args.gpu else CPU_SIZE)
    for key in size:
        value = getattr(args, key)
        if value is not None:
            size[key] = value
    size["positions"] = max(size["length"], args.new_tokens) + 1  # ours needs a max_length
    policy = args.policy or ("mixed_bfloat16" if args.gpu else "float32")
    keras.config.set_dtype_policy(policy)
    names = args.models
    xla = args.xla or ("on" if backend() == "jax" else "both")
    jit_modes = {"off": [False], "on": [True], "both": [False, True]}[xla]
    compute_dtype = keras.config.dtype_policy().compute_dtype
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "backend": backend(),
        "policy": policy,
        "flash_attention": not args.no_flash_attention,
        "size": size,
        "matmul_flops_per_second": matmul_flops_per_second(compute_dtype),
        "training_flops_per_step": training_flops(size),
    }
    print(f"tf_transformer benchmarks — {report['date']}, {report['machine']}, backend {backend()}, policy {policy}")
    print(f"size: {size}; matmul rate {report['matmul_flops_per_second'] / 1e9:,.0f} GFLOP/s", flush=True)
    if backend() == "jax":
        report["fused_attention"] = fused_attention_probe(size)
        print(f"cuDNN fused attention in the compiled training step: {report['fused_attention']}", flush=True)
    for jit in jit_modes:
        label = "XLA on" if jit else "XLA off"
        section = report.setdefault(label, {})
        models = None
        if "train" not in args.skip:
            rates, first_call, counts, models = measure_training(size, names, jit, args.rounds, args.steps)
            reference = best_keras_hub(rates)
            rows = summarise(rates, reference)
            for name, row in rows.items():
                steps_per_second = row["median"] / (size["batch"] * size["length"])
                row["mfu"] = steps_per_second * report["training_flops_per_step"] / report["matmul_flops_per_second"]
                row["first_call_s"] = first_call[name]
                row["parameters"] = counts[name]
            section["training"] = rows
            save(report, args.output)  # each section as it ends: a run cut short keeps what it measured
            section["training_reference"] = reference
            print_table(f"Training, {label}: target tokens/s (parameters {counts['ours']:,} each)", rows, "tokens/s", reference)
            print("  " + ", ".join(f"{n}: MFU {r['mfu']:.1%}, first call {r['first_call_s']:.1f}s" for n, r in rows.items()))
        if "decode" not in args.skip:
            if models is None:
                models = {name: peers.VARIANTS[name](size) for name in names if name != "keras_mha"}
            rates, first_call = measure_decoding(size, models, jit, args.rounds, args.new_tokens)
            reference = best_keras_hub(rates)
            rows = summarise(rates, reference)
            for name, row in rows.items():
                row["first_call_s"] = first_call[name]
            cached, uncached = rows["ours (cache)"]["median"], rows["ours (no cache)"]["median"]
            section["decoding"] = rows
            save(report, args.output)
            section["cache_speedup"] = cached / uncached
            section["decoding_reference"] = reference
            print_table(f"Greedy decoding, {label}: batch {size['batch']} × {args.new_tokens} new tokens, tokens/s", rows, "tokens/s", reference)
            print(f"  ours: cache {cached / uncached:.1f}× faster than no cache")
        if "memory" not in args.skip:
            memory = peak_memory(names, size, policy, jit, not args.no_flash_attention)
            section["peak_memory_bytes"] = memory
            print(f"\nPeak training memory, {label} (tensors in use, own process each): " + ", ".join(
                f"{n}: {m / 2**20:,.0f} MiB" if m else f"{n}: not measured" for n, m in memory.items()
            ), flush=True)
    save(report, args.output)
    print(f"\nWrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
