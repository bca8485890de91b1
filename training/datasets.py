"""The dataset registry: what `--dataset` names, read into a typed `Corpus`.

Two kinds, and the only place that tells them apart by name:

- `"dates"`: the embedded human-readable dates (`training.dates`),
  generated in memory; exact match, a calendar check on the outputs.
- a TSV corpus (`source<TAB>target` lines; a file, a directory or a quoted
  glob of `.tsv`/`.tsv.gz` shards, `training.tsv`): one small plain file
  is read into memory with seeded held-out splits; anything else is
  streamed from its shards, scanned once (counts, hash-carved held-out
  splits, the tokenizers' sample). BLEU and chrF.

Everything a run needs from the dataset comes from the `Corpus`: its
splits, the tokenizers' sample, where training pairs come from, the metric
kind, the samples shown after training, the outputs' post-processing, the
export's description and the training config that fits it.
"""

import dataclasses
import glob
import json
import os
import random

from training import configs, dates, pipeline, tsv

DATES = "dates"

DESCRIPTIONS = {
    "dates": "A human-readable date (en, fr, es, de, it, pt, nl; any case, spacing and commas; numeric dates "
    "day-first, two-digit years 1950-2049) -> ISO YYYY-MM-DD. Text that is not a date, including partial and "
    "impossible dates (31 April), gets the empty string. Blank input gets the empty string.",
    "text": "Source-language text -> its translation. Inputs longer than max_input_tokens are truncated; "
    "blank input gets the empty string.",
}

SAMPLES = {
    "dates": [
        "25 septembre 2009", "Tuesday, June 25, 2009", "25/06/2009", "25.06.09", "3 de abril de 1975",
        # As people type them, and texts that are not dates (answered "").
        "25 SEPTEMBRE 2009", "  25 septembre 2009  ", "tuesday june 25 2009", "2009/09/25", "June 25, 09",
        "xxxxxxxxxxxxxxxx", "Jane visite l'Afrique en septembre.", "31 février 2009", "juin 2009",
    ],
    "text": [
        "Jane visite l'Afrique en septembre.",
        "Je t'aime.",
        "Où est la gare ?",
        "Il fait beau aujourd'hui.",
        "Nous avons besoin d'aide.",
    ],
}

# Sentences the dates model never sees, to measure how it refuses text that is not a date.
SHARED_TATOEBA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                              "tatoeba-eng-fra.tsv")

# Dates: a twentieth more examples are generated than trained on, the held-out dates.
DATES_HELD_OUT = 1 / 20

LENGTH_SAMPLE = 20000  # streamed corpora: pairs whose token lengths estimate the epoch length


@dataclasses.dataclass(frozen=True)
class Corpus:
    """A dataset as a run uses it (`load`)."""

    name: str  # the export's default name: "dates", "tatoeba-eng-fra-reversed"
    kind: str  # "dates" (exact match, calendar check) or "text" (BLEU, chrF)
    splits: dict  # split → (sources, targets): validation, test, perhaps held_out sets and, in memory, train
    sample: tuple  # (sources, targets) the tokenizers learn from; empty when a resumed run reuses them
    train_pairs: int
    files: tuple = None  # the shards training streams from; None: the pairs are in `splits["train"]`
    lines: int = 0  # streamed: raw lines in the shards (held-out and malformed included)
    carved: tuple = ()  # streamed: the held-out splits carved from the shards by hash
    length_sample: tuple = None  # streamed: pairs whose token lengths estimate the epoch length
    copied_names: tuple = ()  # `pipeline.copied_names`, for `swap_names`

    @property
    def streamed(self):
        return self.files is not None

    @property
    def description(self):
        return DESCRIPTIONS[self.kind]

    @property
    def samples(self):
        return SAMPLES[self.kind]

    @property
    def postprocess(self):
        """The export's rule on outputs: "" for what is not a calendar date (dates); none for text."""
        return dates.valid_date_or_empty if self.kind == "dates" else None

    def default_config(self):
        """The training config that fits the corpus (`configs.for_corpus`)."""
        return configs.for_corpus(self.kind, self.train_pairs)


class DatasetError(tsv.DatasetError):
    """`--dataset` names nothing usable, or the corpus gives no held-out pairs."""


def check(spec):
    """Raises `DatasetError`, before anything is read, when `spec` names nothing usable."""
    if spec != DATES:
        try:
            tsv.corpus_files(spec)
        except tsv.DatasetError as error:
            raise DatasetError(f"{error}. --dataset takes 'dates', a .tsv or .tsv.gz file, a directory of them "
                               "or a quoted glob ('data/*.tsv.gz').") from None


def config_before_reading(spec):
    """The config known before the corpus is read ("dates"), or None when its size decides."""
    return "dates" if spec == DATES else None


def name(spec, reverse=False):
    """The export's default name: `data/tatoeba-eng-fra.tsv` → `tatoeba-eng-fra`, `-reversed` when read target → source.

    A directory or a glob gives its folder's name.
    """
    if spec == DATES:
        return DATES
    path = os.path.dirname(spec) if glob.has_magic(spec) else spec.rstrip("/")
    base = os.path.basename(path) or "corpus"
    for suffix in (".gz", ".tsv", ".txt"):
        base = base[: -len(suffix)] if base.endswith(suffix) else base
    return base + ("-reversed" if reverse else "")


def load(spec, work_dir=None, reverse=False, seed=0, train_size=0, tokenizer_sample=1_000_000, validation=None,
         test=None):
    """The `Corpus` that `spec` names.

    In memory: the dates (`train_size` of them, default the dates config's),
    or one small plain TSV (`tsv.is_small`) without `validation`/`test`
    files (seeded, exactly-sized held-out splits). Otherwise streamed:
    `tsv.scan` reads every shard once in bounded memory and its result, but
    the sample, is kept in `work_dir/corpus.json` (when given), so a resumed
    run (whose tokenizers are in `work_dir`) does not read the corpus again.
    """
    if spec == DATES:
        train_size = train_size or configs.CONFIGS["dates"].train_size
        splits = dates.load(num_examples=train_size + int(train_size * DATES_HELD_OUT), seed=seed,
                            tatoeba_path=SHARED_TATOEBA)
        return _in_memory(DATES, "dates", splits, seed, tokenizer_sample, names=False)
    try:
        files = tsv.corpus_files(spec)
        given = {split: path for split, path in (("validation", validation), ("test", test)) if path}
        if tsv.is_small(files) and not given:
            splits = tsv.load(files[0], reverse=reverse, seed=seed, train_size=train_size or None)
            return _in_memory(name(spec, reverse), "text", splits, seed, tokenizer_sample)
        splits = {split: tsv.read_pairs(path, reverse=reverse)[:2] for split, path in given.items()}
        scanned = _scan(files, work_dir, reverse, seed, tokenizer_sample, carve=[s for s in ("validation", "test")
                                                                                  if s not in given])
    except tsv.DatasetError as error:
        raise DatasetError(str(error)) from None
    splits.update({split: tuple(scanned[split]) for split in ("validation", "test") if split in scanned})
    for split in ("validation", "test"):
        if not splits[split][0]:
            raise DatasetError(f"The corpus gave no {split} pairs; give --{split} FILE.")
    return Corpus(name(spec, reverse), "text", splits, tuple(scanned["sample"]), scanned["train_pairs"],
                  files=tuple(files), lines=scanned["lines"], carved=tuple(scanned["carved"]),
                  length_sample=scanned.get("length_sample"), copied_names=tuple(scanned.get("copied_names", ())))


def _in_memory(corpus_name, kind, splits, seed, tokenizer_sample, names=True):
    train = splits["train"]
    return Corpus(corpus_name, kind, splits, _sample(train, seed, tokenizer_sample), len(train[0]),
                  copied_names=tuple(copied_names(*train)) if names else ())


def _scan(files, work_dir, reverse, seed, tokenizer_sample, carve):
    cached = work_dir and os.path.join(work_dir, "corpus.json")
    if cached and os.path.exists(os.path.join(work_dir, "tokenizers", "tokenizers.json")) and os.path.exists(cached):
        with open(cached, encoding="utf-8") as file:
            scanned = json.load(file)
        scanned["sample"] = ([], [])
        return scanned
    scanned = tsv.scan(files, reverse=reverse, sample_size=tokenizer_sample, seed=seed, carve=carve)
    # The pairs the epoch length is estimated from, kept with the scan so that a resumed run
    # estimates the same length (and so skips to the same lines). Drawn at random from the
    # sample: below the reservoir's size the sample is the corpus in file order, and the
    # Anki shards are sorted by length.
    sample = list(zip(*scanned["sample"]))
    chosen = sorted(random.Random(seed).sample(range(len(sample)), min(len(sample), LENGTH_SAMPLE)))
    scanned["length_sample"] = [[sample[i][side] for i in chosen] for side in (0, 1)]
    scanned["copied_names"] = copied_names(*scanned["sample"])
    if cached:
        with open(cached + ".tmp", "w", encoding="utf-8") as file:
            json.dump({key: value for key, value in scanned.items() if key != "sample"}, file, ensure_ascii=False)
        os.replace(cached + ".tmp", cached)
    return scanned


def copied_names(sources, targets):
    """`pipeline.copied_names` found in at least 3 of every 10,000 pairs (at least 10): on Anki, 11 names from Tom to Kyoto."""
    return pipeline.copied_names(sources, targets, min_pairs=max(10, round(3e-4 * len(sources))))


def _sample(train, seed, size):
    """A seeded sample of at most `size` training pairs (all of them when fewer)."""
    sources, targets = train
    if len(sources) <= size:
        return sources, targets
    chosen = sorted(random.Random(seed).sample(range(len(sources)), size))
    return [sources[i] for i in chosen], [targets[i] for i in chosen]
