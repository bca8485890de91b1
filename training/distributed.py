"""Training on several machines: `MultiWorkerMirroredStrategy` and a custom loop.

Why a loop of our own: Keras 3's `model.fit` does not run under
`tf.distribute.MultiWorkerMirroredStrategy` (keras-team/keras#20585, open
since TensorFlow 2.16: per-replica values reach the symbolic build, then the
reduction of the scalar logs fails; reproduced with two localhost workers).
`fit` is kept for every other strategy. This loop does fit's job with the
same parts: the compiled model, its loss, optimizer (learning-rate schedule
included) and `metrics.masked_hits` (MaskedAccuracy's count), the same input
pipeline, and the same callbacks in the same order, with `fit`'s progress
bar and history (`trainers.training_callbacks`: held-out scores, throughput,
epoch checkpoints with the kept epoch and early stopping, TensorBoard).
Only the resume backup is its own: `tf.train.CheckpointManager` in place of
`callbacks.StepBackup`, because saving is collective here (a backup every
`backup_every` steps and at each epoch's end; it resumes mid-epoch, at the
step it records, the data continuing after what was trained).

Workers write only their own files, as TensorFlow's multi-worker guide
prescribes: the chief writes the real paths; any other worker writes a
twin under `workertemp_<task>_<id>/` beside them and deletes it. A worker
killed mid-training is restarted with the same command, and every worker
resumes from the chief's last checkpoint (the work dir must therefore be
shared, or the same path on every host, as for `StepBackup`).
"""

import contextlib
import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from tf_transformer import metrics


def multi_worker_strategy():
    """`MultiWorkerMirroredStrategy` from `TF_CONFIG`, with a clear error when it is missing or wrong."""
    text = os.environ.get("TF_CONFIG")
    example = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
    if not text:
        raise SystemExit(
            "--strategy multi-worker reads the cluster from the TF_CONFIG environment variable, which is "
            f"not set. Set it on every worker, e.g. TF_CONFIG='{example}' (README: 'Training on several "
            "GPUs / machines')."
        )
    try:
        config = json.loads(text)
        workers = list(config["cluster"].get("worker", [])) + list(config["cluster"].get("chief", []))
        task_type, index = config["task"]["type"], int(config["task"]["index"])
        if not workers or task_type not in config["cluster"] or index >= len(config["cluster"][task_type]):
            raise ValueError(f"task {task_type}:{index} is not in the cluster")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise SystemExit(f"TF_CONFIG is not valid ({type(error).__name__}: {error}); expected e.g. {example}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def task_of(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None, 0
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """The chief task, or worker 0 when the cluster names no chief; any strategy without a cluster."""
    task_type, task_id = task_of(strategy)
    if task_type is None or task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


def write_path(path, strategy):
    """Where this worker writes `path`: the chief writes it; others a temporary twin beside it."""
    if is_chief(strategy):
        return path
    task_type, task_id = task_of(strategy)
    parent, name = os.path.split(os.path.normpath(path))
    return os.path.join(parent, f"workertemp_{task_type}_{task_id}", name)


def remove_temporary(path, strategy):
    """Deletes this worker's twin of `path` (nothing for the chief), and its folder once empty."""
    if is_chief(strategy):
        return
    twin = write_path(path, strategy)
    if os.path.isdir(twin):
        shutil.rmtree(twin, ignore_errors=True)
    elif os.path.exists(twin):
        os.remove(twin)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(twin))


def check_same_on_every_worker(strategy, fingerprint, what):
    """Stops with a clear error unless every worker holds the same `fingerprint` (an int)."""
    value = tf.constant([fingerprint], tf.int64)
    per_replica = strategy.experimental_distribute_values_from_function(lambda _: value)
    every = strategy.gather(per_replica, axis=0).numpy()
    if len(set(every.tolist())) != 1:
        raise SystemExit(
            f"The workers hold different {what}: every worker must read the same dataset with the "
            "same flags and --seed (subword vocabularies are learned on each worker)."
        )


def _checkpoint_paths(directory):
    state = tf.train.get_checkpoint_state(directory)
    return list(state.all_model_checkpoint_paths) if state else []


def restore(checkpoint, directory, log=print):
    """Restores the newest readable checkpoint in `directory` (`callbacks.restore_newest_readable`'s rule); its path or None."""
    from training.callbacks import restore_newest_readable

    newest_first = list(reversed(_checkpoint_paths(directory)))
    return restore_newest_readable(
        newest_first, lambda path: checkpoint.restore(path).assert_existing_objects_matched(), directory,
        "checkpoint", log,
    )


def fit(model, strategy, make_dataset, *, epochs, steps_per_epoch, validation_steps, backup_dir, callbacks=(),
        jit_compile=False, backup_every=None, log=print):
    """`model.fit`'s job under `strategy` with a loop of our own, driving the same callbacks; returns the `History`.

    The loop does what `fit` does and no more: the steps, the validation
    loss and accuracy, and the callbacks' hooks in `fit`'s order, with
    `fit`'s progress bar and history added. So the epoch checkpoints, the
    kept epoch, early stopping (`model.stop_training`), the held-out scores,
    the throughput and TensorBoard are the very callbacks `train_single`
    hands `fit` (`trainers.training_callbacks`). What it keeps itself is the
    resume backup: saving under this strategy is collective, so every
    worker must save at the same step, which `callbacks.StepBackup`'s timer
    cannot promise.

    Args:
        model: a model compiled under `strategy.scope()` (loss, optimizer).
        make_dataset: `(split, input_context, first_epoch=0, skip_steps=0)
            -> tf.data.Dataset` of this worker's share, endless, batched per
            replica (see `pipeline.examples_from_files`' `input_context`);
            training data from step `skip_steps` of `first_epoch` on.
        steps_per_epoch, validation_steps: steps every worker runs, the
            same on all of them (an uneven number would leave a worker
            waiting on a collective for ever).
        backup_dir: the resume backup (`tf.train.CheckpointManager`; the
            chief's, other workers write a twin and delete it). Every worker
            resumes from the chief's, at the step it records.
        callbacks: Keras callbacks, run on every worker in this order; they
            must not run collectives, and whatever they write must be each
            worker's own (`write_path`).
        backup_every: a backup every this many steps within an epoch
            (default: a quarter of an epoch, at most 500 steps) and at each
            epoch's end. Steps, not minutes: every worker must save at the
            same step, since saving is collective.
    """
    optimizer, loss_fn = model.optimizer, model.loss
    with strategy.scope():
        optimizer.build(model.trainable_variables)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch, step=step)
    restored = restore(checkpoint, backup_dir, log)
    first_epoch, skip_steps = int(epoch.numpy()), int(step.numpy())
    if restored:
        log(f"Resuming from the backup at epoch {first_epoch + 1}, step {skip_steps} ({restored})")
    every = backup_every or max(1, min(500, steps_per_epoch // 4))
    manager = tf.train.CheckpointManager(checkpoint, write_path(backup_dir, strategy), max_to_keep=2)

    # The stream continues after the restored step (`pipeline.training_stream`).
    train = strategy.distribute_datasets_from_function(
        lambda context: make_dataset("train", context, first_epoch, skip_steps))
    validation = strategy.distribute_datasets_from_function(lambda context: make_dataset("validation", context))

    def gradients(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = loss_fn(y, logits)  # already divided by the real tokens of all replicas
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        positions = tf.cast(tf.size(y), tf.float32)  # what `metrics.TargetTokens(real=False)` counts under `fit`
        return loss, tape.gradient(scaled, model.trainable_variables), (*metrics.masked_hits(y, logits), positions)

    def evaluate(x, y):
        logits = model(x, training=False)
        return loss_fn(y, logits), metrics.masked_hits(y, logits)

    if jit_compile:
        # XLA compiles each replica's forward and backward; the all-reduce
        # and the update stay outside (XLA has no kernels for the collectives).
        gradients = tf.function(gradients, jit_compile=True)
        evaluate = tf.function(evaluate, jit_compile=True)

    def train_replica(inputs):
        loss, grads, counts = gradients(*inputs)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))  # all-reduces across workers
        return (loss, *counts)

    def validation_replica(inputs):
        loss, hits = evaluate(*inputs)
        return (loss, *hits)

    def distributed(replica_fn, spec):
        def step(inputs):
            values = strategy.run(replica_fn, args=(inputs,))
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for v in values]

        # One trace for every bucket shape: each worker meets the shapes in
        # its own order, and a retrace on one worker alone would misalign
        # the collectives of the workers.
        return tf.function(step, input_signature=[spec])

    train_step = distributed(train_replica, train.element_spec)
    validation_step = distributed(validation_replica, validation.element_spec)
    train_iterator, validation_iterator = iter(train), iter(validation)
    hooks = keras.callbacks.CallbackList(list(callbacks), add_history=True, add_progbar=True, model=model,
                                         verbose=1, epochs=epochs, steps=steps_per_epoch)
    model.stop_training = False
    hooks.on_train_begin()
    for index in range(first_epoch, epochs):
        start = skip_steps if index == first_epoch else 0
        # A resumed epoch's bar counts the steps left, as `fit` resumed for them does (`trainers.train_single`).
        hooks.set_params({"verbose": 1, "epochs": epochs, "steps": steps_per_epoch - start})
        hooks.on_epoch_begin(index)
        loss, hits, real, positions = 0.0, 0.0, 0.0, 0.0
        for done, number in enumerate(range(start, steps_per_epoch), start=1):
            values = [float(v) for v in train_step(next(train_iterator))]
            loss, hits, real, positions = loss + values[0], hits + values[1], real + values[2], positions + values[3]
            # The epoch's running means and sums, as `fit`'s metrics give them (`callbacks.Throughput` reads the sums).
            hooks.on_train_batch_end(done - 1, {"loss": loss / done, "masked_accuracy": hits / max(real, 1.0),
                                                "real_tokens": real, "target_positions": positions})
            if number + 1 < steps_per_epoch and (number + 1) % every == 0:
                step.assign(number + 1)
                manager.save()  # collective: every worker saves at this same step
                remove_temporary(backup_dir, strategy)
        logs = {"loss": loss / max(steps_per_epoch - start, 1), "masked_accuracy": hits / max(real, 1.0)}
        totals = np.zeros(3)
        for _ in range(validation_steps):
            totals += [float(v) for v in validation_step(next(validation_iterator))]
        logs.update(val_loss=totals[0] / validation_steps, val_masked_accuracy=totals[1] / max(totals[2], 1.0))
        hooks.on_epoch_end(index, logs)
        epoch.assign(index + 1)
        step.assign(0)
        manager.save()  # every worker saves (the save may need them all); only the chief's stays
        remove_temporary(backup_dir, strategy)
        if model.stop_training:
            break
    hooks.on_train_end()
    return model.history
