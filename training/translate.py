"""Translate with an exported model: one output line per input, nothing else on stdout.

    python -m training.translate --model saved_models/dates "25 septembre 2009" "Tuesday, June 25, 2009"
    echo "Je t'aime." | python -m training.translate --model saved_models/tatoeba-eng-fra-reversed

Every input line gets one output line, invalid UTF-8 and NUL bytes
included (the export's rule: the dates export reads invalid bytes as
U+FFFD). Uses only `tf.saved_model.load` and the `serving_default` signature (plus
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
    parser.add_argument("--beam", action="store_true", help="use the beam_search signature")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("text", nargs="*", help="texts to translate (default: lines of standard input)")
    args = parser.parse_args(argv)
    # Bytes, as the SavedModel takes them: invalid UTF-8 in an argument (kept by Python as
    # surrogate escapes) or on stdin reaches the export, which answers every string.
    texts = [text.encode("utf-8", "surrogateescape") for text in args.text] or [
        line[:-1] if line.endswith(b"\n") else line for line in sys.stdin.buffer]

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
    signature = tf.saved_model.load(path).signatures["beam_search" if args.beam else "serving_default"]
    for start in range(0, len(texts), args.batch_size):
        batch = tf.constant(texts[start : start + args.batch_size], tf.string)
        for translation in signature(text=batch)["translation"].numpy():
            # One line per input, whatever the model wrote.
            print(translation.decode("utf-8", "replace").replace("\r", " ").replace("\n", " "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
