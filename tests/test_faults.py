"""Faults a hostile but realistic user meets: kills, full disks, bad corpora and flags — nothing lost, each named in one line."""

import gzip
import hashlib
import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, TATOEBA, kill_when, run_module
from tf_transformer import export as export_lib
from training import callbacks, tsv


def one_line_error(result, *fragments):
    """A failed command that said what was wrong in one line of stderr, with no traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    message = lines[-1]
    for fragment in fragments:
        assert fragment in message, message
    return message


def plain(stdout):
    """The progress bar's output without its colours and carriage returns."""
    return re.sub(r"\x1b\[[0-9;]*m", "", stdout.replace("\r", "\n"))


def tatoeba_lines(count, start=0):
    with open(TATOEBA, encoding="utf-8") as file:
        return [line for line in file if "\t" in line][start : start + count]


TINY = ["--preset", "tiny", "--epochs", "1", "--steps-per-epoch", "4", "--tokenizer-sample", "2000",
        "--vocab-size", "400"]


# ---- corpora and flags: one line naming the problem, before any training ----

def test_truncated_gzip_shard_names_the_file(tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with gzip.open(corpus / "part-0.tsv.gz", "wt", encoding="utf-8") as file:
        file.writelines(tatoeba_lines(3000))
    data = (corpus / "part-0.tsv.gz").read_bytes()
    (corpus / "part-0.tsv.gz").write_bytes(data[: len(data) // 2])
    result = run_module("training.train", "--dataset", str(corpus), *TINY, "--export-dir", str(tmp_path / "m"),
                        timeout=300)
    one_line_error(result, "part-0.tsv.gz", "truncated")


def test_latin1_corpus_names_file_line_and_byte(tmp_path):
    lines = [f"Sentence {i}.\tPhrase {i}.\n" for i in range(200)]
    lines[57] = "I'm going.\tJe m'en vais, déjà.\n"
    path = tmp_path / "latin1.tsv"
    path.write_bytes("".join(lines).encode("latin-1", "replace"))
    result = run_module("training.train", "--dataset", str(path), *TINY, "--export-dir", str(tmp_path / "m"), timeout=300)
    one_line_error(result, "latin1.tsv, line 58: not UTF-8", "0xe9")


def test_max_length_that_nothing_fits_is_refused_with_what_would(tmp_path):
    result = run_module("training.train", "--dataset", TATOEBA, "--reverse", *TINY, "--train-size", "500",
                        "--max-length", "1", "--export-dir", str(tmp_path / "m"), timeout=300)
    message = one_line_error(result, "No training pair fits --max-length 1")
    suggested = int(re.search(r"Pass --max-length (\d+)", message).group(1))
    assert 3 <= suggested <= 64


def test_vocabulary_smaller_than_the_characters_is_refused(tmp_path):
    result = run_module("training.train", "--dataset", TATOEBA, "--reverse", *TINY[:-2], "--vocab-size", "5",
                        "--train-size", "500", "--export-dir", str(tmp_path / "m"), timeout=300)
    message = one_line_error(result, "A vocabulary of 5 pieces is too small")
    assert int(re.search(r"--vocab-size (\d+)", message).group(1)) > 260
    assert "character_coverage" not in result.stderr


def test_export_dir_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "m").write_text("not a directory")
    result = run_module("training.train", "--preset", "tiny", "--epochs", "1", "--train-size", "300",
                        "--export-dir", str(tmp_path / "m"), timeout=300)
    one_line_error(result, "is a file, not a directory")
    assert "Epoch 1/" not in result.stdout


def test_byte_order_mark_and_crlf_read_alike_in_python_and_the_graph(tmp_path):
    path = tmp_path / "bom.tsv"
    path.write_bytes("\ufeffRun!\tCours !\r\nHi.\tSalut.\r\n".encode("utf-8"))
    sources, targets, _ = tsv.read_pairs(str(path))
    assert sources == ["Run!", "Hi."] and targets == ["Cours !", "Salut."]
    lines = tf.data.TextLineDataset(str(path)).batch(8).get_single_element()
    graph_sources, graph_targets, ok = tsv.parse_lines(lines)
    assert [s.decode() for s in graph_sources.numpy()] == sources and ok.numpy().all()
    # So the sentence has one hash, one split, whichever reader met it.
    assert tsv.hash_buckets(sources) == tf.strings.to_hash_bucket_fast(graph_sources, tsv.HASH_BUCKETS).numpy().tolist()


def test_tsv_line_rule_python_and_graph_agree_on_random_lines():
    """`tsv.parse_line` and `tsv.parse_lines` on a few hundred random lines: tabs, blanks, CR, no-break spaces."""
    rng = random.Random(0)
    pieces = ["a", "Va !", " ", "\t", "\r", "\u00a0", "\u202f", "é", "", "x y", "\ufeff", "  z  "]
    lines = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 8))) for _ in range(400)]
    lines = [line.replace("\n", "") for line in lines]
    for reverse in (False, True):
        sources, targets, ok = tsv.parse_lines(tf.constant(lines), reverse=reverse)
        for line, source, target, good in zip(lines, sources.numpy(), targets.numpy(), ok.numpy()):
            expected = tsv.parse_line(line[1:] if line.startswith(tsv.BOM) else line, reverse)
            assert bool(good) == (expected is not None), repr(line)
            if expected is not None:
                assert (source.decode(), target.decode()) == expected, repr(line)


# ---- exports: stale staging dirs, permissions ----

def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_staging_dirs_are_removed_and_live_ones_kept(tmp_path):
    export_dir = tmp_path / "model"
    export_dir.mkdir()
    owners = {"dead": {"pid": _dead_pid(), "start": None},
              "live": {"pid": os.getpid(), "start": export_lib._process_start(os.getpid())},
              "reused_pid": {"pid": os.getpid(), "start": -1}}  # this pid, but another process's start time
    for name, owner in owners.items():
        (export_dir / f".export-{name}").mkdir()
        (export_dir / f".export-{name}" / "saved_model.pb").write_bytes(b"partial")
        (export_dir / f".export-{name}" / ".owner.json").write_text(json.dumps(owner))
    (export_dir / ".export-unmarked").mkdir()  # a live exporter may not have written its marker yet
    (export_dir / "1").mkdir()
    removed = export_lib.remove_stale_staging(str(export_dir))
    assert sorted(os.path.basename(p) for p in removed) == [".export-dead", ".export-reused_pid"]
    assert sorted(os.listdir(export_dir)) == [".export-live", ".export-unmarked", "1"]


@pytest.mark.slow
def test_published_version_is_readable_by_another_user(cli_dates_export):
    export_dir, _ = cli_dates_export
    umask = os.umask(0)
    os.umask(umask)
    version = os.path.join(export_dir, "1")
    assert stat.S_IMODE(os.stat(version).st_mode) == 0o777 & ~umask  # a normal directory's mode, not mkdtemp's 0700
    for directory, _, files in os.walk(version):
        assert os.stat(directory).st_mode & 0o005 == 0o777 & ~umask & 0o005
        for name in files:
            assert os.stat(os.path.join(directory, name)).st_mode & 0o004 == 0o666 & ~umask & 0o004
    assert not [name for name in os.listdir(export_dir) if name.startswith(".export-")]
    assert not os.path.exists(os.path.join(version, ".owner.json"))


# ---- translate: every input line answered ----

@pytest.mark.slow
def test_translate_answers_invalid_utf8_and_nul_among_valid_lines(cli_dates_export):
    export_dir, _ = cli_dates_export
    command = [sys.executable, "-m", "training.translate", "--model", export_dir]
    valid = ["25/06/2009", "3 mai 1999"]
    alone = subprocess.run(command + valid, cwd=ROOT, capture_output=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-2000:]
    expected = alone.stdout.decode("utf-8").splitlines()
    # Invalid UTF-8 as an argument (bytes reach argv as they are; argv cannot hold NUL) …
    mixed = subprocess.run(command + [valid[0].encode(), b"\xff\xfe caf\xe9", valid[1].encode()], cwd=ROOT,
                           capture_output=True, timeout=300)
    assert mixed.returncode == 0, mixed.stderr[-2000:]
    outputs = mixed.stdout.decode("utf-8").splitlines()
    assert len(outputs) == 3 and [outputs[0], outputs[2]] == expected
    # … and on stdin, NUL included: one output line per input line.
    stdin = b"25/06/2009\n\xff\xfe caf\xe9\n\x00\x00\nhalf \xc3\n3 mai 1999\n"
    piped = subprocess.run(command, cwd=ROOT, input=stdin, capture_output=True, timeout=300)
    assert piped.returncode == 0, piped.stderr[-2000:]
    outputs = piped.stdout.decode("utf-8").splitlines()
    assert len(outputs) == 5 and [outputs[0], outputs[4]] == expected


# ---- the run: a kill during the export, full disks ----

def _train_command(export_dir, *extra):
    return [sys.executable, "-m", "training.train", "--preset", "tiny", "--epochs", "1", "--train-size", "600",
            "--export-dir", export_dir, *extra]


@pytest.mark.slow
def test_sigkill_during_the_export_phase_resumes_straight_to_the_export(tmp_path):
    export_dir = str(tmp_path / "dates")
    command = _train_command(export_dir)
    # Killed a second after its staging dir appears: well inside the export (written or being checked).
    staged = kill_when(command, lambda: os.path.isdir(export_dir) and any(
        n.startswith(".export-") for n in os.listdir(export_dir)), delay=1.0)
    assert staged, "the run never reached its export"
    assert not os.path.exists(os.path.join(export_dir, "1"))
    stale = [n for n in os.listdir(export_dir) if n.startswith(".export-")]
    assert stale  # the killed exporter's staging dir was left behind
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Training had finished before (epoch 1 of 1); evaluating and exporting its weights." in result.stdout
    assert "val_loss" not in plain(result.stdout)  # not retrained (fit's epoch line; Keras prints no "Epoch 1/1")
    assert sorted(os.listdir(export_dir)) == ["1"]  # published; the stale staging dir is gone
    work_dir = export_dir + ".work"
    assert sorted(os.listdir(work_dir)) == ["logs"]  # the finished run's state is gone with it
    # So the same command now starts a new run, which knows nothing of the old one.
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0 and "val_loss" in plain(result.stdout) and "Resuming" not in result.stdout
    assert sorted(os.listdir(export_dir)) == ["1", "2"]


@pytest.mark.slow
def test_a_work_dir_holding_another_unfinished_run_is_refused(tmp_path):
    work_dir = tmp_path / "dates.work"
    work_dir.mkdir()
    (work_dir / "run.json").write_text(json.dumps({"dataset": "dates", "preset": "small"}))
    result = run_module("training.train", "--preset", "tiny", "--epochs", "1", "--train-size", "300",
                        "--export-dir", str(tmp_path / "dates"), timeout=300)
    assert result.returncode != 0 and "holds an unfinished run with other options" in result.stderr
    assert "preset 'small' -> 'tiny'" in result.stderr


def _tmpfs(path, size):
    """A size-limited file system at `path`, or a skip saying why it cannot be made here."""
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({result.stderr.strip() or 'mount failed'}); needs root")
    return path


def _unmount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _tree_digest(path):
    digest = hashlib.sha256()
    for directory, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            digest.update(os.path.relpath(os.path.join(directory, name), path).encode())
            with open(os.path.join(directory, name), "rb") as file:
                digest.update(file.read())
    return digest.hexdigest()


@pytest.mark.slow
def test_full_disk_in_the_work_dir_is_one_line_and_leaves_nothing_partial(tmp_path):
    work_dir = _tmpfs(tmp_path / "full", "600k")  # room for the tokenizers, not for a backup of the weights
    try:
        result = subprocess.run(_train_command(str(tmp_path / "dates"), "--work-dir", str(work_dir), "--backup-every", "2"),
                                cwd=ROOT, capture_output=True, text=True, timeout=900)
        message = one_line_error(result, "No space left on device", str(work_dir))
        assert "intact" in message
        partial = [os.path.join(d, n) for d, _, names in os.walk(work_dir) for n in names if ".tmp" in n]
        assert not partial, partial
    finally:
        _unmount(work_dir)
    assert not os.path.exists(tmp_path / "dates" / "1")


@pytest.mark.slow
def test_full_disk_in_the_export_dir_keeps_the_published_version(cli_dates_export, tmp_path):
    published, _ = cli_dates_export
    size = sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(os.path.join(published, "1")) for n in names)
    export_dir = _tmpfs(tmp_path / "models", str(size + 400 * 1024))  # version 1 and not much more
    try:
        shutil.copytree(os.path.join(published, "1"), export_dir / "1")
        before = _tree_digest(export_dir / "1")
        result = subprocess.run(_train_command(str(export_dir), "--work-dir", str(tmp_path / "work")), cwd=ROOT,
                                capture_output=True, text=True, timeout=900)
        one_line_error(result, "No space left on device", str(export_dir))
        assert sorted(os.listdir(export_dir)) == ["1"]  # no staging dir, no half version
        assert _tree_digest(export_dir / "1") == before
        # The training survived: the backup is still there for the rerun.
        assert os.path.exists(tmp_path / "work" / "backup" / "latest.json")
    finally:
        _unmount(export_dir)


def test_a_failed_write_leaves_no_partial_file(tmp_path):
    """The checkpoint writers remove their temporary file when the write fails (as on a full disk)."""
    path = str(tmp_path / "state.json")
    with pytest.raises(TypeError):
        callbacks.write_json(path, {"not json": object()})
    assert os.listdir(tmp_path) == []
    callbacks.write_json(path, {"epoch": 1})
    with open(path) as file:
        assert json.load(file) == {"epoch": 1}


def test_an_explicit_preset_replaces_the_configs_model_size():
    from training import configs, run as train

    args = train.options_to_args({"dataset": TATOEBA, "preset": "tiny"})
    config, _ = train.resolve(args, configs.for_corpus("text", 16000))
    assert config.preset == "tiny" and not set(config.model_overrides) & {"num_layers", "d_model", "dff"}
    config, name = train.resolve(train.options_to_args({"dataset": TATOEBA}), configs.for_corpus("text", 150000))
    assert name == "tsv-medium" and config.model_overrides["d_model"] == 256
    args = train.options_to_args({"dataset": TATOEBA, "preset": "tiny"})
    config, _ = train.resolve(args, configs.for_corpus("text", 150000))
    assert config.preset == "tiny" and config.model_overrides == {"share_embeddings": True, "tie_output_embedding": True}
    np.testing.assert_equal(train.resolve(train.options_to_args({"dataset": TATOEBA}), configs.for_corpus("text", 16000))[1],
                            "tsv")


def test_a_configs_bfloat16_matmuls_fall_back_to_float32_where_they_would_be_slow(monkeypatch):
    from tf_transformer import fast_paths
    from training import configs, run as train

    medium = configs.CONFIGS["tsv-medium"]
    assert medium.mixed_precision == "bfloat16-matmuls"
    monkeypatch.setattr(train.tf.config, "list_physical_devices", lambda kind=None: [])
    monkeypatch.setattr(train, "cpu_multiplies_bfloat16", lambda: True)
    assert train.set_precision(medium, asked=False).mixed_precision == "bfloat16-matmuls"
    assert fast_paths.training_matmul_dtype() == "bfloat16" and keras.config.dtype_policy().name == "float32"
    monkeypatch.setattr(train, "cpu_multiplies_bfloat16", lambda: False)
    assert train.set_precision(medium, asked=False).mixed_precision == "off"
    assert fast_paths.training_matmul_dtype() is None
    assert train.set_precision(medium, asked=True).mixed_precision == "bfloat16-matmuls"  # the user's word wins
    assert fast_paths.training_matmul_dtype() == "bfloat16"
    # --mixed-precision overrides the config, and Keras's policies set no training matmul dtype.
    args = train.options_to_args({"dataset": TATOEBA, "mixed_precision": "bfloat16"})
    config, _ = train.resolve(args, configs.for_corpus("text", 150000))
    train.set_precision(config, asked=True)
    assert keras.config.dtype_policy().name == "mixed_bfloat16" and fast_paths.training_matmul_dtype() is None
