"""`python -m training.serving_config`: TF Serving's model config and batching parameters, chosen by measurement."""

import pytest
from google.protobuf import text_format

from conftest import run_module
from training import serving_config


def test_choose_stops_where_throughput_stops_growing_and_drops_sizes_padding_makes_free():
    # Latency flat up to 4 (throughput ×4), then linear: nothing gained past 4 but latency.
    latencies = {1: 0.010, 2: 0.0101, 4: 0.0105, 8: 0.021, 16: 0.042}
    chosen = serving_config.choose(latencies, {1: 400.0, 2: 410.0})
    assert chosen["max_batch_size"] == 4
    assert chosen["allowed_batch_sizes"] == [4]  # 1 and 2 cost within 10 % of 4: padding up is nearly free
    assert chosen["num_batch_threads"] == 1  # 2.5 % more is not worth a second batch in flight
    assert chosen["batch_timeout_micros"] == 5000  # half a one-sentence request
    assert chosen["max_enqueued_batches"] == round(1 / 0.0105)


def test_choose_keeps_sizes_whose_batches_are_clearly_cheaper_and_more_threads_when_they_pay():
    latencies = {1: 0.010, 2: 0.012, 4: 0.016, 8: 0.024, 16: 0.044}
    chosen = serving_config.choose(latencies, {1: 300.0, 2: 500.0})
    assert chosen["max_batch_size"] == 8  # 333/s, within 10 % of the best (364/s at 16)
    assert chosen["allowed_batch_sizes"] == [1, 2, 4, 8]
    assert chosen["num_batch_threads"] == 2


def test_batching_parameters_parse_as_tf_servings_text_format():
    message = text_format.Parse(
        "max_batch_size { value: 32 } batch_timeout_micros { value: 1000 } num_batch_threads { value: 2 } "
        "allowed_batch_sizes: 8 allowed_batch_sizes: 32",
        serving_config.batching_parameters_class()(),
    )
    assert message.max_batch_size.value == 32 and list(message.allowed_batch_sizes) == [8, 32]
    with pytest.raises(text_format.ParseError):  # a misspelt field is refused, as the server would
        text_format.Parse("max_batch_sizes { value: 32 }", serving_config.batching_parameters_class()())


@pytest.mark.slow
def test_cli_writes_both_files_for_two_exports(cli_dates_export, cli_tsv_export, tmp_path):
    from tensorflow_serving.config import model_server_config_pb2

    exports = [cli_dates_export[0], cli_tsv_export[0]]
    result = run_module("training.serving_config", *exports, "--output-dir", str(tmp_path),
                        "--base-path-prefix", "/models", "--largest-batch", "8", "--min-seconds", "0.05")
    assert result.returncode == 0, result.stderr[-3000:]
    config = text_format.Parse((tmp_path / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    models = config.model_config_list.config
    assert [(m.name, m.base_path) for m in models] == [("dates", "/models/dates"), ("fr-en", "/models/fr-en")]
    assert all(m.model_platform == "tensorflow" and m.model_version_policy.latest.num_versions == 1 for m in models)
    batching = text_format.Parse((tmp_path / "batching_parameters.txt").read_text(),
                                 serving_config.batching_parameters_class()())
    sizes = list(batching.allowed_batch_sizes)
    # TF Serving's rules: increasing, the last equal to max_batch_size.
    assert sizes == sorted(set(sizes)) and sizes[-1] == batching.max_batch_size.value <= 8
    assert batching.num_batch_threads.value >= 1 and batching.batch_timeout_micros.value > 0
    assert batching.max_enqueued_batches.value >= batching.num_batch_threads.value
    # Only the SentencePiece export uses tensorflow-text's ops (the stock server links them), and only it
    # decodes with XLA (--export-xla), which TF Serving on CPU runs only when told: the user is told both.
    notes = [line for line in result.stdout.splitlines() if line.startswith("Note:")]
    assert len(notes) == 2 and all("fr-en" in note and "dates" not in note for note in notes)
    assert "Sentencepiece" in notes[0] and "XLA" in notes[1]
    command = next(line for line in result.stdout.splitlines() if line.startswith("Serve with:"))
    assert "--enable_batching" in command and "--batching_parameters_file=" in command
    assert command.endswith("--xla_cpu_compilation_enabled=true")
