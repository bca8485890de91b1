import os

# Quiet TensorFlow's C++ start-up chatter; set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def seeded():
    """Every test starts from the same seeds, the float32 policy and float32 training matmuls."""
    from tf_transformer import fast_paths

    keras.utils.set_random_seed(1234)
    keras.config.set_dtype_policy("float32")
    fast_paths.set_training_matmul_dtype(None)
    yield
    keras.config.set_dtype_policy("float32")
    fast_paths.set_training_matmul_dtype(None)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TATOEBA = os.path.join(ROOT, "..", "shared", "data", "tatoeba-eng-fra.tsv")


def run_module(*args, timeout=900, **kwargs):
    """`python -m ARGS` from the repository root, as a user runs the CLI."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, **kwargs
    )


def _train(export_dir, *args):
    result = run_module("training.train", *args, "--export-dir", export_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return export_dir, result


@pytest.fixture(scope="session")
def cli_dates_export(tmp_path_factory):
    """A tiny dates model trained and exported by the CLI: `(export_dir, completed process)`."""
    export_dir = str(tmp_path_factory.mktemp("cli") / "dates")
    return _train(export_dir, "--preset", "tiny", "--epochs", "1", "--train-size", "600")


@pytest.fixture(scope="session")
def cli_tsv_core_export(tmp_path_factory):
    """A tiny French → English Tatoeba model exported as `training.train` exports by default: float32, core decoding."""
    export_dir = str(tmp_path_factory.mktemp("cli") / "fr-en-core")
    return _train(export_dir, "--dataset", TATOEBA, "--reverse", "--preset", "tiny", "--epochs", "1",
                  "--train-size", "800", "--vocab-size", "400", "--max-length", "24")


@pytest.fixture(scope="session")
def cli_tsv_export(tmp_path_factory):
    """A tiny French → English Tatoeba model (two SentencePiece vocabularies), bfloat16 and XLA.

    Its export decodes with XLA (`--export-xla`): the tests of served exports
    run both kinds, the dates export being the core-ops one.
    """
    export_dir = str(tmp_path_factory.mktemp("cli") / "fr-en")
    return _train(
        export_dir, "--dataset", TATOEBA, "--reverse", "--preset", "tiny", "--epochs", "1",
        "--train-size", "800", "--vocab-size", "400", "--max-length", "24",  # 3 source widths to warm up under XLA
        "--mixed-precision", "bfloat16", "--jit-compile", "--export-xla",  # the flags work end to end
    )


def kill_when(command, condition, timeout=600, delay=0.0, **kwargs):
    """Starts `command` from the repository root and SIGKILLs it once `condition()` is true (`delay` s later).

    Returns the condition's last value (falsy when the command ended or
    the time ran out first). What a crash, an OOM killer or `kill -9` does.
    """
    import signal
    import subprocess
    import time

    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    try:
        deadline, held = time.time() + timeout, None
        while time.time() < deadline and process.poll() is None:
            held = condition()
            if held:
                break
            time.sleep(0.02)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return held
