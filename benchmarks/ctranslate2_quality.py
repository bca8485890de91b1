"""Does the CTranslate2 model translate as the SavedModel does? Same strings and held-out BLEU, float32 and int8.

    python -m benchmarks.ctranslate2_quality --model saved_models/anki-eng-fra-2019-reversed \\
        --dataset '../shared/data/anki-eng-fra-2019/*.tsv.gz' --reverse

Converts the export (its newest version) with `training.export_ctranslate2`
to float32 and int8, rebuilds the held-out test split the export was
measured on (the same rule as `training.train`: a small plain TSV's seeded
split, or the hash-carved split of a streamed corpus) and translates its
sources with the SavedModel (`serving_default`, `beam_search`) and with
CTranslate2 (greedy, beam 4). Reports, per CTranslate2 model and search,
the fraction of strings identical to the SavedModel's, the sources that
differ (the first few, with both outputs), and sacreBLEU / chrF of each
against the references. Results go to `benchmarks/results/ctranslate2_quality.json`.
"""

import argparse
import json
import os
import tempfile

import tensorflow as tf

try:
    import tensorflow_text  # noqa: F401  SentencePiece ops of subword exports
except ImportError:
    pass

from benchmarks.serving import ctranslate2_decoders
from tf_transformer.export import latest_version
from training import evaluate, tsv

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "ctranslate2_quality.json")


def test_split(dataset, reverse, seed):
    """The held-out test pairs `training.train` measured the export on (sources, references)."""
    files = tsv.corpus_files(dataset)
    if tsv.is_small(files):
        return tsv.load(files[0], reverse=reverse, seed=seed, log=lambda message: None)["test"]
    scanned = tsv.scan(files, reverse=reverse, sample_size=1, seed=seed, log=lambda message: None)
    return scanned["test"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="an export directory (newest version) or one version")
    parser.add_argument("--dataset", required=True, help="the corpus it was trained on, as given to training.train")
    parser.add_argument("--reverse", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shown", type=int, default=8, help="differing outputs listed per comparison")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args(argv)
    path = latest_version(args.model)
    sources, references = (list(side) for side in test_split(args.dataset, args.reverse, args.seed))
    loaded = tf.saved_model.load(path)
    with open(os.path.join(path, "assets.extra", "training_config.json"), encoding="utf-8") as file:
        max_length = json.load(file)["model"]["max_length"]

    ours = {search: evaluate.translate_all(loaded.signatures[name], sources, 64)
            for search, name in (("greedy", "serving_default"), ("beam", "beam_search"))}
    result = {"saved_model": path, "examples": len(sources), "saved_model_metrics": {}, "ctranslate2": {}}
    for search, outputs in ours.items():
        result["saved_model_metrics"][search] = evaluate.text_metrics(outputs, references)
    with tempfile.TemporaryDirectory(prefix="ctranslate2-quality-") as directory:
        for name, call in ctranslate2_decoders(path, directory, max_length).items():
            search = name.rsplit("_", 1)[1]
            outputs = [t.decode("utf-8") for t in call(sources)]
            differing = [i for i, (a, b) in enumerate(zip(outputs, ours[search])) if a != b]
            result["ctranslate2"][name] = {
                "same_strings": round(1 - len(differing) / len(sources), 4),
                **evaluate.text_metrics(outputs, references),
                "differing": [{"source": sources[i], "saved_model": ours[search][i], "ctranslate2": outputs[i]}
                              for i in differing[: args.shown]],
            }
            print(f"{name}: {json.dumps({k: v for k, v in result['ctranslate2'][name].items() if 'signature' not in k}, ensure_ascii=False)}",
                  flush=True)
    print("SavedModel:", json.dumps({k: {m: v for m, v in f.items() if "signature" not in m}
                                     for k, f in result["saved_model_metrics"].items()}))
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as file:
        json.dump(result, file, indent=1, ensure_ascii=False)
    return result


if __name__ == "__main__":
    main()
