"""The two trainers behind one interface: `model.fit` (`train_single`), and the multi-worker loop Keras's `fit` cannot run (`train_multi_worker`; keras-team/keras#20585).

Both take the model, the run's `TrainingData`, config and options, the
work dir and the held-out translation callback; both run one callback list
(`training_callbacks`: held-out scores, throughput, the epoch checkpoints
that keep the best epoch by `--select-by` and the last `--average-last`
epochs, TensorBoard), resume mid-epoch from their backups, and return
`callbacks.Trained` from those checkpoints, which `callbacks.keep_chosen`
applies the same way after either.
"""

import os

import keras
import tensorflow as tf

from training import callbacks as callbacks_lib
from training import distributed, pipeline

def make_strategy(name):
    """The tf.distribute strategy; `auto` is mirrored over several GPUs, else Keras's default."""
    if name == "multi-worker":
        return distributed.multi_worker_strategy()  # first: it must exist before TensorFlow runs any op
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.get_strategy()  # the default: no distribution wrapper around the data


def epoch_checkpoints(config, directory, held_out_translation):
    """Every epoch's weights (the last `--average-last`), the kept epoch by `--select-by`, and early stopping."""
    select_by_score = config.select_by == "bleu"
    return callbacks_lib.EpochCheckpoints(
        directory,
        monitor=held_out_translation.monitor if select_by_score else "val_loss",
        mode="max" if select_by_score else "min",
        keep=config.average_last, patience=config.early_stopping_patience,
    )


def training_callbacks(held_out_translation, checkpoints, logs_dir, backup=None):
    """The one callback list both trainers run, in this order.

    Order matters: the held-out scores and the throughput enter an epoch's
    logs before the checkpoints (which choose the kept epoch by them), the
    backup and TensorBoard read them; the progress bar, added by `fit` or
    the loop, comes last.
    """
    return [held_out_translation, callbacks_lib.Throughput(), checkpoints, *([backup] if backup else []),
            keras.callbacks.TensorBoard(logs_dir)]


def stopped_early(checkpoints, config):
    """Whether the run had stopped early before it was killed (then it is not trained further)."""
    return bool(config.early_stopping_patience) and checkpoints.state["wait"] >= config.early_stopping_patience


def trained(checkpoints, config):
    """`callbacks.Trained` from the epoch checkpoints: the kept epoch and the last `--average-last` epochs."""
    last = checkpoints.state["epochs"][-config.average_last:] if config.average_last > 1 else []
    return callbacks_lib.Trained(checkpoints.best_path, checkpoints.state["best_epoch"],
                                 {epoch: checkpoints.path(epoch) for epoch in last})


def train_multi_worker(model, strategy, config, data, validation, args, work_dir, held_out_translation):
    """`model.fit`'s part under MultiWorkerMirroredStrategy (training.distributed says why).

    Every worker streams its own share (`TrainingData.stream`'s input
    context: its files, or every n-th line) and runs the same number of
    steps, with the callbacks `train_single` gives `fit`. Each worker keeps
    its own epoch checkpoints (the chief's in `work_dir/checkpoints`, the
    others' beside them), so every worker chooses, stops and averages alike;
    the loop resumes at the step its backup records.

    Returns:
        `callbacks.Trained`, as `train_single`: for `callbacks.keep_chosen`.
    """
    task_type, task_id = distributed.task_of(strategy)
    checkpoints = epoch_checkpoints(config, os.path.join(
        work_dir, "checkpoints" if distributed.is_chief(strategy) else f"checkpoints-{task_type}-{task_id}"),
        held_out_translation)

    def make_dataset(split, input_context, first_epoch=0, skip_steps=0):
        replicas = strategy.num_replicas_in_sync
        if split == "train":
            return data.stream(first_epoch=first_epoch, skip_steps=skip_steps, input_context=input_context,
                               num_replicas=replicas)
        examples = pipeline.examples_in_memory(*validation, config.max_length, repeat=False).shard(
            input_context.num_input_pipelines, input_context.input_pipeline_id).repeat()
        return pipeline.batches(examples, config.max_length, drop_remainder=True, num_replicas=replicas,
                                **data.batching).prefetch(tf.data.AUTOTUNE)

    validation_steps = pipeline.steps_for_one_pass(
        validation[0].row_lengths().numpy(), validation[1].row_lengths().numpy(), int(validation[0].nrows()),
        config.max_length, **data.batching)[0]
    if not stopped_early(checkpoints, config):
        distributed.fit(
            model, strategy, make_dataset,
            epochs=config.epochs,
            steps_per_epoch=data.steps_per_epoch,
            validation_steps=validation_steps,
            backup_dir=os.path.join(work_dir, "backup"),
            callbacks=training_callbacks(held_out_translation, checkpoints,
                                         distributed.write_path(os.path.join(work_dir, "logs"), strategy)),
            jit_compile=args.jit_compile,
            backup_every=args.backup_every,
        )
        distributed.remove_temporary(os.path.join(work_dir, "logs"), strategy)
    return trained(checkpoints, config)


def train_single(model, data, validation_data, config, args, work_dir, held_out_translation):
    """`model.fit` over the stream, resumable at any backed-up step.

    Returns:
        `callbacks.Trained`: the kept epoch's weights and the last
        `--average-last` epochs', for `callbacks.keep_chosen`.

    The backup stays until the export is published (`finish_run`): a run
    that fails or is killed while exporting resumes with the same command,
    straight to the export when training had ended.
    """
    backup = callbacks_lib.StepBackup(os.path.join(work_dir, "backup"), every_steps=args.backup_every)
    first_epoch, skip_steps = backup.restore(model)
    checkpoints = epoch_checkpoints(config, os.path.join(work_dir, "checkpoints"), held_out_translation)
    callbacks = training_callbacks(held_out_translation, checkpoints, os.path.join(work_dir, "logs"), backup)
    if stopped_early(checkpoints, config):
        first_epoch = config.epochs
    if first_epoch >= config.epochs and (first_epoch or skip_steps):
        print(f"Training had finished before (epoch {checkpoints.state['epochs'][-1] if checkpoints.state['epochs'] else first_epoch}"
              f" of {config.epochs}); evaluating and exporting its weights.", flush=True)
    # A run resumed mid-epoch first trains that epoch's remaining steps, its
    # stream skipping what was trained; then the whole epochs that are left.
    if skip_steps and first_epoch < config.epochs:
        model.fit(data.stream(first_epoch, skip_steps, epochs=first_epoch + 1), validation_data=validation_data,
                  initial_epoch=first_epoch, epochs=first_epoch + 1, steps_per_epoch=data.steps_per_epoch - skip_steps,
                  callbacks=callbacks, shuffle=False)
        first_epoch += 1
    if first_epoch < config.epochs and not model.stop_training:
        model.fit(data.stream(first_epoch, epochs=config.epochs), validation_data=validation_data,
                  initial_epoch=first_epoch, epochs=config.epochs, steps_per_epoch=data.steps_per_epoch,
                  callbacks=callbacks, shuffle=False)
    return trained(checkpoints, config)
