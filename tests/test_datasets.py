"""The dataset registry: what `--dataset` names, read into a `Corpus`, in process."""

import gzip
import os

import pytest

from training import configs, datasets, tsv


def _shards(directory, count=3, pairs=400):
    os.makedirs(directory)
    for k in range(count):
        with gzip.open(os.path.join(directory, f"part-{k}.tsv.gz"), "wt", encoding="utf-8") as file:
            file.writelines(f"Tom {k} {i} walks.\tTom {k} {i} marche.\n" for i in range(pairs))
    return directory


def test_names_and_checks():
    assert datasets.name("dates") == "dates"
    assert datasets.name("../data/tatoeba-eng-fra.tsv", reverse=True) == "tatoeba-eng-fra-reversed"
    assert datasets.name("../data/anki/*.tsv.gz") == "anki"
    assert datasets.name("../data/anki/") == "anki"
    assert datasets.config_before_reading("dates") == "dates" and datasets.config_before_reading("a.tsv") is None
    with pytest.raises(datasets.DatasetError, match="--dataset takes 'dates'"):
        datasets.check("/nonexistent/*.tsv")


def test_dates_corpus():
    corpus = datasets.load("dates", train_size=400, seed=1)
    assert corpus.kind == "dates" and not corpus.streamed and corpus.train_pairs == len(corpus.splits["train"][0])
    assert corpus.default_config() == "dates" and corpus.postprocess is not None and "ISO" in corpus.description
    assert corpus.copied_names == ()  # nothing to swap in dates
    assert datasets.load("dates", train_size=400, seed=1).splits == corpus.splits  # seeded


def test_small_tsv_in_memory_and_shards_streamed(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("".join(f"Tom runs {i}.\tTom court {i}.\n" for i in range(2000)))
    small = datasets.load(str(path), seed=0)
    assert small.kind == "text" and not small.streamed and small.postprocess is None
    assert small.default_config() == configs.for_corpus("text", small.train_pairs) == "tsv"
    assert small.copied_names == ("Tom",) and small.samples == datasets.SAMPLES["text"]

    work_dir = tmp_path / "work"
    os.makedirs(work_dir)
    directory = _shards(str(tmp_path / "shards"))
    streamed = datasets.load(directory, str(work_dir), reverse=True, seed=0, tokenizer_sample=50)
    assert streamed.streamed and streamed.files == tuple(tsv.corpus_files(directory))
    assert streamed.name == "shards-reversed" and streamed.lines == 1200 and set(streamed.carved) == {"validation", "test"}
    assert streamed.train_pairs + len(streamed.splits["validation"][0]) + len(streamed.splits["test"][0]) <= 1200
    assert streamed.splits["test"][0][0].startswith("Tom ") and streamed.splits["test"][0][0].endswith("marche.")
    assert len(streamed.sample[0]) == 50 and streamed.copied_names == ("Tom",)
    # A resumed run (tokenizers in the work dir) reads the kept scan, not the shards.
    os.makedirs(work_dir / "tokenizers")
    (work_dir / "tokenizers" / "tokenizers.json").write_text("{}")
    resumed = datasets.load(directory + "/*.tsv.gz", str(work_dir), reverse=True, seed=0, tokenizer_sample=50)
    assert resumed.splits == streamed.splits and resumed.train_pairs == streamed.train_pairs
    assert resumed.length_sample == streamed.length_sample and resumed.sample == ([], [])
