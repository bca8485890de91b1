"""Named training configurations, separate from the model's `TransformerConfig`.

A training config says how to train (data size, tokenizer, epochs, batch,
schedule) and which model preset to start from; command-line flags
override any of it. `for_corpus` picks the default one from what the
corpus is and how many training pairs it has (as OpenNMT-tf's
`--auto_config` does from the model and data).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    preset: str  # TransformerConfig preset
    model_overrides: dict  # fields of TransformerConfig changed from the preset
    tokenizer: str  # "character" or "sentencepiece"
    vocab_size: int  # per side, for sentencepiece
    epochs: int
    batch_size: int  # examples per batch (global, across replicas), unless batch_tokens is set
    warmup_steps: int  # of the paper's schedule (4000 for WMT; fewer for small data)
    learning_rate_scale: float  # factor on the paper's schedule
    label_smoothing: float = 0.1  # the paper's ε
    max_length: int = 64  # tokens per side; longer training pairs are dropped
    train_size: int = 0  # examples used for training (0: all)
    early_stopping_patience: int = 0  # epochs without val_loss improvement (0: off)
    eval_beam_size: int = 1  # 1: greedy evaluation
    shared_vocabulary: bool = False  # one tokenizer for both sides (then embeddings can be shared)
    fold_source: bool = False  # fold case, commas, word-final dots and spaces of the source (tokenizers.fold_text)
    max_output_length: int = 0  # longest output of the export in tokens, start and end included (0: max_length)
    batch_tokens: int = 0  # tokens per batch and side, padding included (0: batch_size examples per batch)
    select_by: str = "loss"  # the checkpoint kept: lowest val_loss, or best held-out BLEU / exact match ("bleu")
    average_last: int = 1  # average the last K epochs' weights before evaluation and export (1: off)
    epoch_passes: float = 1.0  # an epoch is about this fraction of one pass over the training pairs
    # Subword regularization (sentencepiece only): each training pair's pieces sampled every pass from
    # its `subword_nbest_size` best segmentations (`SentencePieceTokenizer.sampled`); 0: the best one.
    subword_nbest_size: int = 0
    subword_alpha: float = 0.1  # smoothing of the sampled segmentations' probabilities
    # The probability that a training pair's copied names (`pipeline.copied_names`: Tom, Mary, Boston…)
    # become random pseudo-names on both sides, drawn anew every pass (`pipeline.swap_names`); 0: off.
    name_swap: float = 0.0
    shuffle_buffer: int = 16384  # examples shuffled together when a corpus is streamed from files (0: `auto_shuffle_buffer`)
    # "off" (float32), Keras's "bfloat16" or "float16" mixed policies, or "bfloat16-matmuls": training steps multiply
    # by the weights in bfloat16 and keep the rest float32 (`fast_paths.set_training_matmul_dtype`); where no GPU and
    # no CPU bfloat16 units are found, a config's "bfloat16-matmuls" trains in float32 (`training.run.set_precision`).
    mixed_precision: str = "off"


# The model fields a named `--preset` sets; a config's overrides of these
# give way to the preset the user named (the other overrides, such as
# shared embeddings, go with the config's vocabulary and stay).
SIZE_FIELDS = ("num_layers", "d_model", "num_heads", "dff", "dropout")

PRECISIONS = ("off", "bfloat16", "float16", "bfloat16-matmuls")

# The most examples an automatic shuffle buffer holds: 135 MiB of padded
# rows at max_length 64.
SHUFFLE_BUFFER_CAP = 262_144

# Corpora of at least this many training pairs get the "tsv-medium" recipe.
MEDIUM_CORPUS_PAIRS = 50_000


CONFIGS = {
    # Dates: one token per character. Small and fast: a 2-core CPU trains it
    # in minutes.
    "dates": TrainingConfig(
        preset="small",
        model_overrides={"d_model": 128, "num_heads": 4, "dff": 256, "dropout": 0.1},
        tokenizer="character",
        vocab_size=0,
        epochs=10,  # the non-dates and the forms added for typed dates needed two more than the 8 that generated dates did
        batch_size=64,
        warmup_steps=400,
        learning_rate_scale=0.5,  # peak 2.2e-3; 2.0 (8.8e-3) diverged in epoch 2
        train_size=48000,
        max_length=48,
        fold_source=True,  # "25 SEPTEMBRE 2009", "  tuesday june 25 2009 " read as the generated forms
        max_output_length=12,  # <s> YYYY-MM-DD </s>: decoding never runs past an ISO date
        average_last=5,  # 99.92 % exact, commas dropped 99.2 %, against 99.52 % and 96.2 % for the kept epoch alone (one run)
    ),
    # A TSV corpus of short sentences (Tatoeba-sized, ~16k pairs).
    "tsv": TrainingConfig(
        preset="small",
        model_overrides={"num_layers": 3, "d_model": 256, "num_heads": 8, "dff": 512, "dropout": 0.2},
        tokenizer="sentencepiece",
        vocab_size=3000,
        epochs=16,  # Tatoeba fr→en through the export: greedy BLEU 55.6 after 12 epochs, 57.7 after 16 (12 min)
        batch_size=64,
        batch_tokens=512,  # about today's 64 sentences a step, in 9 % padding instead of 23 %
        warmup_steps=800,
        learning_rate_scale=1.0,
        max_length=48,
        early_stopping_patience=3,
        eval_beam_size=4,  # the paper's beam; +1.8 BLEU over greedy here
        average_last=5,  # the paper's 5: +2.4 to +6 greedy BLEU on Tatoeba fr→en over the kept epoch alone (benchmarks/README)
    ),
    # A corpus of 50k to about a million pairs (the 150k-pair Anki shards),
    # sized to train, evaluate and export in an hour on a 2-core CPU: the
    # training step is compute-bound there (≈ 100 GFLOP/s), so the recipe
    # spends the hour on passes over the data rather than on a wider model.
    # benchmarks/README.md, "Anki", has what each choice was measured against.
    "tsv-medium": TrainingConfig(
        preset="small",
        # 2 layers: 1.3x the steps/s of 3 (298 against 395 ms a step of 1,024 tokens), so more passes in the hour.
        # No dropout: 5.3 passes underfit rather than overfit; +2.3 greedy BLEU through the export in each
        # of two runs (benchmarks/README.md, "Anki").
        model_overrides={"num_layers": 2, "d_model": 256, "num_heads": 8, "dff": 512, "dropout": 0.0,
                         "share_embeddings": True, "tie_output_embedding": True},
        tokenizer="sentencepiece",
        # One vocabulary for French and English, embeddings shared and tied. 8,000 pieces keep "septembre",
        # "Afrique" and most words whole (4,000 read "septembre" as "sept|emb|re": "seven"), for 1.3x the time
        # of a pass at 4,000 (the [B, T, V] logits and loss dominate a step of this small model).
        vocab_size=8000,
        shared_vocabulary=True,
        epochs=27,  # 9 passes: 44 min on an idle 2-core CPU with bfloat16 matmuls; averaging the last 5 epochs spans the last 1.7
        epoch_passes=1 / 3,
        # Anki writes almost every person Tom or Mary: half the pairs with a copied name get pseudo-names.
        name_swap=0.5,
        batch_size=64,
        batch_tokens=1024,  # 1.3x the real tokens/s of 512 without XLA; 2,048 gained 6 % more for half the updates
        warmup_steps=800,
        learning_rate_scale=1.0,
        max_length=64,  # the corpus's longest sentences (54 French words) fit
        # Off: the validation loss (label-smoothed) flattens from about epoch 15 while held-out BLEU still gains from
        # more epochs and the averaged last 5; with patience 3 a run stopped at epoch 18 of 24 (benchmarks/README.md).
        early_stopping_patience=0,
        eval_beam_size=4,
        average_last=5,
        shuffle_buffer=0,  # a whole pass: the shards are sorted by length, and a smaller window left an epoch's lengths drifting
        # 1.3x the steps/s of float32 on a CPU with bfloat16 units, and validation BLEU level at equal epochs.
        mixed_precision="bfloat16-matmuls",
    ),
}


def for_corpus(kind, train_pairs):
    """The default config's name for a corpus of `kind` ("dates" or "text"): "dates", or a TSV recipe sized by its training pairs."""
    if kind == "dates":
        return "dates"
    return "tsv-medium" if train_pairs >= MEDIUM_CORPUS_PAIRS else "tsv"


def auto_shuffle_buffer(train_pairs):
    """A shuffle buffer of a whole pass where it fits (`SHUFFLE_BUFFER_CAP`).

    Shards cut from a file sorted by length (the Anki release) are read
    side by side, each from its start: a buffer smaller than a pass sees
    the short halves of the shards in one half-pass epoch and the long
    halves in the next (benchmarks.stream_mixing measures it).
    """
    return max(1, min(int(train_pairs), SHUFFLE_BUFFER_CAP))
