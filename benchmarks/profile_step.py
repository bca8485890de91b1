"""Where a training step's time goes: the Transformer body vs the vocabulary projection and loss.

    python -m benchmarks.profile_step                 # default CPU size, TensorFlow
    python -m benchmarks.profile_step --models ours keras_hub_fused

Times forward + backward of one batch (compiled with `tf.function`, best of
`--repeats`) for each model twice: whole (logits and Keras's sparse
cross-entropy), and cut before the output projection (the sum of the last
hidden states as the loss). The difference is the part every implementation
shares — the d_model × vocab projection and the softmax over the vocabulary —
which bounds how much faster one implementation's body can make the whole step.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks import peers, run  # noqa: E402


def body_model(model):
    """The model cut before its output projection (the input of its last Dense)."""
    projection = model.get_layer("output_projection" if any(l.name == "output_projection" for l in model.layers) else "logits")
    return keras.Model(model.inputs, projection.input)


def best_time(function, repeats):
    function()  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for gradient in function():
            if gradient is not None:
                tf.convert_to_tensor(gradient).numpy()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=["ours", "keras_hub_fused"], choices=list(peers.VARIANTS))
    parser.add_argument("--vocab", type=int, default=run.CPU_SIZE["vocab"])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    size = dict(run.CPU_SIZE, vocab=args.vocab, positions=run.CPU_SIZE["length"] + 1)
    x, y = run.synthetic_batch(size)
    x = {k: tf.constant(v) for k, v in x.items()}
    y = tf.constant(y)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    print(f"size: {size}")
    for name in args.models:
        keras.utils.set_random_seed(0)
        model = peers.VARIANTS[name](size)
        body = body_model(model)

        @tf.function
        def whole():
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            return tape.gradient(loss, model.trainable_variables)

        @tf.function
        def without_projection():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.cast(body(x, training=True), "float32"))
            return tape.gradient(loss, body.trainable_variables)

        total, part = best_time(whole, args.repeats), best_time(without_projection, args.repeats)
        print(f"  {name:18s} whole step {total * 1e3:6.1f} ms; body only {part * 1e3:6.1f} ms; "
              f"projection + loss {(total - part) * 1e3:6.1f} ms ({(total - part) / total:.0%})", flush=True)


if __name__ == "__main__":
    main()
