"""Does an export's score tell a right answer from a wrong one? The dates export on its held-out sets.

    python -m benchmarks.score_confidence --model saved_models/dates

The held-out sets are the ones the training run carved (`dates.load` with
the run's `train_size` and seed): the validation split, the clean test
dates, the perturbed test dates, generated non-dates, impossible dates and
Tatoeba sentences. Each text goes through the export reloaded in a fresh
process that cannot import the package, by the `n_best` signature: its
best hypothesis (what `beam_search` answers) and the score beam search
ranked it by. An answer is right when it is exactly the reference ("" for
what is not a date).

A client picks a threshold once, on data of its own: here the validation
split, the lowest score above which at least `--precision` of the answers
are right. The report gives, per set, the score quantiles of right and
wrong answers and, above that threshold, the share of texts answered and
the exact match of those answers.
"""

import argparse
import json
import os

import numpy as np

from training import dates, evaluate
from training.train import SHARED_TATOEBA
from tf_transformer.export import latest_version

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "score_confidence.json")


def threshold_for(scores, right, precision):
    """The lowest score s such that the answers scoring ≥ s are right at least `precision` of the time."""
    order = np.argsort(-scores, kind="stable")
    correct = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    ok = np.nonzero(correct >= precision)[0]
    return float(scores[order][ok[-1]]) if len(ok) else float("inf")


def quantiles(values):
    if not len(values):
        return None
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (5, 25, 50, 75, 95)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="saved_models/dates", help="the dates export directory")
    parser.add_argument("--seed", type=int, default=0, help="the training run's --seed")
    parser.add_argument("--precision", type=float, default=0.99)
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    path = latest_version(args.model)
    with open(os.path.join(path, "assets.extra", "training_config.json"), encoding="utf-8") as file:
        train_size = json.load(file)["training"]["train_size"]
    splits = dates.load(num_examples=train_size * 21 // 20, seed=args.seed, tatoeba_path=SHARED_TATOEBA)
    sets = {"validation": splits["validation"], "test": splits["test"], **splits["held_out"]}
    texts = [text for sources, _ in sets.values() for text in sources]
    result = evaluate.translate_reloaded(path, {"saved_model_load": {"n_best": {"text": texts}}})["saved_model_load"]
    answers = [row[0] for row in result["n_best"]["translations"]]
    scores = np.array([row[0] for row in result["n_best"]["scores"]], "float64")

    per_set, start = {}, 0
    for name, (sources, references) in sets.items():
        end = start + len(sources)
        right = np.array([a == r for a, r in zip(answers[start:end], references)])
        per_set[name] = {"scores": scores[start:end], "right": right}
        start = end
    validation = per_set["validation"]
    threshold = threshold_for(validation["scores"], validation["right"], args.precision)
    report = {"model": path, "threshold": round(threshold, 4), "precision_target": args.precision, "sets": {}}
    for name, found in per_set.items():
        above = found["scores"] >= threshold
        report["sets"][name] = {
            "examples": int(len(above)),
            "exact_match": round(float(found["right"].mean()), 4),
            "right_scores": quantiles(found["scores"][found["right"]]),
            "wrong_scores": quantiles(found["scores"][~found["right"]]),
            "answered_above_threshold": round(float(above.mean()), 4),
            "exact_match_above_threshold": round(float(found["right"][above].mean()), 4) if above.any() else None,
        }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    print(f"threshold {threshold:.4f} (validation: {args.precision:.0%} right above it)")
    print(f"{'set':28} {'n':>6} {'exact':>7} {'right p50':>10} {'wrong p50':>10} {'answered':>9} {'exact above':>12}")
    for name, row in report["sets"].items():
        right = row["right_scores"]["p50"] if row["right_scores"] else float("nan")
        wrong = row["wrong_scores"]["p50"] if row["wrong_scores"] else float("nan")
        above = row["exact_match_above_threshold"]
        print(f"{name:28} {row['examples']:>6} {row['exact_match']:>7.2%} {right:>10.3f} {wrong:>10.3f} "
              f"{row['answered_above_threshold']:>9.2%} {'' if above is None else format(above, '.2%'):>12}")
    return report


if __name__ == "__main__":
    main()
