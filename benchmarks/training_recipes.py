"""Training speed of recipes on a real corpus: what each choice costs a step, in the units that fill an hour.

    python -m benchmarks.training_recipes [--dataset '../shared/data/anki-eng-fra-2019/*.tsv.gz'] [--steps 200]

For each variant (a named config with a few flags changed) this builds what
`training.train` builds — the corpus scan, the tokenizers, the streamed
token-budget batches, the compiled model — and runs `model.fit` for
`--steps` steps, timing the steps after the first `--warm-up` (which hold the
tracing, or under XLA most of the compilations). Reported per variant:
milliseconds a step, real (non-pad) target tokens per second, sentences per
second (the fair unit across vocabularies: a smaller vocabulary makes more
tokens of a sentence), the padding fraction, and the minutes one pass over the
corpus takes at that rate. Variants run one after another in one process
each, on the same stream start (a whole pass in the shuffle buffer, so the
corpus's mix of lengths), on an otherwise idle machine. Results go to
`benchmarks/results/training_recipes.json`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "training_recipes.json")
ANKI = os.path.join(ROOT, "..", "shared", "data", "anki-eng-fra-2019", "*.tsv.gz")

# name → (train_and_evaluate options, model overrides): the recipe before (the "tsv" config of the
# 16k-pair Tatoeba file), the one chosen ("tsv-medium") and the choices between them (in float32, as
# they were chosen, unless the name says otherwise).
VARIANTS = {
    "tsv (before): 3 layers, 3,000 per side, 512 tokens": ({"config": "tsv"}, {}),
    "tsv, XLA": ({"config": "tsv", "jit_compile": True}, {}),
    "3 layers, shared 8,000, 1,024 tokens": ({"config": "tsv-medium", "mixed_precision": "off"}, {"num_layers": 3}),
    "3 layers, shared 4,000, 1,024 tokens": ({"config": "tsv-medium", "vocab_size": 4000, "mixed_precision": "off"},
                                             {"num_layers": 3}),
    "2 layers, shared 4,000, 1,024 tokens": ({"config": "tsv-medium", "vocab_size": 4000, "mixed_precision": "off"}, {}),
    "tsv-medium (chosen): 2 layers, shared 8,000, 1,024 tokens, bfloat16 matmuls": ({"config": "tsv-medium"}, {}),
    "tsv-medium, float32": ({"config": "tsv-medium", "mixed_precision": "off"}, {}),
    "tsv-medium, bfloat16 (Keras's mixed_bfloat16)": ({"config": "tsv-medium", "mixed_precision": "bfloat16"}, {}),
    "tsv-medium, 2,048 tokens": ({"config": "tsv-medium", "batch_tokens": 2048, "mixed_precision": "off"}, {}),
    "tsv-medium, XLA": ({"config": "tsv-medium", "jit_compile": True, "mixed_precision": "off"}, {}),
}

# Run in a child per variant, so no variant inherits another's threads or compiled functions.
_CHILD = r"""
import json, sys, time
import dataclasses
import keras, tensorflow as tf
from training import run as training_run

options, overrides, steps, warm_up = json.loads(sys.argv[1])
run = training_run.prepare_run(**options)
config = dataclasses.replace(run.config, model_overrides={**run.config.model_overrides, **overrides})
model, _ = training_run.build_model(config, run.tokenizers, run.strategy, options.get("jit_compile", False))

class Clock(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        now = (time.perf_counter(), float(logs["real_tokens"]), float(logs["target_positions"]))
        if batch == warm_up - 1:
            self.start = now
        self.end = now

clock = Clock()
model.fit(run.data.stream(epochs=None), epochs=1, steps_per_epoch=steps, callbacks=[clock], verbose=0)
seconds = clock.end[0] - clock.start[0]
real = clock.end[1] - clock.start[1]
positions = clock.end[2] - clock.start[2]
sentence_tokens = float(run.data.sample_target_lengths.mean()) - 1  # real labels of a sentence: its tokens and the end
print(json.dumps({
    "parameters": model.count_params(), "ms_per_step": round(1000 * seconds / (steps - warm_up), 1),
    "real_target_tokens_per_s": round(real / seconds, 1), "sentences_per_s": round(real / seconds / sentence_tokens, 1),
    "padding": round(1 - real / positions, 4), "steps_per_pass": round(run.data.one_pass),
    "minutes_per_pass": round(run.data.one_pass * seconds / (steps - warm_up) / 60, 2)}))
"""


def measure(options, overrides, steps, warm_up):
    result = subprocess.run([sys.executable, "-c", _CHILD, json.dumps([options, overrides, steps, warm_up])],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=ANKI)
    parser.add_argument("--steps", type=int, default=200, help="steps a variant (XLA variants: twice, for its compilations)")
    parser.add_argument("--warm-up", type=int, default=40, help="steps not timed (XLA variants: 4 times as many)")
    parser.add_argument("--only", help="run the variants whose name contains this text")
    args = parser.parse_args()
    results = {}
    for name, (options, overrides) in VARIANTS.items():
        if args.only and args.only not in name:
            continue
        xla = options.get("jit_compile", False)
        # A whole pass in the shuffle buffer for every variant, so each is timed on the corpus's mix of lengths.
        options = {"dataset": args.dataset, "reverse": True, "shuffle_buffer": 200_000,
                   "work_dir": tempfile.mkdtemp(prefix="recipe-"), **options}
        results[name] = measure(options, overrides, args.steps * (2 if xla else 1), args.warm_up * (4 if xla else 1))
        print(f"{name:60s} {json.dumps(results[name])}", flush=True)
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w", encoding="utf-8") as file:
        json.dump({"dataset": args.dataset, "steps": args.steps, "warm_up": args.warm_up, "results": results}, file,
                  indent=1)


if __name__ == "__main__":
    main()
