"""Training callbacks: resume backups that survive a kill or a corrupt file, checkpoints, throughput, held-out scores."""

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import time

import keras
import numpy as np


def restore_newest_readable(paths, load, directory, kind, log=print):
    """`load(path)` for the newest of `paths` (newest first) that can be read; returns that path.

    The one restore rule of both training paths (`model.fit`'s
    `StepBackup` below and the multi-worker loop's checkpoints): a
    backup that cannot be read (truncated or corrupted by a crash mid-write)
    is reported with its path and the previous one is tried; with none
    readable, a `RuntimeError` says what to delete to start over.
    """
    for index, path in enumerate(paths):
        try:
            load(path)
            return path
        except Exception as error:  # noqa: BLE001  every reader raises its own kind (h5py, TensorFlow, JSON)
            problem = f"{type(error).__name__}: {error}".splitlines()[0]
            older = paths[index + 1] if index + 1 < len(paths) else None
            if older is None:
                raise RuntimeError(
                    f"The training {kind} {path} cannot be read ({problem}) and there is no previous {kind} "
                    f"to fall back to. Delete {directory} to start over."
                ) from None
            log(f"Warning: the training {kind} {path} cannot be read ({problem}); resuming from the previous "
                f"{kind} {older}.")
    return None


def write_json(path, value):
    """Written to a temporary file and renamed: a kill never leaves half a file, a full disk none at all."""
    with _removed_on_failure(path + ".tmp") as temporary:
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(value, file)
        os.replace(temporary, path)


def _save_weights(model, path):
    _check_space(model, path)
    with _removed_on_failure(path + ".tmp.weights.h5") as temporary:  # Keras insists on the suffix
        model.save_weights(temporary)
        os.replace(temporary, path)


def _check_space(model, path):
    """Raises `OSError(ENOSPC)` naming `path` when its file system cannot hold the weights about to be written.

    Checked before writing because HDF5, interrupted by a full disk
    mid-write, can crash the process (a segfault) instead of raising.
    """
    variables = list(model.weights) + (list(model.optimizer.variables) if model.optimizer is not None else [])
    needed = sum(int(np.prod(v.shape)) * np.dtype(keras.backend.standardize_dtype(v.dtype)).itemsize
                 for v in variables) + (1 << 20)  # and HDF5's own structures
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"No space left on device ({needed / 2**20:.1f} MiB needed, "
                                    f"{free / 2**20:.1f} MiB free)", path)


@contextlib.contextmanager
def _removed_on_failure(path):
    """Yields `path`; if the block fails (a full disk), the partial file there is removed before the error goes on."""
    try:
        yield path
    except BaseException:
        try:
            os.remove(path)
        except OSError:
            pass
        raise


class StepBackup(keras.callbacks.Callback):
    """The resume backup: weights, optimizer and position (epoch, step) every few steps and at each epoch's end.

    Keras's `BackupAndRestore` resumes at an epoch's start; a real corpus's
    epoch is hours. This one saves every `every_steps` steps (or, without
    it, every `every_seconds` of training) and at the end of every epoch,
    keeping the previous backup too, and `restore` returns where training
    stopped, so `training.pipeline.training_stream` can continue the data
    after what was trained. Files are renamed into place, so a kill
    mid-write leaves the previous backup; an unreadable one falls back to
    it (`restore_newest_readable`).
    """

    def __init__(self, backup_dir, every_steps=None, every_seconds=180.0, log=print):
        super().__init__()
        self.backup_dir, self.every_steps, self.every_seconds, self.log = backup_dir, every_steps, every_seconds, log
        # Two slots, the latest and the one before ("previous"); Keras insists on the .weights.h5 suffix.
        self.weights_path, self.position_path = (os.path.join(backup_dir, "latest" + e) for e in (".weights.h5", ".json"))
        self.previous_weights, self.previous_position = (os.path.join(backup_dir, "previous" + e) for e in (".weights.h5", ".json"))
        self.epoch, self.step_offset, self.steps_since, self.last_saved = 0, 0, 0, time.monotonic()

    def restore(self, model):
        """Loads the newest readable backup into `model`; returns `(epoch, step)` done (0-based epoch), (0, 0) if none."""
        slots = {self.weights_path: self.position_path, self.previous_weights: self.previous_position}
        candidates = [weights for weights, position in slots.items() if os.path.exists(position)]
        if not candidates:
            return 0, 0
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        position = {}

        def load(path):
            with open(slots[path], encoding="utf-8") as file:
                position.update(json.load(file))
            model.load_weights(path)

        restore_newest_readable(candidates, load, self.backup_dir, "backup", self.log)
        epoch, step = int(position["epoch"]), int(position["step"])
        self.log(f"Resuming from the backup at epoch {epoch + 1}, step {step}")
        self.epoch, self.step_offset = epoch, step
        return epoch, step

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.steps_since += 1
        due = self.steps_since >= self.every_steps if self.every_steps else \
            time.monotonic() - self.last_saved >= self.every_seconds
        if due:
            self.save(self.epoch, self.step_offset + batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self.step_offset = 0
        self.save(epoch + 1, 0)

    def save(self, epoch, step):
        os.makedirs(self.backup_dir, exist_ok=True)
        if os.path.exists(self.position_path):  # the previous pair first, so one whole backup always exists
            os.replace(self.weights_path, self.previous_weights)
            os.replace(self.position_path, self.previous_position)
        _save_weights(self.model, self.weights_path)
        write_json(self.position_path, {"epoch": epoch, "step": step})
        self.steps_since, self.last_saved = 0, time.monotonic()


class EpochCheckpoints(keras.callbacks.Callback):
    """Every epoch's weights (the last `keep`), the best by `monitor`, and early stopping — state that survives a restart.

    Keras's `ModelCheckpoint` and `EarlyStopping` keep their best value in
    Python, so a resumed run forgot it (and overwrote the best weights with
    its first epoch's). Here it is in `state.json` beside the weights.
    `last(k)` gives the newest `k` epochs' files for checkpoint averaging.
    """

    def __init__(self, directory, monitor="val_loss", mode="min", keep=1, patience=0, log=print):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.directory, self.monitor, self.mode, self.keep, self.patience, self.log = (
            directory, monitor, mode, max(1, keep), patience, log)
        self.state_path = os.path.join(directory, "state.json")
        self.best_path = os.path.join(directory, "best.weights.h5")
        self.state = {"best": None, "best_epoch": None, "wait": 0, "epochs": []}
        if os.path.exists(self.state_path):
            with open(self.state_path, encoding="utf-8") as file:
                self.state.update(json.load(file))

    def path(self, epoch):
        return os.path.join(self.directory, f"epoch-{epoch:04d}.weights.h5")

    def last(self, k):
        """Paths of the newest `k` saved epochs (fewer if fewer were kept)."""
        return [self.path(epoch) for epoch in self.state["epochs"][-k:]]

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"EpochCheckpoints monitors {self.monitor!r}, which the epoch's logs lack: {sorted(logs or {})}")
        os.makedirs(self.directory, exist_ok=True)
        number = epoch + 1
        _save_weights(self.model, self.path(number))
        epochs = [e for e in self.state["epochs"] if e != number] + [number]
        for old in epochs[: -self.keep]:
            if os.path.exists(self.path(old)):
                os.remove(self.path(old))
        self.state["epochs"] = epochs[-self.keep:]
        best = self.state["best"]
        if best is None or (value < best if self.mode == "min" else value > best):
            with _removed_on_failure(self.best_path + ".tmp") as temporary:
                shutil.copyfile(self.path(number), temporary)
                os.replace(temporary, self.best_path)
            self.state.update(best=float(value), best_epoch=number, wait=0)
        else:
            self.state["wait"] += 1
        write_json(self.state_path, self.state)
        if self.patience and self.state["wait"] >= self.patience:
            self.log(f"Early stopping: {self.monitor} has not improved for {self.patience} epochs "
                     f"(best {self.state['best']:.4g} at epoch {self.state['best_epoch']})")
            self.model.stop_training = True


class Throughput(keras.callbacks.Callback):
    """Each epoch's real (non-pad) target tokens per second of training and the padding fraction, in the logs.

    Reads the `tf_transformer.metrics.TargetTokens` sums (the model must be compiled with both)
    and takes them out of the logs, where their raw counts would only
    clutter the progress bar; `real_tokens_per_second` and `padding` go
    in, for the epoch line and TensorBoard.
    """

    KEYS = ("real_tokens", "target_positions")

    def on_epoch_begin(self, epoch, logs=None):
        self.started = self.last_batch = time.monotonic()
        self.counts = (0.0, 0.0)

    def on_train_batch_end(self, batch, logs=None):
        self.last_batch = time.monotonic()
        if logs is not None:
            if all(key in logs for key in self.KEYS):
                self.counts = tuple(float(logs[key]) for key in self.KEYS)
            for key in self.KEYS:
                logs.pop(key, None)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        # The sums as the last training step left them: by the epoch's end the
        # validation run has reset and reused the same metric objects.
        real, positions = self.counts
        for key in self.KEYS:
            logs.pop(key, None)
            logs.pop("val_" + key, None)
        seconds = max(self.last_batch - self.started, 1e-9)
        logs["real_tokens_per_second"] = round(real / seconds, 1)
        logs["padding"] = round(1.0 - real / positions, 4) if positions else 0.0


class HeldOutTranslation(keras.callbacks.Callback):
    """Translates held-out sources each epoch with the export's own greedy decoding and logs the scores.

    `translate_texts(sources) -> translations` runs a
    `tf_transformer.export.Translator`'s signature (`training.train`'s
    `translate_all`); `score(hypotheses, references)` returns a dict whose
    numbers go in the logs prefixed `val_` (BLEU and chrF for text, exact
    match for dates). `monitor` names the score that `--select-by bleu`
    keeps the best epoch by.
    """

    def __init__(self, translate_texts, sources, references, score, monitor):
        super().__init__()
        self.translate_texts, self.sources, self.references, self.score, self.monitor = (
            translate_texts, list(sources), list(references), score, monitor)

    def on_epoch_end(self, epoch, logs=None):
        outputs = self.translate_texts(self.sources)
        for key, value in self.score(outputs, self.references).items():
            if isinstance(value, (int, float)) and key != "examples" and logs is not None:
                logs["val_" + key] = value


@dataclasses.dataclass(frozen=True)
class Trained:
    """What either trainer leaves for `keep_chosen`: where the kept epoch's and the last epochs' weights are."""

    best_path: str  # the kept epoch's weights (`--select-by`); None: none kept
    best_epoch: int  # its number, from 1; None: none kept
    last_epochs: dict  # epoch → weights path of the last `--average-last` epochs; empty without averaging


def keep_chosen(model, trained, before_averaging=None):
    """What checkpoint selection and averaging chose, applied after either trainer.

    The kept epoch's weights (`trained.best_path`, chosen by `--select-by`),
    then, when `trained.last_epochs` holds two or more, their mean
    (`--average-last`). `before_averaging()` is called on the kept epoch's
    weights before they are averaged away (to set its score beside the
    average's).

    Returns:
        `(averaged epoch numbers, before_averaging's result)`: `([], None)`
        when nothing was averaged.
    """
    if trained.best_path and os.path.exists(trained.best_path):
        model.load_weights(trained.best_path)
    if len(trained.last_epochs) < 2:
        return [], None
    measured = before_averaging() if before_averaging else None
    average_weights(model, [trained.last_epochs[epoch] for epoch in sorted(trained.last_epochs)])
    return sorted(trained.last_epochs), measured


def average_weights(model, paths):
    """Sets `model`'s weights to the mean of the weight files `paths` (the paper, section 6.1)."""
    import numpy as np

    total = None
    for path in paths:
        model.load_weights(path)
        values = [np.asarray(keras.ops.convert_to_numpy(w), dtype=np.float64) for w in model.weights]
        total = values if total is None else [t + v for t, v in zip(total, values)]
    for weight, value in zip(model.weights, total):
        weight.assign((value / len(paths)).astype(weight.dtype))
