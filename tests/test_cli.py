"""The command-line entry points, end to end (slow ones are marked)."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import kill_when

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TATOEBA = os.path.join(ROOT, "..", "shared", "data", "tatoeba-eng-fra.tsv")


def run(*args, timeout=900, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def evaluation(export_dir, version="1"):
    with open(os.path.join(export_dir, version, "assets.extra", "evaluation.json")) as file:
        return json.load(file)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "positive integer"),
        (["--batch-size", "-2"], "positive integer"),
        (["--preset", "huge"], "invalid choice"),
        (["--dataset", "nonsense"], "--dataset takes"),
        (["--dataset", "missing.tsv"], "not found"),
    ],
)
def test_train_rejects_bad_arguments(args, message, tmp_path):
    result = run("training.train", *args, "--export-dir", str(tmp_path / "m"), timeout=300)
    assert result.returncode != 0
    assert message in result.stderr


def test_train_help_documents_every_flag():
    result = run("training.train", "--help", timeout=300)
    from training.train import build_parser

    flags = [option for action in build_parser()._actions for option in action.option_strings if option.startswith("--")]
    assert {"--dataset", "--batch-tokens", "--average-last", "--export-xla"} <= set(flags)
    for flag in flags:
        assert flag in result.stdout


@pytest.mark.slow
def test_smoke_dates_train_translate_plot(cli_dates_export, tmp_path):
    export_dir, result = cli_dates_export
    assert "Held-out metrics" in result.stdout
    metrics = evaluation(export_dir)["metrics"]
    assert metrics["examples"] >= 2000 and 0.0 <= metrics["exact_match"] <= 1.0
    assert os.path.isdir(export_dir + ".work/logs")  # TensorBoard logs in the work dir
    texts = ["25 septembre 2009", "", "Tuesday, June 25, 2009"]
    result = run("training.translate", "--model", export_dir, *texts, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) == 3 and result.stdout.splitlines()[1] == ""
    result = run("training.translate", "--model", export_dir, input="25/06/2009\n3 mai 1999\n", timeout=300)
    assert len(result.stdout.splitlines()) == 2
    png = str(tmp_path / "attention.png")
    result = run("training.plot_attention", "--model", export_dir, "--output", png, "25 septembre 2009", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(png, "rb") as file:
        assert file.read(8) == b"\x89PNG\r\n\x1a\n"
    result = run("training.list_ops", export_dir, timeout=300)
    assert result.returncode == 0 and '"custom": []' in result.stdout


@pytest.mark.slow
def test_smoke_tsv(cli_tsv_export):
    export_dir, _ = cli_tsv_export
    metrics = evaluation(export_dir)["metrics"]
    assert {"bleu", "chrf", "bleu_signature", "beam_search"} <= set(metrics)
    result = run("training.translate", "--model", export_dir, "Jane visite l'Afrique en septembre.", timeout=300)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1


@pytest.mark.slow
def test_resumes_mid_epoch_after_sigkill(tmp_path):
    """Killed mid-epoch after a backup, the same command resumes at that step, not at the epoch's start."""
    export_dir = str(tmp_path / "dates")
    command = [sys.executable, "-m", "training.train", "--preset", "tiny", "--epochs", "2", "--train-size", "4000",
               "--backup-every", "5", "--export-dir", export_dir]
    position = os.path.join(export_dir + ".work", "backup", "latest.json")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def in_the_middle_of_epoch_2():
        try:
            with open(position) as file:
                backed_up = json.load(file)
        except (OSError, ValueError):  # not written yet, or being renamed into place
            return None
        return backed_up if backed_up["epoch"] == 1 and backed_up["step"] >= 10 else None

    backed_up = kill_when(command, in_the_middle_of_epoch_2, env=env)
    assert backed_up and backed_up["step"] >= 10, backed_up
    assert not os.path.exists(os.path.join(export_dir, "1"))  # killed before exporting
    with open(position) as file:
        backed_up = json.load(file)  # the last backup before the kill
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout.replace("\r", "\n"))  # the bar's colours
    epoch, step = backed_up["epoch"] + 1, backed_up["step"]
    assert f"Resuming from the backup at epoch {epoch}, step {step}" in output
    assert step > 0
    lines = output.splitlines()
    first = lines.index(f"Epoch {epoch}/2")
    steps_per_epoch = int(re.search(r"(\d+) steps an epoch", output).group(1))
    totals = {int(m.group(1)) for line in lines[first + 1 : first + 4] for m in re.finditer(r"\d+/(\d+) ", line)}
    assert totals == {steps_per_epoch - step}, totals  # only the epoch's remaining steps are trained
    assert "Epoch 1/2" not in output  # nothing redone before it
    assert evaluation(export_dir)["metrics"]["examples"] > 0
    assert not os.path.exists(os.path.dirname(position))  # the finished run's backup is gone


@pytest.mark.slow
def test_default_job_reaches_its_score(tmp_path):
    """The README's main job, as CI runs it: ≥ 99.5 % exact match on held-out dates, typed dates read, non-dates refused."""
    export_dir = str(tmp_path / "dates")
    result = run("training.train", "--export-dir", export_dir, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = evaluation(export_dir)["metrics"]
    print("default dates job:", metrics)
    assert metrics["examples"] >= 2000
    assert metrics["exact_match"] >= 0.995
    # Dates as people type them, and text that is not a date (issue #19; a margin below the measured figures).
    held_out = metrics["held_out"]
    for name in ("upper", "lower", "spaces_around", "doubled_spaces", "commas_dropped", "year_first"):
        assert held_out[name]["exact_match"] >= 0.98, (name, held_out[name])
    for name in ("non_dates", "impossible_dates", "non_dates_tatoeba"):
        assert held_out[name]["rejected"] >= 0.97, (name, held_out[name])
    assert metrics["answered_empty"] + sum(h.get("answered_empty", 0) for h in held_out.values()) <= 2
    result = run("training.translate", "--model", export_dir, "25 septembre 2009", "Tuesday, June 25, 2009",
                 "25 SEPTEMBRE 2009", "2009/09/25", "xxxxxxxxxxxx", "31 février 2009", timeout=300)
    assert result.stdout.splitlines() == ["2009-09-25", "2009-06-25", "2009-09-25", "2009-09-25", "", ""]


def test_train_and_evaluate_refuses_an_unknown_option_before_any_work():
    from training.run import train_and_evaluate

    with pytest.raises(TypeError, match="epoch"):
        train_and_evaluate(epoch=3)  # the flag is --epochs


@pytest.mark.slow
def test_train_and_evaluate_is_the_command_without_its_flags(tmp_path):
    from training.run import train_and_evaluate

    result = train_and_evaluate(preset="tiny", epochs=1, train_size=300, export_dir=str(tmp_path / "dates"))
    assert result["export"] == str(tmp_path / "dates" / "1")
    assert os.path.exists(os.path.join(result["export"], "saved_model.pb"))
    with open(os.path.join(result["export"], "assets.extra", "evaluation.json"), encoding="utf-8") as file:
        assert json.load(file)["metrics"] == result["metrics"]  # the figures of the reloaded export
    assert result["metrics"]["examples"] == 2500


@pytest.mark.slow
def test_streamed_shards_with_held_out_files_token_budget_bleu_selection_and_averaging(tmp_path):
    import gzip

    with open(TATOEBA, encoding="utf-8") as file:
        lines = [line for line in file if "\t" in line]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for shard in range(3):
        with gzip.open(corpus / f"part-{shard}.tsv.gz", "wt", encoding="utf-8") as out:
            out.writelines(lines[shard * 1000 : (shard + 1) * 1000])
    (tmp_path / "valid.tsv").write_text("".join(lines[5000:5050]), encoding="utf-8")
    with gzip.open(tmp_path / "test.tsv.gz", "wt", encoding="utf-8") as out:
        out.writelines(lines[6000:6060])
    export_dir = str(tmp_path / "streamed")
    result = run("training.train", "--dataset", str(corpus), "--reverse", "--validation", str(tmp_path / "valid.tsv"),
                 "--test", str(tmp_path / "test.tsv.gz"), "--preset", "tiny", "--epochs", "2", "--steps-per-epoch", "8",
                 "--batch-tokens", "256", "--select-by", "bleu", "--average-last", "2", "--tokenizer-sample", "2000",
                 "--vocab-size", "600", "--export-dir", export_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout.replace("\r", "\n"))
    assert "3000 train / 50 validation / 60 test pairs, streamed from 3 file(s)" in output
    assert "8 steps an epoch of about 256 tokens" in output
    epoch_lines = [line for line in output.splitlines() if line.startswith("8/8 ") and "val_loss" in line]
    assert len(epoch_lines) == 2 and all("val_bleu" in l and "real_tokens_per_second" in l and "padding" in l
                                         for l in epoch_lines)
    assert "Unknown" not in output and "ran out of data" not in result.stderr + output
    metrics = evaluation(export_dir)["metrics"]
    assert metrics["examples"] == 60 and metrics["without_averaging"]["averaged_epochs"] == [1, 2]
    # The export's model.keras (compiled with the throughput metrics) reloads with the library alone.
    keras_file = os.path.join(export_dir, "1", "assets.extra", "model.keras")
    reload = subprocess.run([sys.executable, "-c", "import sys, keras, tf_transformer; sys.modules['training'] = None; "
                             f"print(type(keras.saving.load_model({keras_file!r})).__name__)"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert reload.returncode == 0 and reload.stdout.strip().endswith("Transformer"), reload.stderr[-2000:]
    # The epoch kept is the best by validation BLEU (the run's state is cleared once published: the export records it).
    logged = [float(re.search(r"val_bleu: ([\d.]+)", line).group(1)) for line in epoch_lines]
    assert metrics["without_averaging"]["kept_epoch"] == 1 + logged.index(max(logged))
    assert sorted(os.listdir(export_dir + ".work")) == ["logs"]


ANKI = os.path.join(ROOT, "..", "shared", "data", "anki-eng-fra-2019")


@pytest.mark.slow
def test_anki_shards_slice_streams_trains_and_the_export_translates_what_training_printed(tmp_path):
    """A slice of the real Anki shards (every 40th line, each shard's length order kept), streamed with its recipe."""
    import gzip

    corpus = tmp_path / "anki"
    corpus.mkdir()
    for name in sorted(os.listdir(ANKI)):
        with gzip.open(os.path.join(ANKI, name), "rt", encoding="utf-8") as file:
            lines = [line for number, line in enumerate(file) if number % 40 == 0]
        with gzip.open(corpus / name, "wt", encoding="utf-8") as out:
            out.writelines(lines)
    export_dir = str(tmp_path / "fr-en")
    result = run("training.train", "--dataset", str(corpus / "*.tsv.gz"), "--reverse", "--config", "tsv-medium",
                 "--preset", "tiny", "--vocab-size", "600", "--epochs", "2", "--steps-per-epoch", "6",
                 "--export-dir", export_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout.replace("\r", "\n"))
    assert "streamed from 4 file(s); config tsv-medium; vocabularies 600 / 600" in output  # one shared vocabulary
    from training.run import cpu_multiplies_bfloat16

    # The recipe's precision, trained and still exported in float32 (the export's strings match training's below).
    assert f"precision {'bfloat16-matmuls' if cpu_multiplies_bfloat16() else 'off'};" in output
    printed = dict(re.findall(r"^  ('.*'|\".*\") -> ('.*'|\".*\")$", output, flags=re.M))
    assert len(printed) == 5, output[-3000:]
    import ast

    samples = [ast.literal_eval(source) for source in printed]
    translated = run("training.translate", "--model", export_dir, *samples, timeout=300)
    assert translated.returncode == 0, translated.stderr[-3000:]
    assert translated.stdout.splitlines() == [ast.literal_eval(output) for output in printed.values()]
    metrics = evaluation(export_dir)["metrics"]
    assert metrics["examples"] > 0 and metrics["without_averaging"]["averaged_epochs"] == [1, 2]
