"""Plot the cross-attention of an exported model, one panel per head.

    python -m training.plot_attention --model saved_models/dates "25 septembre 2009"

Translates the text with the export's model (its `assets.extra/model.keras`
and tokenizers), then draws, for each head of the chosen decoder layer, the
weights with which each output token (rows) attends to each source token
(columns) — the course's pictures of `q<t>·k<s>` — to a PNG.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.plot_attention", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="export directory (newest version) or one version")
    parser.add_argument("--layer", type=int, default=-1, help="decoder layer to show (default: the last)")
    parser.add_argument("--output", default="attention.png", help="PNG file to write")
    parser.add_argument("text", help="the source text")
    args = parser.parse_args(argv)

    import keras
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    import numpy as np
    import tensorflow as tf

    import tf_transformer
    from tf_transformer.export import latest_version
    from tf_transformer.tokenizers import END, START, load_tokenizers

    path = latest_version(args.model)
    extra = os.path.join(path, "assets.extra")
    model = keras.saving.load_model(os.path.join(extra, "model.keras"))
    source_tokenizer, target_tokenizer = load_tokenizers(extra)

    source_ids = source_tokenizer.tokenize(tf.constant([args.text])).to_tensor()[:, : model.max_length]
    output_ids = tf_transformer.decoding.greedy_search(model, source_ids, START, END, model.max_length)
    output_ids = np.asarray(output_ids)[0]
    length = int(np.argmax(output_ids == END)) + 1 if END in output_ids else len(output_ids)
    decoder_input = output_ids[None, : length - 1]  # what each row attends from: start, y<1>, …
    weights = model.attention_weights(source_ids, decoder_input)["decoder_cross"][args.layer]
    weights = keras.ops.convert_to_numpy(weights)[0]  # [H, T, S]

    source_labels = source_tokenizer.id_to_token(np.asarray(source_ids)[0].tolist())
    output_labels = target_tokenizer.id_to_token(output_ids[1:length].tolist())  # the token each row predicts
    heads = weights.shape[0]
    columns = min(heads, 4)
    rows = (heads + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns + 1, 2.8 * rows + 1), squeeze=False)
    for head, axis in enumerate(axes.flat):
        if head >= heads:
            axis.axis("off")
            continue
        axis.imshow(weights[head], cmap="viridis", vmin=0.0, vmax=1.0)
        axis.set_title(f"head {head}")
        axis.set_xticks(range(len(source_labels)), source_labels, fontsize=7, rotation=90)
        axis.set_yticks(range(len(output_labels)), output_labels, fontsize=7)
    translation = target_tokenizer.detokenize(output_ids[None]).numpy()[0].decode("utf-8")
    layer = args.layer if args.layer >= 0 else len(model.decoder.blocks) + args.layer
    figure.suptitle(f"Cross-attention, decoder layer {layer}: {args.text!r} → {translation!r}\n(rows: output tokens, columns: source tokens)")
    figure.tight_layout()
    figure.savefig(args.output, dpi=120)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
