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
        try:
            self._load_model()
            return
        except (OSError, ValueError, KeyError) as error:
            problem = f"{type(error).__name__}: {error}".splitlines()[0]
        if not os.path.exists(self._prev_weights_path):
            raise RuntimeError(
                f"The training backup {self._weights_path} cannot be read ({problem}) and there is "
                f"no previous backup to fall back to. Delete {self.backup_dir} to start over."
            )
        self.log(
            f"Warning: the training backup {self._weights_path} cannot be read ({problem}); "
            f"resuming from the previous backup {self._prev_weights_path}."
        )
        shutil.copyfile(self._prev_weights_path, self._weights_path)
        if os.path.exists(self._prev_training_metadata_path):
            shutil.copyfile(self._prev_training_metadata_path, self._training_metadata_path)
        elif os.path.exists(self._training_metadata_path):
            os.remove(self._training_metadata_path)
        self._load_model()
