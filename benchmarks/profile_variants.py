"""Training-step time of model variants, and (JAX) the kernels a step spends its time in.

    python -m benchmarks.profile_variants ours ours:dropout=0 ours:vocab=8 keras_hub_fused
    python -m benchmarks.profile_variants ours ours:vocab=8 keras_hub_fused keras_hub_fused:vocab=8 --xla off
    KERAS_BACKEND=jax python -m benchmarks.profile_variants --gpu ours keras_hub_fused --trace /tmp/trace

Each argument is a peer of `benchmarks/peers.py`, optionally followed by
`:key=value,...` overrides of the benchmark size (`dropout=0` shows what
dropout costs, `vocab=8` what the vocabulary projection and loss cost:
the part of a step every implementation shares, which bounds how much a
faster body can speed up the whole). Every variant is compiled with
`jit_compile=True` (`--xla off`: without) and timed over `fit` steps
(optimizer included) as `benchmarks.run` times them, best of `--repeats`
calls of `--steps` steps. With `--trace` on JAX, a profiler trace of a few steps of
each variant is summarised: device time per kernel, largest first, and per
kind of kernel (matmul, fused attention, random numbers, other fusions).
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from benchmarks import peers, run  # noqa: E402


def parse_variant(text, base):
    name, _, overrides = text.partition(":")
    if name not in peers.VARIANTS:
        raise SystemExit(f"Unknown model {name!r}; choose from {sorted(peers.VARIANTS)}")
    size = dict(base)
    for item in filter(None, overrides.split(",")):
        key, _, value = item.partition("=")
        if key not in size:
            raise SystemExit(f"Unknown size key {key!r} in {text!r}; choose from {sorted(size)}")
        size[key] = type(size[key])(value)
    return name, size


def fit_steps(model, x, y, size, steps, callbacks=()):
    """`steps` training steps of `fit` on copies of one batch."""
    xs, ys = run.repeated(x, y, steps)
    return model.fit(xs, ys, batch_size=size["batch"], epochs=1, verbose=0, shuffle=False, callbacks=list(callbacks))


def step_seconds(model, x, y, size, steps, repeats):
    """Best of `repeats` `fit` calls, each timed as `benchmarks.run` does (`StepTimer`)."""
    fit_steps(model, x, y, size, 2)  # compile
    timer, best = run.StepTimer(), float("inf")
    for _ in range(repeats):
        history = fit_steps(model, x, y, size, steps, [timer])
        best = min(best, 1 / timer.steps_per_second())
    return best, history.history["loss"][-1]


KINDS = (  # (kind, pattern in the kernel's name), first match wins
    ("fused attention", r"fmha|flash|cudnn"),
    ("matmul", r"gemm|nvjet|xmma|cutlass|matmul|dot"),
    ("random numbers", r"rng|threefry|philox|random"),
    ("reduction", r"reduce|reduction"),
    ("copy/transpose", r"copy|transpose|memcpy|memset"),
)


def kind_of(kernel):
    for kind, pattern in KINDS:
        if re.search(pattern, kernel, re.IGNORECASE):
            return kind
    return "other fusions"


def summarise_trace(directory, steps, top=25):
    """Device time per kernel from the Perfetto JSON that `jax.profiler` writes."""
    paths = glob.glob(os.path.join(directory, "**", "*perfetto_trace.json.gz"), recursive=True)
    if not paths:
        print(f"  no Perfetto trace under {directory}")
        return {}
    with gzip.open(max(paths, key=os.path.getmtime)) as file:
        trace = json.load(file)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    process_names = {
        e["pid"]: e.get("args", {}).get("name", "")
        for e in events if e.get("ph") == "M" and e.get("name") == "process_name"
    }
    device_pids = {pid for pid, name in process_names.items() if re.search(r"GPU|gpu|device", name)}
    thread_names = {
        (e["pid"], e["tid"]): e.get("args", {}).get("name", "")
        for e in events if e.get("ph") == "M" and e.get("name") == "thread_name" and e.get("pid") in device_pids
    }
    # A GPU's process shows each kernel on its stream's line, and again on
    # derived lines ("XLA Ops", "XLA Modules"): count the streams only.
    streams = {key for key, name in thread_names.items() if "stream" in name.lower()}
    by_kernel, by_op = collections.Counter(), collections.Counter()
    for event in events:
        key = (event.get("pid"), event.get("tid"))
        if event.get("ph") != "X" or event.get("pid") not in device_pids or "dur" not in event:
            continue
        if key in streams or not streams:
            by_kernel[event["name"]] += event["dur"] / steps  # µs per step
        elif "xla ops" in thread_names.get(key, "").lower():
            by_op[event["name"]] += event["dur"] / steps
    total = sum(by_kernel.values())
    if not total:
        print(f"  no device events (processes: {sorted(set(process_names.values()))[:8]})")
        return {}
    by_kind = collections.Counter()
    for kernel, micros in by_kernel.items():
        by_kind[kind_of(kernel)] += micros
    print(f"  device time per step {total / 1e3:.2f} ms; by kind: " + ", ".join(
        f"{kind} {micros / 1e3:.2f} ms ({micros / total:.0%})" for kind, micros in by_kind.most_common()))
    for kernel, micros in by_kernel.most_common(top):
        print(f"    {micros / 1e3:7.3f} ms {micros / total:5.1%}  {kernel[:110]}")
    if by_op:
        print("  by XLA op: " + "; ".join(f"{op} {micros / 1e3:.2f} ms" for op, micros in by_op.most_common(top)))
    return {
        "total_us": total, "by_kind_us": dict(by_kind), "top_us": dict(by_kernel.most_common(top)),
        "lines": sorted(set(thread_names.values())), "top_ops_us": dict(by_op.most_common(top)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_variants", description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="+", help="peer[:key=value,...]")
    parser.add_argument("--gpu", action="store_true", help="start from the GPU size (base preset)")
    parser.add_argument("--policy", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--xla", choices=("on", "off"), default="on", help="compile the step with XLA (jit_compile)")
    parser.add_argument("--trace", default=None, help="JAX only: directory for profiler traces")
    parser.add_argument("--no-flash-attention", action="store_true",
                        help="keras.config.disable_flash_attention(): XLA's attention instead of cuDNN's flash kernel")
    parser.add_argument("--top", type=int, default=25, help="with --trace: how many of the largest kernels to list")
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    if args.trace and keras.backend.backend() != "jax":
        parser.error("--trace reads JAX's profiler trace: run with KERAS_BACKEND=jax")
    base = dict(run.GPU_SIZE if args.gpu else run.CPU_SIZE)
    variants = [parse_variant(text, base) for text in args.variants]  # every typo before any compile
    policy = args.policy or ("mixed_bfloat16" if args.gpu else "float32")
    results = {}
    for text, (name, size) in zip(args.variants, variants):
        keras.config.set_dtype_policy(policy)  # again: clear_session() below resets it
        if args.no_flash_attention:
            keras.config.disable_flash_attention()  # likewise
        size["positions"] = size["length"] + 1
        x, y = run.synthetic_batch(size)
        model = run.compiled_peer(name, size, jit=args.xla == "on")
        seconds, loss = step_seconds(model, x, y, size, args.steps, args.repeats)
        tokens = size["batch"] * size["length"] / seconds
        print(f"{text:40s} {policy} XLA {args.xla} {seconds * 1e3:8.2f} ms a step, {tokens:12,.0f} target tokens/s (loss {loss:.3f})", flush=True)
        results[text] = {"step_s": seconds, "tokens_per_s": tokens}
        if args.trace and keras.backend.backend() == "jax":
            import jax

            directory = os.path.join(args.trace, re.sub(r"[^A-Za-z0-9_.-]", "_", text))
            traced_steps = 3
            with jax.profiler.trace(directory, create_perfetto_trace=True):
                fit_steps(model, x, y, size, traced_steps)
            results[text]["trace"] = summarise_trace(directory, traced_steps, args.top)
        del model
        keras.backend.clear_session()
    if args.output:
        run.save(results, args.output)


if __name__ == "__main__":
    main()
