"""Training callbacks: a resume backup that survives a corrupt file."""

import os
import shutil

import keras


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore`, keeping the last two backups, loud about a bad one.

    Each epoch's backup first copies the previous one aside (Keras's
    `double_checkpoint`). On restart, a backup that cannot be read (a file
    truncated or corrupted by a crash mid-write) is reported with its path,
    and training resumes from the previous backup, one epoch earlier. With
    no usable backup at all it stops with an error that says what to delete.
    """

    def __init__(self, backup_dir, log=print):
        super().__init__(backup_dir, double_checkpoint=True)
        self.log = log

    def on_train_begin(self, logs=None):
        if not os.path.exists(self._weights_path):
            return  # a fresh start: nothing to restore

        def load(path):
            if path == self._prev_weights_path:  # put the previous backup (and its epoch) in place first
                shutil.copyfile(self._prev_weights_path, self._weights_path)
                if os.path.exists(self._prev_training_metadata_path):
                    shutil.copyfile(self._prev_training_metadata_path, self._training_metadata_path)
                elif os.path.exists(self._training_metadata_path):
                    os.remove(self._training_metadata_path)
            self._load_model()

        candidates = [self._weights_path] + ([self._prev_weights_path] if os.path.exists(self._prev_weights_path) else [])
        restore_newest_readable(candidates, load, self.backup_dir, "backup", self.log)


def restore_newest_readable(paths, load, directory, kind, log=print):
    """`load(path)` for the newest of `paths` (newest first) that can be read; returns that path.

    The one restore rule of both training paths (`model.fit`'s
    `BackupAndRestore` above and the multi-worker loop's checkpoints): a
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
