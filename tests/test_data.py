"""Datasets, tokenizers and the input pipeline."""

import datetime
import functools
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
    lengths = pipeline.bucket_lengths(24)
    for batching in ({"batch_size": 32}, {"batch_tokens": 400}):
        rows = dict(zip(lengths, pipeline.bucket_rows(lengths, **batching)))
        examples = pipeline.examples_in_memory(source_ids, target_ids, 24, seed=0)
        real = padded = 0
        for inputs, labels in pipeline.batches(examples, 24, drop_remainder=True, **batching).take(60):
            encoder, decoder = inputs["encoder_tokens"].numpy(), inputs["decoder_tokens"].numpy()
            labels = labels.numpy()
            assert encoder.dtype == np.int32 and decoder.shape == labels.shape == encoder.shape
            # A few fixed shapes: each length of the ladder with its own rows, multiples of 8.
            length = encoder.shape[1]
            assert length in rows and len(encoder) == rows[length] and len(encoder) % 8 == 0
            if "batch_tokens" in batching:
                assert encoder.size <= 400
            # The smallest length that holds the batch: some row uses the last position.
            assert (encoder[:, -1] != 0).any() or (labels[:, -1] != 0).any()
            assert np.all(decoder[:, 0] == START)
            np.testing.assert_array_equal(decoder[:, 1:], labels[:, :-1])  # shifted by one
            assert np.all((labels == END).sum(1) == 1)
            # Bucketed on the longer side of each pair: that side is rarely padded.
            real += np.maximum((encoder != 0).sum(1), (labels != 0).sum(1)).sum()
            padded += labels.size
        assert real / padded > 0.9
    # Evaluation keeps every example once, in the same shapes.
    seen, rows_seen = set(), 0
    for inputs, labels in pipeline.evaluation_batches(source_ids, target_ids, 24, batch_size=32):
        seen.add(inputs["encoder_tokens"].shape[1])
        rows_seen += len(labels)
    assert rows_seen == int(source_ids.nrows()) and seen <= set(lengths)


def test_token_budget_rows_and_one_pass_estimate():
    lengths = pipeline.bucket_lengths(48)
    assert lengths[-1] == 48 and lengths == sorted(set(lengths))
    rows = pipeline.bucket_rows(lengths, batch_tokens=512)
    assert all(r % 8 == 0 and (r * n <= 512 or r == 8) for r, n in zip(rows, lengths))
    assert rows[lengths.index(8)] == 64 and rows[lengths.index(48)] == 8
    with pytest.raises(ValueError, match="exactly one"):
        pipeline.bucket_rows(lengths)
    # 1,000 examples of length 8 (decoder length 8: target 9 with start and end) in batches of 64.
    steps, per_step = pipeline.steps_for_one_pass([8] * 10, [9] * 10, 1000, 48, batch_tokens=512)
    assert per_step == 64 and steps == 1000 // 64


def _shards(directory, count=3, pairs=400, bad=1):
    import gzip

    os.makedirs(directory, exist_ok=True)
    for shard in range(count):
        with gzip.open(os.path.join(directory, f"part-{shard}.tsv.gz"), "wt", encoding="utf-8") as file:
            for i in range(pairs):
                file.write(f"source {shard} {i} {'x' * (i % 13)}\ttarget {i}\n")
            file.write("a line without a tab\n" * bad)
    return directory


def test_corpus_files_directory_glob_and_errors(tmp_path):
    directory = _shards(str(tmp_path / "shards"))
    files = tsv.corpus_files(directory)
    assert [os.path.basename(f) for f in files] == ["part-0.tsv.gz", "part-1.tsv.gz", "part-2.tsv.gz"]
    assert tsv.corpus_files(os.path.join(directory, "part-[12].tsv.gz")) == files[1:]
    with pytest.raises(tsv.DatasetError, match="No file matches"):
        tsv.corpus_files(str(tmp_path / "*.tsv"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(tsv.DatasetError, match="holds no .tsv"):
        tsv.corpus_files(str(tmp_path / "empty"))
    assert not tsv.is_small(files) and tsv.is_small([write(tmp_path, "a\tb\n")])


def test_scan_counts_checks_carves_and_samples_in_one_pass(tmp_path):
    files = tsv.corpus_files(_shards(str(tmp_path / "shards"), pairs=2000))
    messages = []
    scan = tsv.scan(files, validation_size=5, test_size=8, sample_size=100, seed=3, log=messages.append)
    assert scan["lines"] == 3 * 2001 and scan["malformed"] == {f: 1 for f in files} and len(messages) == 3
    assert len(scan["validation"][0]) == 5 and len(scan["test"][0]) == 8 and len(scan["sample"][0]) == 100
    # The hash rule: held-out sources are in their buckets; no sampled training source is.
    every = scan["test"][0] + scan["validation"][0] + scan["sample"][0]
    buckets = dict(zip(every, tsv.hash_buckets(every)))
    assert all(buckets[s] < tsv.TEST_BUCKETS for s in scan["test"][0])
    assert all(tsv.TEST_BUCKETS <= buckets[s] < tsv.HELD_OUT_BUCKETS for s in scan["validation"][0])
    assert all(buckets[s] >= tsv.HELD_OUT_BUCKETS for s in scan["sample"][0])
    assert scan["train_pairs"] + sum(b < tsv.HELD_OUT_BUCKETS for b in tsv.hash_buckets(
        [f"source {k} {i} {'x' * (i % 13)}".strip() for k in range(3) for i in range(2000)])) == 6000
    # Stable when shards are added: a sentence's split is its own, not the corpus's, so the
    # first shards' held-out sets are unchanged (the new shard is read after them).
    more = tsv.scan(files + tsv.corpus_files(_shards(str(tmp_path / "more"), count=1, pairs=2000)),
                    validation_size=5, test_size=8, sample_size=100, seed=3, log=messages.append)
    assert more["test"] == scan["test"] and more["validation"] == scan["validation"]
    # Too many malformed lines in one file: an error naming it.
    bad = _shards(str(tmp_path / "bad"), count=1, pairs=50, bad=5)
    with pytest.raises(tsv.DatasetError, match="part-0.tsv.gz: 5 of 55 lines"):
        tsv.scan(tsv.corpus_files(bad))


def test_streamed_examples_leave_out_held_out_and_resume_where_they_stopped(tmp_path):
    files = tsv.corpus_files(_shards(str(tmp_path / "shards"), pairs=500))
    scan = tsv.scan(files, sample_size=10000, log=lambda message: None)  # every training pair
    tokenizer = CharacterTokenizer.train(scan["sample"][0] + scan["sample"][1])
    streamed = pipeline.examples_from_files(files, tokenizer, tokenizer, 32, seed=1)
    texts = set()
    for source, _ in streamed.take(3000):  # more than a pass: the stream is endless
        texts.add(tokenizer.detokenize(source[None]).numpy()[0].decode())
    assert texts == set(scan["sample"][0])  # every training source, no held-out one, no malformed line

    def stream(first_epoch, skip_steps=0):
        return pipeline.training_stream(
            lambda offset: pipeline.examples_from_files(files, tokenizer, tokenizer, 32, seed=1, skip_lines=offset),
            32, steps_per_epoch=6, examples_per_epoch=150, first_epoch=first_epoch, epochs=3, skip_steps=skip_steps,
            shuffle_buffer=100, seed=0, batch_tokens=256)

    whole = [x["encoder_tokens"].numpy() for x, _ in stream(0)]
    assert len(whole) == 18
    resumed = [x["encoder_tokens"].numpy() for x, _ in stream(1, skip_steps=4)]
    assert len(resumed) == 8  # the rest of epoch 2 and epoch 3
    for expected, got in zip(whole[10:], resumed):
        np.testing.assert_array_equal(expected, got)
    assert not all(np.array_equal(a, b) for a, b in zip(whole[:6], whole[6:12]) if a.shape == b.shape)


def _tiny_model(features):
    """One compiled Dense layer: enough for the callbacks' save, restore and averaging."""
    import keras

    model = keras.Sequential([keras.Input((features,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    return model


def test_step_backup_resumes_mid_epoch_and_falls_back_when_the_latest_is_truncated(tmp_path):
    import keras

    from training.callbacks import StepBackup

    class StopAt(keras.callbacks.Callback):
        def __init__(self, steps):
            super().__init__()
            self.steps, self.seen = steps, 0

        def on_train_batch_end(self, batch, logs=None):
            self.seen += 1
            if self.seen == self.steps:
                raise RuntimeError("killed")

    x, y = np.ones((40, 3), "float32"), np.ones((40, 1), "float32")
    model = functools.partial(_tiny_model, 3)

    backup_dir = str(tmp_path / "backup")
    trained = model()
    with pytest.raises(RuntimeError, match="killed"):  # 10 steps an epoch; killed at step 7 of epoch 2
        trained.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[StepBackup(backup_dir, every_steps=2), StopAt(17)])
    messages = []
    resumed = model()
    assert StepBackup(backup_dir, log=messages.append).restore(resumed) == (1, 6)  # the last backup: step 6
    assert messages == ["Resuming from the backup at epoch 2, step 6"]
    assert int(resumed.optimizer.iterations.numpy()) == 16  # the optimizer's state came back too
    latest = os.path.join(backup_dir, "latest.weights.h5")
    with open(latest, "r+b") as file:  # a crash in the middle of writing it
        file.truncate(100)
    messages = []
    assert StepBackup(backup_dir, log=messages.append).restore(model()) == (1, 4)  # the previous backup
    assert latest in messages[0] and "previous backup" in messages[0]
    os.remove(os.path.join(backup_dir, "previous.weights.h5"))
    with pytest.raises(RuntimeError, match="cannot be read"):
        StepBackup(backup_dir).restore(model())


def test_epoch_checkpoints_keep_the_last_k_the_best_and_early_stopping_across_a_restart(tmp_path):
    import keras

    from training.callbacks import EpochCheckpoints, average_weights

    model = functools.partial(_tiny_model, 2)
    directory = str(tmp_path / "checkpoints")
    trained = model()
    scores = iter([0.5, 0.9, 0.7, 0.8, 0.6])  # a score to maximise; best at epoch 2
    checkpoints = EpochCheckpoints(directory, monitor="val_bleu", mode="max", keep=3, patience=3, log=lambda m: None)
    checkpoints.set_model(trained)
    weights = []
    for epoch in range(3):
        trained.layers[0].kernel.assign(np.full((2, 1), float(epoch), "float32"))
        weights.append(trained.layers[0].kernel.numpy())
        checkpoints.on_epoch_end(epoch, {"val_bleu": next(scores)})
    # A restarted run reads the state: the best epoch and the patience count survive.
    messages = []
    again = EpochCheckpoints(directory, monitor="val_bleu", mode="max", keep=3, patience=3, log=messages.append)
    assert again.state["best_epoch"] == 2 and again.state["wait"] == 1 and again.state["epochs"] == [1, 2, 3]
    resumed = model()
    again.set_model(resumed)
    for epoch in (3, 4):
        resumed.layers[0].kernel.assign(np.full((2, 1), float(epoch), "float32"))
        again.on_epoch_end(epoch, {"val_bleu": next(scores)})
    assert resumed.stop_training and "has not improved for 3 epochs" in messages[0]
    assert [os.path.basename(p) for p in again.last(3)] == ["epoch-0003.weights.h5", "epoch-0004.weights.h5",
                                                             "epoch-0005.weights.h5"]
    assert not os.path.exists(again.path(1)) and not os.path.exists(again.path(2))  # older ones removed
    resumed.load_weights(again.best_path)
    np.testing.assert_array_equal(resumed.layers[0].kernel.numpy(), weights[1])  # epoch 2's weights
    average_weights(resumed, again.last(3))  # kernels 2, 3 and 4: their mean is 3
    np.testing.assert_allclose(resumed.layers[0].kernel.numpy(), np.full((2, 1), 3.0))
    with pytest.raises(KeyError, match="val_bleu"):
        again.on_epoch_end(5, {"val_loss": 1.0})


def test_each_input_pipeline_streams_its_own_share(tmp_path):
    """Multi-worker streaming: whole files per worker when there are enough, else every n-th line; nothing twice."""
    files = tsv.corpus_files(_shards(str(tmp_path / "shards"), count=4, pairs=60, bad=0))
    tokenizer = CharacterTokenizer.train([f"source {k} {i} {'x' * 12} target" for k in range(4) for i in range(60)])

    def sources(files, worker, workers):
        context = tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=worker)
        # No carving: every pair of a pass, so the shares can be compared whole.
        stream = pipeline.examples_from_files(files, tokenizer, tokenizer, 32, input_context=context, carved=())
        passes = 3 * 60 * len(files) // workers  # the stream is endless: three passes' worth
        return {tokenizer.detokenize(s[None]).numpy()[0].decode() for s, _ in stream.take(passes)}

    everything = {f"source {k} {i} {'x' * (i % 13)}".strip() for k in range(4) for i in range(60)}
    # 4 files for 2 workers (2 files each); 1 file of 61 lines for 2 workers (every other line,
    # the odd count checking that the shares do not drift from one pass to the next).
    odd = _shards(str(tmp_path / "odd"), count=1, pairs=61, bad=0)
    for chosen, workers in ((files, 2), (tsv.corpus_files(odd), 2)):
        shares = [sources(chosen, worker, workers) for worker in range(workers)]
        assert not shares[0] & shares[1]  # no sentence in two workers' shares
        expected = set(shares[0]) | set(shares[1])
        assert expected == (everything if chosen == files else
                            {f"source 0 {i} {'x' * (i % 13)}".strip() for i in range(61)})
        assert min(len(share) for share in shares) >= len(expected) // 2 - 1


def test_bucket_and_fit_rules_agree_in_python_and_in_the_graph():
    """`pipeline.bucket_index`/`fits` (the epoch-length estimate) and their graph forms (batching, `_tokenize`) on random lengths."""
    rng = np.random.default_rng(0)
    max_length = 64
    lengths = pipeline.bucket_lengths(max_length)
    source_lengths = rng.integers(1, max_length + 1, 400)
    target_lengths = rng.integers(3, max_length + 3, 400)  # with start and end
    source = np.array([[5] * n + [0] * (max_length - n) for n in source_lengths], "int32")
    target = np.array([[5] * n + [0] * (max_length + 2 - n) for n in target_lengths], "int32")
    graph = pipeline.bucket_index_graph(tf.constant(source), tf.constant(target), tf.constant(lengths, tf.int32))
    fit = pipeline.fits(source_lengths, target_lengths, max_length)
    np.testing.assert_array_equal(graph.numpy()[fit], pipeline.bucket_index(source_lengths, target_lengths, lengths)[fit])
    # Every pair that fits lands in a bucket that holds it, and only those fit that `_tokenize` keeps.
    assert (np.asarray(lengths)[graph.numpy()[fit]] >= pipeline.padded_length(source_lengths, target_lengths)[fit]).all()
    sources = [" ".join("a" * n) for n in source_lengths]
    _, _, keep = pipeline._tokenize(tf.constant(sources), tf.constant([" ".join("b" * (n - 2)) for n in target_lengths]),
                                    WordsTokenizer(), WordsTokenizer(), max_length)
    np.testing.assert_array_equal(keep.numpy(), fit)


def test_held_out_rule_agrees_in_python_and_in_the_graph():
    """`tsv.held_out_split` (the scan) and `tsv.trained_on_graph` (the stream's filter) on random sources, every carve."""
    rng = np.random.default_rng(1)
    alphabet = list("abcdefghijklmnopqrstuvwxyzéèàç ,.'?")
    sources = ["".join(rng.choice(alphabet, rng.integers(1, 40))) for _ in range(3000)]
    splits = [tsv.held_out_split(bucket) for bucket in tsv.hash_buckets(sources)]
    assert {"test", "validation", "train"} <= set(splits)  # enough sources to reach every split
    for carved in ((), ("test",), ("validation",), ("validation", "test")):
        graph = tsv.trained_on_graph(tf.constant(sources), carved).numpy().tolist()
        assert graph == [split not in carved for split in splits], carved


class WordsTokenizer:
    """One id per space-separated word: token counts known exactly, for the rule tests."""

    def tokenize(self, strings):
        words = tf.strings.split(strings)
        return tf.ragged.map_flat_values(lambda w: tf.fill(tf.shape(w), 5), words)


def test_sampled_segmentations_change_from_pass_to_pass_and_keep_the_text():
    """In-memory pairs tokenised anew each pass by a sampling tokenizer: other pieces, the same sentences."""
    pairs = [line.rstrip("\n").split("\t") for line in open("../shared/data/tatoeba-eng-fra.tsv", encoding="utf-8")]
    english, french = [p[0] for p in pairs[:2000]], [p[1] for p in pairs[:2000]]
    tokenizer = SentencePieceTokenizer.train(french + english, vocab_size=600)
    sampled = tokenizer.sampled(8, 0.1)
    sources, targets = french[:64], english[:64]
    rows = pipeline.examples_in_memory_text(sources, targets, sampled, sampled, max_length=48, seed=0)
    first, second = ([r for r in rows.skip(64 * k).take(64).as_numpy_iterator()] for k in (0, 1))
    texts = lambda batch: sorted(tokenizer.detokenize(tf.ragged.constant([s[s != 0] for s, _ in batch])).numpy().tolist())  # noqa: E731
    normalized = sorted(tokenizer.detokenize(tokenizer.tokenize(tf.constant(sources))).numpy().tolist())  # NFKC
    assert texts(first) == texts(second) == normalized  # each pass: every pair once, the same text
    pieces = lambda batch: {tuple(s[s != 0]) for s, _ in batch}  # noqa: E731
    assert pieces(first) != pieces(second)  # segmentations sampled anew
    best = {tuple(ids) for ids in tokenizer.tokenize(tf.constant(sources)).to_list()}
    assert pieces(first) != best


def test_copied_names_are_the_capitalised_words_both_sides_share():
    sources = ["Tom aime Mary.", "Tom est ici.", "Le Japon.", "Tom et Marie.", "Paris", "Ok Tom"]
    targets = ["Tom loves Mary.", "Tom is here.", "Japan.", "Tom and Mary.", "Paris", "Ok Tom"]
    # Tom in four pairs, Mary and Paris in one each (Marie/Mary and Japon/Japan differ), "Ok" too short.
    assert pipeline.copied_names(sources, targets, min_pairs=1) == ["Tom", "Mary", "Paris"]
    assert pipeline.copied_names(sources, targets, min_pairs=2) == ["Tom"]


def test_swap_names_rewrites_both_sides_alike_and_nothing_else():
    names = ["Tom", "Mary", "Boston"]
    sources = [f"Tom {i} et Mary à Boston ; Tomate." for i in range(400)] + [f"Rien {i}." for i in range(100)]
    targets = [f"Tom {i} and Mary in Boston; tomato." for i in range(400)] + [f"Nothing {i}." for i in range(100)]
    def text(tensor):
        return [t.decode("utf-8") for t in tensor.numpy()]

    new_sources, new_targets = (text(t) for t in pipeline.swap_names(
        tf.constant(sources), tf.constant(targets), names, probability=0.5))
    swapped = [i for i in range(400) if new_sources[i] != sources[i]]
    assert 150 < len(swapped) < 250  # about half of the pairs that have names
    assert list(new_sources[400:]) == sources[400:] and list(new_targets[400:]) == targets[400:]
    pseudo_names = set()
    for i in range(400):
        source = re.fullmatch(rf"(\w+) {i} et (\w+) à (\w+) ; Tomate\.", new_sources[i])
        target = re.fullmatch(rf"(\w+) {i} and (\w+) in (\w+); tomato\.", new_targets[i])
        assert source and target and source.groups() == target.groups()  # the same names on both sides
        if i in swapped:
            assert not set(source.groups()) & set(names)  # every name of the pair replaced
            assert all(re.fullmatch(r"[A-Z][a-z]{2,6}", name) for name in source.groups())
            pseudo_names |= set(source.groups())
        else:
            assert new_targets[i] == targets[i]
    assert len(pseudo_names) >= 6  # not one name for every pair
    # Keyed by the batch's text: the same batch gets the same names (a resumed run), another batch others.
    assert text(pipeline.swap_names(tf.constant(sources), tf.constant(targets), names, 0.5)[0]) == new_sources
    assert text(pipeline.swap_names(tf.constant(sources[1:]), tf.constant(targets[1:]), names, 0.5)[0]) != new_sources[1:]
    assert text(pipeline.swap_names(tf.constant(sources), tf.constant(targets), names, 0.0)[0]) == sources


def test_streamed_examples_swap_names_on_both_sides(tmp_path):
    lines = [f"Tom {i} runs.\tTom {i} court." for i in range(300)]
    path = tmp_path / "names.tsv"
    path.write_text("\n".join(lines) + "\n")
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    tokenizer = CharacterTokenizer.train([line.replace("\t", " ") for line in lines] + [alphabet, alphabet.upper()])
    streamed = pipeline.examples_from_files([str(path)], tokenizer, tokenizer, 40, seed=0, carved=(),
                                            names=["Tom"], name_swap=1.0)
    for source, target in streamed.take(300):
        source_text = tokenizer.detokenize(source[None]).numpy()[0].decode()
        target_text = tokenizer.detokenize(target[None, 1:]).numpy()[0].decode()
        name, number = re.fullmatch(r"(\w+) (\d+) runs\.", source_text).groups()
        assert name != "Tom" and target_text == f"{name} {number} court."


def test_keep_chosen_loads_the_kept_epoch_then_averages_the_last_ones(tmp_path):
    from training.callbacks import Trained, keep_chosen

    model = _tiny_model(3)
    paths = {}
    for epoch, value in ((1, 1.0), (2, 2.0), (3, 4.0)):
        model.set_weights([np.full((3, 1), value, "float32"), np.full((1,), value, "float32")])
        paths[epoch] = str(tmp_path / f"epoch-{epoch}.weights.h5")
        model.save_weights(paths[epoch])
    seen = []

    def kept_score():  # called on the kept epoch's weights, before averaging
        seen.append(float(model.get_weights()[0][0, 0]))
        return "kept"

    # The last epoch's weights are in the model, as either trainer leaves it.
    averaged, measured = keep_chosen(model, Trained(paths[1], 1, {3: paths[3], 2: paths[2]}), kept_score)
    assert averaged == [2, 3] and measured == "kept" and seen == [1.0]
    np.testing.assert_allclose(model.get_weights()[0], 3.0)
    # One epoch to average is no averaging: the kept epoch alone, and nothing measured.
    assert keep_chosen(model, Trained(paths[2], 2, {3: paths[3]}), kept_score) == ([], None)
    np.testing.assert_allclose(model.get_weights()[0], 2.0)
    assert seen == [1.0]
