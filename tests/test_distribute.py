"""Distributed training: mirrored over two logical CPUs, two worker processes, JAX DataParallel."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

MIRRORED = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras, numpy as np
import tf_transformer as tt
from tf_transformer import losses, metrics

rng = np.random.default_rng(0)
source = rng.integers(3, 20, size=(64, 6)).astype("int32")
target = np.concatenate([np.ones((64, 1), "int32"), source[:, ::-1], np.full((64, 1), 2, "int32")], axis=1)
data = tf.data.Dataset.from_tensor_slices(
    ({"encoder_tokens": source, "decoder_tokens": target[:, :-1]}, target[:, 1:])
).batch(16)  # the global batch: 8 per replica under the mirrored strategy

def train(strategy):
    keras.utils.set_random_seed(0)
    with strategy.scope():
        config = tt.TransformerConfig.preset("tiny", source_vocab_size=20, target_vocab_size=20, d_model=32, dff=64, dropout=0.0)
        model = tt.build_transformer(config)
        # SGD, as for JAX below: Adam divides each step by the gradient's own
        # running size, so a gradient that is round-off in exact arithmetic
        # (key biases: exactly zero, the softmax cancels them) or nearly so
        # moves by up to a learning rate either way, and the comparison would
        # measure that noise (6e-4 on one FFN weight); SGD also catches a
        # gradient summed or averaged wrongly across replicas, which Adam's
        # scale invariance would hide. The paper's optimizer runs distributed
        # in the two-worker test below.
        model.compile(keras.optimizers.SGD(0.5), losses.MaskedSparseCategoricalCrossentropy(),
                      metrics=[metrics.MaskedAccuracy()])
    history = model.fit(data, epochs=4, verbose=0, shuffle=False)
    return history.history["loss"], [w.numpy() for w in model.weights if not w.path.endswith("key_bias")]

one_loss, one_weights = train(tf.distribute.OneDeviceStrategy("/cpu:0"))
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
assert strategy.num_replicas_in_sync == 2
two_loss, two_weights = train(strategy)
difference = max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, two_weights))
print(json.dumps({"one": one_loss, "two": two_loss, "max_weight_difference": difference}))
"""


def run_comparison(script, env=None):
    """Runs a script that trains on one device and on two; checks both train and agree.

    Returns what the script printed (a JSON object, on its last line).
    """
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    one, two = found["one"], found["two"]
    assert one[-1] < one[0] and two[-1] < two[0]  # it trains
    # Same global batch, same data: the same losses and weights, to float32
    # round-off of summing gradients in another order (stated tolerance 1e-4).
    for a, b in zip(one, two):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (one, two)
    assert found["max_weight_difference"] < 1e-4, found
    return found


def test_mirrored_matches_one_device():
    run_comparison(MIRRORED)


# --- several worker processes: MultiWorkerMirroredStrategy on localhost -------------------------

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_workers(arguments, count=2):
    """Starts `python -m training.train ARGUMENTS` as `count` workers of one cluster.

    Returns the processes and, for each, a list that a thread fills with its
    output lines as they come.
    """
    cluster = {"worker": [f"localhost:{port}" for port in free_ports(count)]}
    processes, outputs = [], []
    for index in range(count):
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        process = subprocess.Popen(
            [sys.executable, "-m", "training.train", *arguments], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        lines = []
        threading.Thread(target=lambda p=process, l=lines: l.extend(p.stdout), daemon=True).start()
        processes.append(process)
        outputs.append(lines)
    return processes, outputs


def stop(processes):
    for process in processes:  # whatever happened, no worker outlives the test
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)


def run_workers(arguments, timeout=600):
    processes, outputs = start_workers(arguments)
    try:
        deadline = time.time() + timeout
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.time()))
        time.sleep(0.5)  # the readers' last lines
        return [p.returncode for p in processes], ["".join(o).replace("\r", "\n") for o in outputs]
    finally:
        stop(processes)


def wait_for(lines, text, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if any(text in line for line in list(lines)):
            return True
        time.sleep(0.2)
    return False


def last_epoch_line(output):
    """The last epoch's logs, less the throughput: each worker times its own steps."""
    line = [line for line in output.splitlines() if "val_loss" in line][-1].split("step - ")[-1]
    return re.sub(r" - real_tokens_per_second: [0-9.]+", "", line)


def epochs_started(output):
    return [line.split()[1] for line in output.splitlines() if line.startswith("Epoch ")]


@pytest.mark.slow
def test_two_workers_train_export_once_and_survive_a_kill(tmp_path):
    export_dir, work_dir = str(tmp_path / "dates"), str(tmp_path / "dates.work")
    # --select-by bleu and --average-last 2, as `fit`'s path honours them (tests/test_trainers.py: the same rule).
    arguments = ["--strategy", "multi-worker", "--preset", "tiny", "--train-size", "3000", "--select-by", "bleu",
                 "--average-last", "2", "--export-dir", export_dir, "--work-dir", work_dir]
    codes, outputs = run_workers([*arguments, "--epochs", "1"])
    assert codes == [0, 0], "\n----\n".join(o[-3000:] for o in outputs)
    assert sorted(os.listdir(export_dir)) == ["1"]  # one export: the chief's
    assert not [p for p in tmp_path.rglob("*") if "workertemp" in p.name]  # the others' files are gone
    assert os.path.exists(os.path.join(export_dir, "1", "saved_model.pb"))
    # One synchronous job: both workers saw the same all-reduced losses.
    assert last_epoch_line(outputs[0]) == last_epoch_line(outputs[1])
    assert "Exported to " + os.path.join(export_dir, "1") in outputs[0]

    # More epochs: the job resumes after epoch 1; worker 1 is killed in epoch 3,
    # after a backup (every 3 steps), and the job (worker 0 too, as a cluster
    # manager would) is restarted: it resumes at that step, not at the epoch's start.
    arguments += ["--backup-every", "3"]
    processes, outputs = start_workers([*arguments, "--epochs", "3"])
    try:
        assert wait_for(outputs[1], "Epoch 3/3", timeout=600), "".join(outputs[1])[-3000:]
        time.sleep(2.0)
        processes[1].send_signal(signal.SIGKILL)
        time.sleep(5.0)
    finally:
        stop(processes)
    assert sorted(os.listdir(export_dir)) == ["1"]  # the killed job exported nothing
    assert epochs_started("".join(outputs[0]).replace("\r", "\n"))[0] == "2/3"
    codes, outputs = run_workers([*arguments, "--epochs", "3"])
    assert codes == [0, 0], "\n----\n".join(o[-3000:] for o in outputs)
    for output in outputs:
        resumed = re.search(r"Resuming from the backup at epoch 3, step (\d+)", output)
        assert resumed and int(resumed.group(1)) > 0 and epochs_started(output) == ["3/3"], output[-3000:]
    assert sorted(os.listdir(export_dir)) == ["1", "2"]
    assert not [p for p in tmp_path.rglob("*") if "workertemp" in p.name]
    # Each epoch was judged by its held-out exact match, the same on both workers, and the export is the
    # mean of the last two epochs' weights, as its record says.
    for output in outputs:
        assert "val_exact_match" in last_epoch_line(output)
        assert "Averaged the weights of epochs [2, 3]" in output, output[-3000:]
    with open(os.path.join(export_dir, "2", "assets.extra", "training_config.json"), encoding="utf-8") as file:
        recorded = json.load(file)["training"]
    assert recorded["select_by"] == "bleu" and recorded["average_last"] == 2
    # The exported weights are the mean of the chief's last two epoch files, averaged here by hand.
    import keras

    import tf_transformer  # noqa: F401  registers the layers of model.keras

    exported = keras.saving.load_model(os.path.join(export_dir, "2", "assets.extra", "model.keras"), compile=False)
    epoch_files = [os.path.join(work_dir, "checkpoints", f"epoch-{n:04d}.weights.h5") for n in (2, 3)]
    by_hand = [np.zeros(w.shape, "float64") for w in exported.get_weights()]
    for path in epoch_files:
        exported.load_weights(path)
        by_hand = [total + w for total, w in zip(by_hand, exported.get_weights())]
    exported = keras.saving.load_model(os.path.join(export_dir, "2", "assets.extra", "model.keras"), compile=False)
    for got, total in zip(exported.get_weights(), by_hand):
        np.testing.assert_allclose(got, total / 2, rtol=1e-5, atol=1e-6)
    # The kept epoch's own score sits beside the average's, as on one process.
    with open(os.path.join(export_dir, "2", "assets.extra", "evaluation.json"), encoding="utf-8") as file:
        without_averaging = json.load(file)["metrics"]["without_averaging"]
    assert without_averaging["averaged_epochs"] == [2, 3] and without_averaging["kept_epoch"] in (1, 2, 3)


def test_multi_worker_without_tf_config_says_so(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run(
        [sys.executable, "-m", "training.train", "--strategy", "multi-worker", "--export-dir", str(tmp_path / "m")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0 and "TF_CONFIG" in result.stderr


def test_truncated_checkpoint_is_reported_and_the_previous_one_used(tmp_path):
    import tensorflow as tf

    from training import distributed

    value = tf.Variable(0.0)
    checkpoint = tf.train.Checkpoint(value=value)
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=2)
    for v in (1.0, 2.0):
        value.assign(v)
        manager.save()
    newest = manager.latest_checkpoint
    with open(newest + ".data-00000-of-00001", "r+b") as file:
        file.truncate(2)  # as a crash in the middle of writing it would
    value.assign(-1.0)
    messages = []
    restored = distributed.restore(checkpoint, str(tmp_path), log=messages.append)
    assert restored == manager.checkpoints[0] and float(value.numpy()) == 1.0
    assert len(messages) == 1 and newest in messages[0] and "cannot be read" in messages[0]
    # With no previous checkpoint left, the error names the file and what to do.
    os.remove(manager.checkpoints[0] + ".index")
    with pytest.raises(RuntimeError, match="cannot be read.*Delete"):
        distributed.restore(tf.train.Checkpoint(value=tf.Variable(0.0)), str(tmp_path), log=messages.append)


# --- the JAX backend: keras.distribution.DataParallel over two CPU devices ----------------------

DATA_PARALLEL = """
import json
import jax, keras, numpy as np
assert keras.backend.backend() == "jax" and len(jax.devices()) == 2, jax.devices()
import tf_transformer as tt
from tf_transformer import losses, metrics

rng = np.random.default_rng(0)
source = rng.integers(3, 20, size=(64, 6)).astype("int32")
target = np.concatenate([np.ones((64, 1), "int32"), source[:, ::-1], np.full((64, 1), 2, "int32")], axis=1)
x, y = {"encoder_tokens": source, "decoder_tokens": target[:, :-1]}, target[:, 1:]

def train(distribution):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    config = tt.TransformerConfig.preset("tiny", source_vocab_size=20, target_vocab_size=20, d_model=32, dff=64, dropout=0.0)
    model = tt.build_transformer(config)
    # SGD: Adam (eps 1e-9) would turn the round-off of gradients that are
    # zero in exact arithmetic into full steps, and compare noise.
    model.compile(keras.optimizers.SGD(0.5), losses.MaskedSparseCategoricalCrossentropy())
    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False)
    devices = len(model.weights[0].value.sharding.device_set)
    return history.history["loss"], [np.asarray(w.value) for w in model.weights if not w.path.endswith("key_bias")], devices

one_loss, one_weights, _ = train(None)
two_loss, two_weights, devices = train(keras.distribution.DataParallel(devices=jax.devices()))
difference = max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, two_weights))
print(json.dumps({"one": one_loss, "two": two_loss, "max_weight_difference": difference, "devices": devices}))
"""


def test_jax_data_parallel_matches_one_device():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    found = run_comparison(DATA_PARALLEL, env)
    assert found["devices"] == 2  # the weights live on both devices
