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
split (its impossible dates, trained on their literal reading, count as
right when answered "", as the export's rule answers them), the lowest
score above which at least `--precision` of the answers are right. The
report gives, per set, the score quantiles of right and wrong answers and,
above that threshold, the share of texts answered and the exact match of
those answers; and over all the held-out sets together, the probability
that a right answer scores above a wrong one (the ROC curve's area).
"""

import argparse
import datetime
import json
import os

import numpy as np

from training import datasets, evaluate
from tf_transformer.export import latest_version

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "score_confidence.json")


def threshold_for(scores, right, precision):
    """The lowest score s such that the answers scoring ≥ s are right at least `precision` of the time."""
    order = np.argsort(-scores, kind="stable")
    correct = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    ok = np.nonzero(correct >= precision)[0]
    return float(scores[order][ok[-1]]) if len(ok) else float("inf")


def exported_reference(reference):
    """What the export must answer: the reference if it is a real date, else "" (`dates.valid_date_or_empty`'s rule)."""
    try:
        day = datetime.date.fromisoformat(reference)
    except ValueError:
        return ""
    return reference if 1900 <= day.year <= 2099 and len(reference) == 10 else ""


def right_above_wrong(scores, right):
    """P(a right answer's score > a wrong one's), ties counting half: the area under the ROC curve."""
    if right.all() or not right.any():
        return None
    ranks = np.argsort(np.argsort(scores, kind="stable"), kind="stable").astype("float64")
    for value in np.unique(scores):  # ties share their mean rank
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    positives = right.sum()
    return float((ranks[right].sum() - positives * (positives - 1) / 2) / (positives * (~right).sum()))


def quantiles(values):
    if not len(values):
        return None
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (5, 25, 50, 75, 95)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="saved_models/dates", help="the dates export directory")
    parser.add_argument("--seed", type=int, default=0, help="the training run's --seed")
    parser.add_argument("--precision", type=float, default=0.999)
    parser.add_argument("--keep", type=float, default=0.995, help="share of validation right answers above the second threshold")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    path = latest_version(args.model)
    with open(os.path.join(path, "assets.extra", "training_config.json"), encoding="utf-8") as file:
        train_size = json.load(file)["training"]["train_size"]
    splits = datasets.load(datasets.DATES, seed=args.seed, train_size=train_size).splits  # the run's own held-out sets
    sets = {"validation": splits["validation"], "test": splits["test"], **splits["held_out"]}
    texts = [text for sources, _ in sets.values() for text in sources]
    result = evaluate.translate_reloaded(path, {"saved_model_load": {"n_best": {"text": texts}}})["saved_model_load"]
    answers = [row[0] for row in result["n_best"]["translations"]]
    scores = np.array([row[0] for row in result["n_best"]["scores"]], "float64")

    per_set, start = {}, 0
    for name, (sources, references) in sets.items():
        end = start + len(sources)
        right = np.array([a == exported_reference(r) for a, r in zip(answers[start:end], references)])
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
    held_out = [name for name in per_set if name != "validation"]
    pooled_scores = np.concatenate([per_set[name]["scores"] for name in held_out])
    pooled_right = np.concatenate([per_set[name]["right"] for name in held_out])
    report["held_out_pooled"] = {
        "examples": int(len(pooled_right)), "wrong": int((~pooled_right).sum()),
        "right_above_wrong": right_above_wrong(pooled_scores, pooled_right),
        "answered_above_threshold": round(float((pooled_scores >= threshold).mean()), 4),
        "exact_match_above_threshold": round(float(pooled_right[pooled_scores >= threshold].mean()), 4),
        "exact_match": round(float(pooled_right.mean()), 4),
    }
    # A second rule a client can apply with no wrong answers to learn from: refuse what scores below all
    # but `--keep` of the right answers on its own data (the validation split's).
    floor = float(np.quantile(validation["scores"][validation["right"]], 1 - args.keep))
    above = pooled_scores >= floor
    report["held_out_pooled"]["below_right_quantile"] = {
        "threshold": round(floor, 4), "keep": args.keep, "answered": round(float(above.mean()), 4),
        "wrong_answered": int((~pooled_right & above).sum()), "right_refused": int((pooled_right & ~above).sum()),
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(report, file, indent=2)
    print(f"threshold {threshold:.4f} (validation: {args.precision:.0%} right above it)")
    print(f"{'set':22} {'n':>6} {'exact':>8} {'right p5/p50':>15} {'wrong p50/p95':>15} {'answered':>9} {'exact above':>12}")
    for name, row in report["sets"].items():
        right = "{p5:.3f}/{p50:.3f}".format(**row["right_scores"]) if row["right_scores"] else "-"
        wrong = "{p50:.3f}/{p95:.3f}".format(**row["wrong_scores"]) if row["wrong_scores"] else "-"
        above = row["exact_match_above_threshold"]
        print(f"{name:22} {row['examples']:>6} {row['exact_match']:>8.2%} {right:>15} {wrong:>15} "
              f"{row['answered_above_threshold']:>9.2%} {'' if above is None else format(above, '.2%'):>12}")
    pooled = report["held_out_pooled"]
    print(f"all held-out sets: {pooled['examples']} texts, {pooled['wrong']} wrong; a right answer scores above a wrong "
          f"one with probability {pooled['right_above_wrong']:.3f}; above the threshold {pooled['answered_above_threshold']:.2%} "
          f"answered, {pooled['exact_match_above_threshold']:.2%} of them right (all: {pooled['exact_match']:.2%})")
    second = pooled["below_right_quantile"]
    print(f"refusing below {second['threshold']:.4f} (all but {1 - second['keep']:.1%} of validation's right answers score "
          f"above it): {second['answered']:.2%} answered, {second['wrong_answered']} of {pooled['wrong']} wrong answers "
          f"left, {second['right_refused']} right ones refused")
    return report


if __name__ == "__main__":
    main()
