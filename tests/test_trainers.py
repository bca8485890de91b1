"""The two trainers, called in process on a tiny run: one callback list, one selection rule, the same training."""

import dataclasses
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import pipeline, run, trainers


class ScriptedScore(keras.callbacks.Callback):
    """A held-out score per epoch, scripted, so the epoch that `--select-by bleu` must keep is known."""

    monitor = "val_bleu"

    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def on_epoch_end(self, epoch, logs=None):
        logs[self.monitor] = self.scores[epoch]


def initial(prepared):
    keras.utils.set_random_seed(0)
    model, _ = run.build_model(prepared.config, prepared.tokenizers, prepared.strategy)
    return model.get_weights()[0]


def tiny_run(tmp_path, name, **options):
    options = {"dataset": "dates", "preset": "tiny", "train_size": 400, "epochs": 3, "steps_per_epoch": 4,
               "select_by": "bleu", "average_last": 2, "export_dir": str(tmp_path / name), **options}
    prepared = run.prepare_run(**options)
    keras.utils.set_random_seed(0)  # the same initial weights for either trainer
    model, _ = run.build_model(prepared.config, prepared.tokenizers, prepared.strategy)
    validation = pipeline.encode_pairs(*prepared.corpus.splits["validation"], *prepared.tokenizers,
                                       prepared.config.max_length)
    return prepared, model, validation


@pytest.mark.slow
def test_fit_and_the_multi_worker_loop_choose_average_and_train_alike(tmp_path):
    scores = [10.0, 30.0, 20.0]  # epoch 2 is the best by the score, the last two are 2 and 3

    prepared, fit_model, validation = tiny_run(tmp_path, "fit")
    validation_data = pipeline.evaluation_batches(*validation[:2], prepared.config.max_length,
                                                  **prepared.data.batching)
    by_fit = trainers.train_single(fit_model, prepared.data, validation_data, prepared.config, prepared.args,
                                   prepared.own_work_dir, ScriptedScore(scores))

    prepared, loop_model, validation = tiny_run(tmp_path, "loop")
    # The multi-worker loop under the default strategy: the same code as on a cluster, one worker.
    by_loop = trainers.train_multi_worker(loop_model, tf.distribute.get_strategy(), prepared.config, prepared.data,
                                          validation[:2], prepared.args, prepared.own_work_dir,
                                          ScriptedScore(scores))

    for trained in (by_fit, by_loop):
        assert trained.best_epoch == 2 and sorted(trained.last_epochs) == [2, 3]
        assert os.path.exists(trained.best_path) and all(map(os.path.exists, trained.last_epochs.values()))
    # Both trained the same batches with the same steps: the last epoch's weights agree, and they moved.
    fit_model.load_weights(by_fit.last_epochs[3])
    loop_model.load_weights(by_loop.last_epochs[3])
    assert not np.allclose(fit_model.get_weights()[0], initial(prepared))
    for fit_weight, loop_weight in zip(fit_model.get_weights(), loop_model.get_weights()):
        np.testing.assert_allclose(loop_weight, fit_weight, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_early_stopping_is_kept_across_a_restart_by_either_trainer(tmp_path):
    # The score falls after epoch 1: with patience 1 both stop after epoch 2, and a restart trains no further.
    for name in ("fit", "loop"):
        for attempt in range(2):
            prepared, model, validation = tiny_run(tmp_path, name, epochs=4)
            config = dataclasses.replace(prepared.config, early_stopping_patience=1)
            if name == "fit":
                validation_data = pipeline.evaluation_batches(*validation[:2], config.max_length,
                                                              **prepared.data.batching)
                trained = trainers.train_single(model, prepared.data, validation_data, config, prepared.args,
                                                prepared.own_work_dir, ScriptedScore([5.0, 4.0, 3.0, 2.0]))
            else:
                trained = trainers.train_multi_worker(model, tf.distribute.get_strategy(), config, prepared.data,
                                                      validation[:2], prepared.args, prepared.own_work_dir,
                                                      ScriptedScore([5.0, 4.0, 3.0, 2.0]))
            assert trained.best_epoch == 1 and sorted(trained.last_epochs) == [1, 2], (name, attempt)
