"""Named training configurations, separate from the model's `TransformerConfig`.

A training config says how to train (data size, tokenizer, epochs, batch,
schedule) and which model preset to start from; command-line flags
override any of it.
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
}
