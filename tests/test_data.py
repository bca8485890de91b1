"""Datasets, tokenizers and the input pipeline."""

import datetime
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tf_transformer.tokenizers import END, START, CharacterTokenizer, SentencePieceTokenizer, load_tokenizers, save_tokenizers
from training import dates, pipeline, tsv


@pytest.fixture(scope="module")
def date_splits():
    return dates.load(num_examples=6000, test_size=1000, seed=0)


SPLITS = ("train", "validation", "test")


def test_dates_are_reproducible_and_held_out_by_date(date_splits):
    again = dates.load(num_examples=6000, test_size=1000, seed=0)
    assert again == date_splits
    train, validation, test = (set(dates.fold(date_splits[s][0])) for s in SPLITS)
    assert not train & validation and not train & test and not validation & test
    assert len(date_splits["test"][0]) == 1000
    # No held-out date occurs in training in any form.
    def real_dates(split):  # impossible dates (read literally) are held out by text, not by date
        targets = sorted(set(date_splits[split][1]) - {""})
        checked = dates.valid_date_or_empty(None, tf.constant(targets)).numpy()
        return {t for t, c in zip(targets, checked) if c}

    train_dates, validation_dates, test_dates = (real_dates(s) for s in SPLITS)
    assert not train_dates & test_dates and not train_dates & validation_dates
    assert "" not in date_splits["test"][1]  # the clean test set is dates only


def test_dates_targets_are_iso_in_range_impossible_or_empty(date_splits):
    impossible = 0
    for name in SPLITS:
        for iso in date_splits[name][1]:
            if iso == "":
                continue
            year, month, day = map(int, re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})", iso).groups())
            assert 1900 <= year <= 2099
            try:
                datetime.date(year, month, day)
            except ValueError:
                assert name != "test"  # impossible dates, read literally, are trained on, never the clean test
                impossible += 1
    total = sum(len(date_splits[name][1]) for name in SPLITS)
    assert 0.005 < impossible / total < 0.04
    empty = sum(t == "" for t in date_splits["train"][1]) / len(date_splits["train"][1])
    assert 0.05 < empty < 0.15  # about a tenth of the training examples are not dates


def test_non_dates_hold_no_date():
    texts = dates.non_dates(3000, seed=0)
    assert len(set(dates.fold(texts))) == 3000
    assert any(t.isdigit() for t in texts) and any(":" in t for t in texts)  # numbers and times
    for text in texts:  # nothing with a day, a month and a four-digit year in numbers
        assert not re.fullmatch(r"\d{1,2}[/.\-]\d{1,2}[/.\-]\d{4}", text), text


def test_impossible_dates_are_read_literally_and_refused_by_the_export_check():
    rng = __import__("random").Random(0)
    pairs = [dates.impossible_date(rng, locale) for locale in dates.LOCALES for _ in range(40)]
    for text, literal in pairs:
        year, month, day = map(int, literal.split("-"))
        with pytest.raises(ValueError):
            datetime.date(year, month, day)
        assert str(day) in text
    assert any(t.startswith(("29 février", "30 février", "31 février")) for t, _ in pairs)
    literals = [literal for _, literal in pairs]
    checked = dates.valid_date_or_empty(None, tf.constant(literals)).numpy()
    assert set(checked) == {b""}
    real = ["2009-06-25", "2000-02-29", "1904-02-29", "2099-12-31", "1900-01-01"]
    wrong = ["1900-02-29", "2009-13-01", "2009-00-10", "2009-06-00", "2100-01-01", "1899-12-31",
             "2009-06-25x", "2009-6-25", "", "44444444", "2009-04-31"]
    checked = dates.valid_date_or_empty(None, tf.constant(real + wrong)).numpy()
    assert [c.decode() for c in checked] == real + [""] * len(wrong)


def test_folding_makes_trivial_variants_one_input(tmp_path):
    tokenizer = CharacterTokenizer.train(["25 septembre 2009", "Tuesday, June 25, 2009"], fold=True)
    variants = ["25 SEPTEMBRE 2009", "  25 septembre 2009  ", "25  septembre\u00a02009", "25 Septembre 2009."]
    ids = tokenizer.tokenize(tf.constant(variants)).to_list()
    assert all(i == ids[0] for i in ids)
    assert tokenizer.tokenize(tf.constant(["tuesday june 25 2009"])).to_list() == \
        tokenizer.tokenize(tf.constant(["Tuesday, June 25, 2009"])).to_list()
    assert tokenizer.tokenize(tf.constant(["25.06.09"])).to_list() != tokenizer.tokenize(tf.constant(["250609"])).to_list()
    # Invalid UTF-8 is replaced, not an error that fails the batch.
    assert tokenizer.tokenize(tf.constant([b"\xff\xfe25", "25"])).nrows() == 2
    tokenizer.save(str(tmp_path / "source.json"))  # folding is part of the saved tokenizer
    reloaded = CharacterTokenizer.from_file(str(tmp_path / "source.json"))
    assert reloaded.tokenize(tf.constant(variants)).to_list() == ids


def test_perturbed_sets_are_the_held_out_dates_as_people_type_them(date_splits):
    held_out = date_splits["held_out"]
    test_dates = set(date_splits["test"][1])
    for name in ("upper", "lower", "spaces_around", "doubled_spaces", "commas_dropped", "year_first"):
        sources, targets = held_out[name]
        assert len(sources) > 50 and set(targets) <= test_dates, name
    assert all("," not in s for s in held_out["commas_dropped"][0])
    for text, iso in zip(*held_out["year_first"]):
        year, month, day = map(int, re.fullmatch(r"(\d{4})[/.\-](\d{1,2})[/.\-](\d{1,2})", text).groups())
        assert datetime.date(year, month, day).isoformat() == iso
    non_dates = set(held_out["non_dates"][0])
    assert set(held_out["non_dates"][1]) == {""} and not non_dates & set(date_splits["train"][0])
    assert set(held_out["impossible_dates"][1]) == {""} and not set(held_out["impossible_dates"][0]) & set(date_splits["train"][0])


def test_dates_cover_languages_and_forms(date_splits):
    text = " ".join(date_splits["train"][0])
    for word in ("September", "septembre", "septiembre", "September", "settembre", "setembro", "september"):
        assert word in text, word
    assert re.search(r"\b\d{1,2}(st|nd|rd|th)\b", text)  # English ordinals
    assert re.search(r"\b\d{4}-\d{2}-\d{2}\b", text)  # ISO itself
    assert re.search(r"\b\d{1,2}\.\d{1,2}\.\d{2}\b", text)  # dotted two-digit years


def test_dates_reading_rules(date_splits):
    pairs = {t: iso for t, iso in (dict(zip(*date_splits["train"])) | dict(zip(*date_splits["test"]))).items() if iso}
    checked = {"slash_four": 0, "two_digit": 0, "month_first": 0}
    for text, iso in pairs.items():
        year, month, day = map(int, iso.split("-"))
        numeric = re.fullmatch(r"(\d{1,2})([/.\-])(\d{1,2})\2(\d{2}|\d{4})", text)
        if not numeric or not iso or dates.valid_date_or_empty(None, tf.constant([iso])).numpy()[0] == b"":
            continue  # not a date, or an impossible one read literally
        first, _, second, year_text = numeric.groups()
        first, second = int(first), int(second)
        if len(year_text) == 2:
            assert 1950 <= year <= 2049 and year % 100 == int(year_text)
            checked["two_digit"] += 1
        if second > 12:  # only US month-first dates can have this
            assert (month, day) == (first, second)
            checked["month_first"] += 1
        else:  # day-first, including 03/04/2009 = 3 April
            assert (day, month) == (first, second), (text, iso)
            checked["slash_four"] += len(year_text) == 4
    assert all(count > 10 for count in checked.values()), checked


def test_dates_wrong_weekday_does_not_change_the_date():
    rng = __import__("random").Random(0)
    date = datetime.date(2009, 6, 25)  # a Thursday
    texts = {dates.render(date, "en_US", "pattern", "EEEE, MMMM d, y", rng) for _ in range(40)}
    assert "Thursday, June 25, 2009" in texts and len(texts) > 1  # some carry another weekday


def write(tmp_path, text, name="pairs.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_tsv_reads_pairs_ignores_extra_columns_and_reverses(tmp_path):
    path = write(tmp_path, "Go.\tVa !\tCC-BY 2.0 (France) Attribution\nHi.\tSalut.\n\n")
    sources, targets, malformed = tsv.read_pairs(path)
    assert sources == ["Go.", "Hi."] and targets == ["Va !", "Salut."] and malformed == []
    sources, targets, _ = tsv.read_pairs(path, reverse=True)
    assert sources == ["Va !", "Salut."]


def test_tsv_errors(tmp_path):
    with pytest.raises(tsv.DatasetError, match="not found"):
        tsv.read_pairs(str(tmp_path / "missing.tsv"))
    with pytest.raises(tsv.DatasetError, match="empty"):
        tsv.read_pairs(write(tmp_path, "\n\n", "empty.tsv"))
    with pytest.raises(tsv.DatasetError, match=r"lines 2, 3"):
        tsv.read_pairs(write(tmp_path, "a\tb\nno tab here\n\tonly target\nc\td\n", "bad.tsv"))
    # A rare malformed line in a big corpus is skipped and reported, never silently.
    lines = "".join(f"s{i}\tt{i}\n" for i in range(300)) + "broken line\n"
    sources, _, malformed = tsv.read_pairs(write(tmp_path, lines, "big.tsv"))
    assert len(sources) == 300 and malformed == [301]


def test_tsv_splits_keep_a_source_in_one_split(tmp_path):
    lines = "".join(f"sentence {i}\ttranslation {i}{suffix}\n" for i in range(400) for suffix in ("", " bis"))
    splits = tsv.load(write(tmp_path, lines), validation_size=40, test_size=40, log=lambda message: None)
    train, test = set(splits["train"][0]), set(splits["test"][0])
    assert not train & test and len(splits["test"][0]) >= 40


SENTENCES = ["Où est-ce que tu vas ? « Ça alors ! »", "Jane visite l'Afrique en septembre.", "Il a 25 ans, n'est-ce pas ?"]


def test_character_tokenizer_round_trip(tmp_path):
    tokenizer = CharacterTokenizer.train(SENTENCES + ["2009-06-25"])
    ids = tokenizer.tokenize(tf.constant(SENTENCES + ["2009-06-25", ""]))
    assert int(tf.reduce_min(ids.flat_values)) >= 4  # no reserved ids from text
    for decoded in (tokenizer.detokenize(ids), tokenizer.detokenize(ids.to_tensor())):
        assert [t.decode() for t in decoded.numpy()] == SENTENCES + ["2009-06-25", ""]
    with_specials = tf.constant([[START, *ids[1].numpy().tolist(), END, 0, 0]])
    assert tokenizer.detokenize(with_specials).numpy()[0].decode() == SENTENCES[1]
    save_tokenizers(str(tmp_path), tokenizer, tokenizer)
    source, _ = load_tokenizers(str(tmp_path))
    assert source.characters == tokenizer.characters


def test_sentencepiece_tokenizer_round_trip(tmp_path):
    corpus = [line.split("\t")[1] for line in open("../shared/data/tatoeba-eng-fra.tsv", encoding="utf-8")][:3000]
    tokenizer = SentencePieceTokenizer.train(corpus, vocab_size=600)
    ids = tokenizer.tokenize(tf.constant(SENTENCES + ["Zürich ☃"]))  # unseen characters: byte fallback
    decoded = [t.decode() for t in tokenizer.detokenize(ids.to_tensor()).numpy()]
    assert decoded == SENTENCES + ["Zürich ☃"]
    save_tokenizers(str(tmp_path), tokenizer, tokenizer)
    reloaded, _ = load_tokenizers(str(tmp_path))
    np.testing.assert_array_equal(reloaded.tokenize(tf.constant(SENTENCES)).to_tensor(), ids[:3].to_tensor())


def test_pipeline_shapes_teacher_forcing_and_bucketing(date_splits):
    sources, targets = zip(*[(s, t) for s, t in zip(*date_splits["train"]) if t])  # dates only
    sources, targets = list(sources), list(targets)
    source_tokenizer, target_tokenizer = CharacterTokenizer.train(sources), CharacterTokenizer.train(targets)
    source_ids, target_ids, dropped = pipeline.encode_pairs(sources, targets, source_tokenizer, target_tokenizer, 24)
    assert dropped > 0  # the longest dates exceed 24 characters and are dropped, not cut
    assert int(tf.reduce_max(source_ids.row_lengths())) <= 24
    dataset = pipeline.make_dataset(source_ids, target_ids, batch_size=32, max_length=24, shuffle=True)
    real = padded = 0
    for inputs, labels in dataset.take(40):
        encoder, decoder = inputs["encoder_tokens"].numpy(), inputs["decoder_tokens"].numpy()
        labels = labels.numpy()
        assert encoder.dtype == np.int32 and decoder.shape == labels.shape
        # Training batches have a few fixed shapes: full batches, bucket-boundary lengths.
        assert len(encoder) == 32 and encoder.shape[1] in (7, 11, 15, 19, 23, 24)
        assert np.all(decoder[:, 0] == START)
        np.testing.assert_array_equal(decoder[:, 1:], labels[:, :-1])  # shifted by one
        assert np.all((labels == END).sum(1) == 1)
        real += (encoder != 0).sum()
        padded += encoder.size
    # Evaluation keeps every example, in the same few lengths (one XLA
    # compile of the test step per shape, not per batch).
    lengths, rows = set(), 0
    for inputs, labels in pipeline.make_dataset(source_ids, target_ids, batch_size=32, max_length=24):
        lengths.add(inputs["encoder_tokens"].shape[1])
        rows += len(labels)
    assert rows == int(source_ids.nrows())
    assert lengths <= {7, 11, 15, 19, 23, 24}
    # Bucketing keeps padding well below plain padded batches of the same data.
    plain = tf.data.Dataset.from_tensor_slices(source_ids).map(tf.identity).shuffle(10000, seed=0).padded_batch(32)
    plain_real = plain_padded = 0
    for batch in plain.take(40):
        plain_real += (batch.numpy() != 0).sum()
        plain_padded += batch.numpy().size
    assert real / padded > 0.7 and real / padded > plain_real / plain_padded + 0.1


def test_backup_falls_back_to_the_previous_one_when_the_latest_is_truncated(tmp_path):
    import keras

    from training.callbacks import BackupAndRestore

    class StopAt(keras.callbacks.Callback):
        def __init__(self, epoch):
            super().__init__()
            self.epoch = epoch

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == self.epoch:
                raise RuntimeError("killed")

    x, y = np.ones((8, 3), "float32"), np.ones((8, 1), "float32")

    def model():
        m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        m.compile("sgd", "mse")
        return m

    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="killed"):
        model().fit(x, y, epochs=5, verbose=0, callbacks=[BackupAndRestore(backup), StopAt(3)])
    latest = os.path.join(backup, "latest.weights.h5")
    with open(latest, "r+b") as file:  # a crash in the middle of writing it
        file.truncate(100)
    messages, epochs = [], []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))
    model().fit(x, y, epochs=5, verbose=0, callbacks=[BackupAndRestore(backup, log=messages.append), record])
    assert len(messages) == 1 and latest in messages[0] and "previous backup" in messages[0]
    assert epochs[0] == 2  # the previous backup (after epoch 2 of 5), not the truncated one (after 3)
    # Nothing usable at all: a clear error naming the file.
    os.makedirs(backup, exist_ok=True)
    with open(latest, "wb") as file:
        file.write(b"not a weights file")
    with pytest.raises(RuntimeError, match="latest.weights.h5 cannot be read"):
        model().fit(x, y, epochs=5, verbose=0, callbacks=[BackupAndRestore(backup)])
