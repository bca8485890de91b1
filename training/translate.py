"""Translate with an exported model: one output line per input, nothing else on stdout.

    python -m training.translate --model saved_models/dates "25 septembre 2009" "Tuesday, June 25, 2009"
    echo "Je t'aime." | python -m training.translate --model saved_models/tatoeba-eng-fra-reversed
    python -m training.translate --model M --n-best 3 --scores "Je t'aime."   # 3 lines: score<TAB>translation
    python -m training.translate --model M --sample --top-p 0.9 --seed 7 "Je t'aime."
    printf "Je t'aime.\tI love you.\n" | python -m training.translate --model M --score   # score<TAB>tokens

Every input line gets one output line (`--n-best N`: N lines, best first),
invalid UTF-8 and NUL bytes included (the export's rule: the dates export
reads invalid bytes as U+FFFD). `--scores` puts the translation's
log-probability before it (with `--n-best`, the length-penalised one beam
search ranks by). `--score` reads `source<TAB>translation` lines and prints
the translation's log-probability and its token count (forced decoding).
Uses only `tf.saved_model.load` and the export's signatures (plus
tensorflow-text's ops, loaded when installed, for subword models): exactly
what TF Serving runs.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.translate", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="export directory (its newest version is used) or one version")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--beam", action="store_true", help="use the beam_search signature")
    mode.add_argument("--n-best", type=int, metavar="N", help="the N best of the beam (n_best signature), N lines each")
    mode.add_argument("--sample", action="store_true", help="draw a translation at random (sample signature)")
    mode.add_argument("--score", action="store_true",
                      help="score `source<TAB>translation` lines: prints log-probability<TAB>tokens (score signature)")
    parser.add_argument("--scores", action="store_true", help="print each translation's log-probability before it")
    parser.add_argument("--temperature", type=float, default=1.0, help="--sample: ≥ 0; 0 is greedy (default 1)")
    parser.add_argument("--top-k", type=int, default=0, help="--sample: among the k most probable tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="--sample: nucleus, in (0, 1] (1: all)")
    parser.add_argument("--seed", type=int, default=0, help="--sample: the same seed, the same sample of a text")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("text", nargs="*", help="texts to translate (default: lines of standard input)")
    args = parser.parse_args(argv)
    if args.n_best is not None and args.n_best < 1:
        parser.error("--n-best must be at least 1")
    if args.sample and not (args.temperature >= 0 and 0 < args.top_p <= 1 and args.top_k >= 0):
        parser.error("--sample needs --temperature ≥ 0, --top-k ≥ 0 and --top-p in (0, 1]")
    # Bytes, as the SavedModel takes them: invalid UTF-8 in an argument (kept by Python as
    # surrogate escapes) or on stdin reaches the export, which answers every string.
    texts = [text.encode("utf-8", "surrogateescape") for text in args.text] or [
        line[:-1] if line.endswith(b"\n") else line for line in sys.stdin.buffer]
    if args.score:
        pairs = [text.rstrip(b"\r").split(b"\t") for text in texts]
        for number, pair in enumerate(pairs, 1):
            if len(pair) < 2:
                raise SystemExit(f"--score reads source<TAB>translation lines; input line {number} has no tab.")
        texts, translations = [pair[0] for pair in pairs], [pair[1] for pair in pairs]

    import tensorflow as tf

    try:
        import tensorflow_text  # noqa: F401  registers the SentencePiece ops of subword exports
    except ImportError:
        pass
    from tf_transformer.export import latest_version

    try:
        path = latest_version(args.model)
    except FileNotFoundError as error:
        raise SystemExit(str(error)) from None
    signatures = tf.saved_model.load(path).signatures
    name = ("beam_search" if args.beam else "n_best" if args.n_best else "sample" if args.sample
            else "score" if args.score else "serving_default")
    if name not in signatures:
        raise SystemExit(f"{path} has no `{name}` signature (exported by an older version); it has: "
                         f"{', '.join(sorted(signatures))}.")
    if args.scores and not (args.n_best or args.sample) and "score" not in signatures:
        raise SystemExit(f"{path} has no `score` signature (exported by an older version): --scores needs it.")
    signature = signatures[name]

    def line(translation, score=None):  # one line per output, whatever the model wrote
        text = translation.decode("utf-8", "replace").replace("\r", " ").replace("\n", " ")
        return f"{score:.4f}\t{text}" if score is not None else text

    for start in range(0, len(texts), args.batch_size):
        batch = tf.constant(texts[start : start + args.batch_size], tf.string)
        rows = int(batch.shape[0])
        if args.score:
            out = signature(text=batch, translation=tf.constant(translations[start : start + args.batch_size], tf.string))
            for score, tokens in zip(out["score"].numpy(), out["tokens"].numpy()):
                print(f"{score:.4f}\t{tokens}")
            continue
        if args.n_best:
            out = signature(text=batch)
            if args.n_best > out["translations"].shape[1]:
                raise SystemExit(f"--n-best {args.n_best}: this export's beam keeps {out['translations'].shape[1]}.")
            for hypotheses, scores in zip(out["translations"].numpy(), out["scores"].numpy()):
                for translation, score in list(zip(hypotheses, scores))[: args.n_best]:
                    print(line(translation, score if args.scores else None))
            continue
        if args.sample:
            out = signature(text=batch, temperature=tf.fill([rows], args.temperature), top_k=tf.fill([rows], args.top_k),
                            top_p=tf.fill([rows], args.top_p), seed=tf.fill([rows], args.seed))
            scores = out["score"].numpy()
        else:
            out = signature(text=batch)
            scores = signatures["score"](text=batch, translation=out["translation"])["score"].numpy() if args.scores else None
        for i, translation in enumerate(out["translation"].numpy()):
            print(line(translation, scores[i] if args.scores else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
