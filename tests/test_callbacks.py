"""Callbacks (fastcnn.callbacks), the training loop (fastcnn.training) and train_step."""

import csv
import io
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fastcnn import training
from fastcnn.callbacks import (
    Callback,
    CallbackList,
    CSVLogger,
    EarlyStopping,
    History,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgbarLogger,
    TerminateOnNaN,
)
from fastcnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU
from fastcnn.model import Sequential, load
from fastcnn.optim import SGD, Adam, StepLR
from fastcnn.training import DivergenceCheck


def tiny_model(dtype=np.float32):
    return Sequential(
        Conv2D(1, 2, 3, padding=1, dtype=dtype, rng=0),
        BatchNorm2D(2, dtype=dtype),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(8, 3, dtype=dtype, rng=1),
    )


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((24, 1, 4, 4)).astype(np.float32)
    return X, rng.integers(0, 3, 24)


class FakeModel:
    """What the user callbacks touch: stop_training, an optimizer, state and save."""

    def __init__(self):
        self.stop_training = False
        self.optimizer = SGD(0.5)
        self.weights = {"w": np.zeros(2)}
        self.saved = []

    def state_dict(self):
        return {k: v.copy() for k, v in self.weights.items()}

    def load_state_dict(self, state):
        for k, v in state.items():
            self.weights[k][...] = v

    def save(self, path):
        self.saved.append(path)


def attach(callback, model=None, **params):
    CallbackList([callback], model=model or FakeModel(), params=params)
    return callback


# ---------------------------------------------------------------------------------------
# The loop and CallbackList


class Recorder(Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, sorted(logs)))

    def on_batch_begin(self, batch, logs=None):
        self.calls.append(("batch_begin", batch))

    def on_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, sorted(logs)))


def test_hooks_are_called_in_order_with_model_and_params(backend, data):
    recorder = Recorder()
    model = tiny_model()
    model.fit(*data, epochs=2, batch_size=16, verbose=0, callbacks=[recorder])
    batch_keys = ["accuracy", "loss", "size"]
    epoch_keys = ["accuracy", "loss", "lr", "time"]
    expected = [("train_begin",)]
    for epoch in range(2):
        expected.append(("epoch_begin", epoch))
        for batch in range(2):
            expected += [("batch_begin", batch), ("batch_end", batch, batch_keys)]
        expected.append(("epoch_end", epoch, epoch_keys))
    assert recorder.calls == [*expected, ("train_end",)]
    assert recorder.model is model
    assert recorder.params["epochs"] == 2 and recorder.params["steps"] == 2
    assert recorder.params["samples"] == 24 and recorder.params["batch_size"] == 16


def test_stop_training_stops_after_the_epoch(data):
    class StopAfterOneBatch(Callback):
        def on_batch_end(self, batch, logs=None):
            self.model.stop_training = True

    recorder = Recorder()
    history = tiny_model().fit(*data, epochs=5, batch_size=8, verbose=0,
                               callbacks=[StopAfterOneBatch(), recorder])  # fmt: skip
    assert history.epoch == [0] and history.stopped_by_callback
    assert sum(call[0] == "batch_end" for call in recorder.calls) == 3  # the whole epoch


def test_an_object_with_only_on_epoch_end_still_works(data):
    class Legacy:
        def __init__(self):
            self.epochs = []

        def on_epoch_end(self, epoch, logs):
            self.epochs.append(epoch)
            return epoch == 2

    legacy = Legacy()
    history = tiny_model().fit(*data, epochs=6, verbose=0, callbacks=legacy)
    assert legacy.epochs == [0, 1, 2] and history.stopped_by_callback


def test_callbacks_without_any_hook_are_refused(data):
    with pytest.raises(TypeError, match=r"callbacks\[1\].*on_epoch_end"):
        tiny_model().fit(*data, verbose=0, callbacks=[History(), object()])


def test_on_train_end_runs_when_training_raises(data):
    recorder = Recorder()

    class Boom(Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tiny_model().fit(*data, epochs=3, verbose=0, callbacks=[Boom(), recorder])
    assert recorder.calls[-1] == ("train_end",)


class Duck:
    """A model that is no Sequential: the loop needs only forward, backward, parameters."""

    def __init__(self):
        self.net = tiny_model()

    def forward(self, x, training=False):
        return self.net.forward(x, training)

    def backward(self, grad, input_grad=True):
        return self.net.backward(grad, input_grad=input_grad)

    def parameters(self):
        return self.net.parameters()


def test_the_loop_trains_any_model_with_forward_backward_parameters(backend, data):
    duck, twin = Duck(), tiny_model()
    kwargs = dict(epochs=2, batch_size=8, optimizer=SGD(0.1), loss="cross_entropy",
                  validation_data=None, validation_split=0.0, shuffle=True, verbose=0,
                  callbacks=None, checkpoint=None)  # fmt: skip
    options = training.fit_options(duck, **kwargs, seeded=False)
    batches = training.Batches(*data, None, 8, True)
    history = training.fit(duck, batches, None, np.random.default_rng(0), options)
    reference = twin.fit(*data, **{**kwargs, "optimizer": SGD(0.1)}, random_state=0)
    assert history.epoch == [0, 1] and duck.history is history
    assert_allclose(history.history["loss"], reference.history["loss"], rtol=1e-6)
    assert_allclose(duck.net.state_dict()["5.weight"], twin.state_dict()["5.weight"], rtol=1e-6)


def test_batches_cover_every_sample_once_per_epoch(rng):
    X, y = np.arange(10.0)[:, None], np.arange(10)
    batches = training.Batches(X, y, np.ones(10), 4, shuffle=True)
    assert len(batches) == 3
    seen = [b for _, b, _ in batches.epoch(rng)]
    assert [len(b) for b in seen] == [4, 4, 2]
    assert sorted(np.concatenate(seen)) == list(range(10))
    fixed = training.Batches(X, y, None, 4, shuffle=False)
    assert_array_equal(np.concatenate([b for _, b, _ in fixed.epoch(rng)]), y)


# ---------------------------------------------------------------------------------------
# History, progress, divergence


def test_history_records_epochs():
    history = History(["loss"])
    history.on_epoch_end(0, {"loss": 2.0, "lr": 0.1})
    history.on_epoch_end(1, {"loss": 1.0, "lr": 0.1})
    assert history.epoch == [0, 1] and history.history == {"loss": [2.0, 1.0], "lr": [0.1, 0.1]}
    assert repr(history) == "History(epochs=2, last={'loss': 1.0, 'lr': 0.1})"


def test_progbar_logger_writes_one_line_per_epoch():
    stream = io.StringIO()
    bar = attach(ProgbarLogger(verbose=2, stream=stream), epochs=3, steps=2)
    bar.on_epoch_begin(0)
    bar.on_batch_end(0, {"loss": 1.0, "accuracy": 0.5, "size": 8})
    bar.on_batch_end(1, {"loss": 0.8, "accuracy": 0.6, "size": 8})
    bar.on_epoch_end(0, {"loss": 0.8, "accuracy": 0.6, "time": 0.5, "lr": 0.1})
    bar.on_train_end()
    line = stream.getvalue()
    assert line.startswith("\rEpoch 1/3 [====================] 2/2  loss 0.8000  accuracy 0.6000")
    assert line.endswith("s\n") and line.count("\n") == 1 and "img/s" in line and "lr" not in line


def test_divergence_check_names_the_first_bad_array():
    model = tiny_model()
    check = attach(DivergenceCheck(), model, epochs=4)
    check.on_epoch_end(0, {})  # all finite
    model.layers[1].buffers["running_var"][0] = np.inf
    with pytest.raises(FloatingPointError, match=r"buffers .* epoch 2/4, .*'1.running_var'"):
        check.on_epoch_end(1, {})
    duck = Duck()  # no non_finite_state(): parameters() are checked
    duck.net.layers[0].params["weight"][0] = np.nan
    with pytest.raises(FloatingPointError, match="parameter 0"):
        attach(DivergenceCheck(), duck, epochs=1).on_epoch_end(0, {})


# ---------------------------------------------------------------------------------------
# EarlyStopping


@pytest.mark.parametrize(
    "patience, losses, stopped",
    [(0, [3, 2, 2.5, 1], 2), (1, [3, 2, 1.5, 2.5, 1], 3), (2, [3, 2, 2.5, 1.0, 1.5], None)],
)
def test_early_stopping_patience(patience, losses, stopped):
    model = FakeModel()
    stop = attach(EarlyStopping(patience=patience), model)
    stop.on_train_begin()
    for epoch, loss in enumerate(losses):
        stop.on_epoch_end(epoch, {"val_loss": loss})
        if model.stop_training:
            break
    assert model.stop_training == (stopped is not None)
    assert stop.stopped_epoch == (stopped or 0)


def test_early_stopping_mode_min_delta_and_restore():
    model = FakeModel()
    stop = attach(EarlyStopping("val_accuracy", patience=1, min_delta=0.05,
                                restore_best_weights=True), model)  # fmt: skip
    assert stop.mode == "max"
    stop.on_train_begin()
    for epoch, acc in enumerate([0.5, 0.7, 0.72, 0.74]):  # +0.02 each: no improvement
        model.weights["w"][:] = epoch
        stop.on_epoch_end(epoch, {"val_accuracy": acc})
    assert model.stop_training and stop.best == 0.7 and stop.best_epoch == 1
    assert_array_equal(model.weights["w"], [1, 1])  # the best epoch's weights are back


def test_early_stopping_warns_without_its_metric():
    stop = attach(EarlyStopping())
    with pytest.warns(RuntimeWarning, match="'val_loss'"):
        stop.on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="up")


def test_early_stopping_in_fit(data):
    X, y = data
    model = Sequential(Flatten(), Dense(16, 3, rng=0))
    history = model.fit(X, y, epochs=30, optimizer=SGD(0.0), verbose=0, validation_data=(X, y),
                        callbacks=[EarlyStopping(patience=2)])  # fmt: skip
    # A learning rate of 0 never improves val_loss: epoch 0, then two more.
    assert history.epoch == [0, 1, 2] and history.stopped_by_callback


# ---------------------------------------------------------------------------------------
# ModelCheckpoint, LearningRateScheduler, TerminateOnNaN, CSVLogger


def test_model_checkpoint_every_epoch_and_best_only():
    model = FakeModel()
    every = attach(ModelCheckpoint("m-{epoch:02d}-{loss:.1f}.npz"), model)
    every.on_epoch_end(0, {"loss": 1.25})
    assert model.saved == ["m-01-1.2.npz"]
    model.saved.clear()
    best = attach(ModelCheckpoint("best.npz", monitor="val_loss", save_best_only=True), model)
    for epoch, loss in enumerate([2.0, 1.0, 1.5, 0.5]):
        best.on_epoch_end(epoch, {"val_loss": loss})
    assert model.saved == ["best.npz"] * 3 and best.best == 0.5


def test_model_checkpoint_writes_a_model_file(tmp_path, data):
    X, y = data
    model = tiny_model()
    path = tmp_path / "best.npz"
    model.fit(X, y, epochs=2, verbose=0, validation_data=(X, y),
              callbacks=[ModelCheckpoint(path, save_best_only=True)])  # fmt: skip
    loaded = load(path)
    assert loaded.num_params == model.num_params


def test_learning_rate_scheduler_with_a_function(data):
    schedule = LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))
    history = tiny_model().fit(*data, epochs=3, optimizer=SGD(1.0), verbose=0,
                               callbacks=[schedule])  # fmt: skip
    assert_allclose(history.history["lr"], [0.1, 0.05, 0.1 / 3])
    halve = LearningRateScheduler(lambda epoch, lr: lr / 2)
    history = tiny_model().fit(*data, epochs=2, optimizer=SGD(1.0), verbose=0, callbacks=halve)
    assert history.history["lr"] == [0.5, 0.25]


def test_learning_rate_scheduler_wraps_a_scheduler_as_fit_takes_it(data):
    direct, wrapped = SGD(0.4), SGD(0.4)
    a = tiny_model().fit(*data, epochs=3, optimizer=direct, verbose=0,
                         callbacks=[StepLR(direct, 1, 0.5)])  # fmt: skip
    b = tiny_model().fit(*data, epochs=3, optimizer=wrapped, verbose=0,
                         callbacks=[LearningRateScheduler(StepLR(wrapped, 1, 0.5))])  # fmt: skip
    assert a.history["lr"] == b.history["lr"] == [0.4, 0.2, 0.1]
    assert direct.lr == wrapped.lr == 0.05


def test_learning_rate_scheduler_errors():
    with pytest.raises(TypeError, match="schedule must be"):
        LearningRateScheduler(0.1)
    bad = attach(LearningRateScheduler(lambda epoch: math.nan))
    with pytest.raises(ValueError, match="finite rate"):
        bad.on_epoch_begin(0)


def test_checkpoint_resume_keeps_a_wrapped_schedulers_epoch(tmp_path, data):
    path = tmp_path / "run.npz"

    def run(epochs):
        opt = Adam(1e-2)
        model = tiny_model()
        history = model.fit(*data, epochs=epochs, optimizer=opt, verbose=0, random_state=0,
                            checkpoint=path,
                            callbacks=[LearningRateScheduler(StepLR(opt, 1, 0.5))])  # fmt: skip
        return model, history

    run(2)
    resumed, history = run(4)
    path.unlink()
    reference, ref_history = run(4)
    assert history.history["lr"] == ref_history.history["lr"] == [0.01, 0.005, 0.0025, 0.00125]
    for key, value in reference.state_dict().items():
        assert_array_equal(resumed.state_dict()[key], value)


def test_terminate_on_nan(capsys):
    model = FakeModel()
    stop = attach(TerminateOnNaN(), model)
    stop.on_batch_end(0, {"loss": 1.0})
    stop.on_epoch_end(0, {"loss": 1.0, "val_loss": 2.0})
    assert not model.stop_training
    stop.on_epoch_end(1, {"loss": 1.0, "val_loss": math.inf})
    assert model.stop_training and "val_loss" in capsys.readouterr().err
    model.stop_training = False
    stop.on_batch_end(3, {"loss": math.nan})
    assert model.stop_training


def test_csv_logger(tmp_path, data):
    path = tmp_path / "log.csv"
    tiny_model().fit(*data, epochs=2, verbose=0, callbacks=[CSVLogger(path)])
    tiny_model().fit(*data, epochs=1, verbose=0, callbacks=[CSVLogger(path, append=True)])
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["epoch", "accuracy", "loss", "lr", "time"]
    assert [row[0] for row in rows[1:]] == ["0", "1", "0"]
    assert all(float(row[2]) > 0 for row in rows[1:])
    tiny_model().fit(*data, epochs=1, verbose=0, callbacks=[CSVLogger(path, separator=";")])
    assert path.read_text().splitlines()[0] == "epoch;accuracy;loss;lr;time"


# ---------------------------------------------------------------------------------------
# train_step


def test_train_step_is_one_fit_batch(backend, dtype, data):
    X, y = data[0].astype(dtype), data[1]
    fitted, stepped = tiny_model(dtype), tiny_model(dtype)
    history = fitted.fit(X, y, epochs=1, batch_size=len(X), optimizer=SGD(0.1), verbose=0,
                         shuffle=False)  # fmt: skip
    loss = stepped.train_step(X, y, optimizer=SGD(0.1))
    assert isinstance(loss, float)
    assert_allclose(loss, history.history["loss"][0], rtol=1e-6)
    for key, value in fitted.state_dict().items():
        assert_allclose(stepped.state_dict()[key], value, rtol=1e-6, atol=1e-7)
    assert stepped.optimizer.n_steps == 1
    stepped.train_step(X, y)  # the same optimizer again
    assert stepped.optimizer.n_steps == 2


def test_train_step_uses_and_keeps_the_last_loss_and_optimizer(data):
    X, y = data
    target = np.zeros((len(X), 3), np.float32)
    model = tiny_model()
    model.fit(X, target, epochs=1, loss="mse", optimizer=SGD(0.01), verbose=0)
    optimizer = model.optimizer
    model.train_step(X, target)  # mse, the fit's SGD
    assert model.optimizer is optimizer and optimizer.n_steps == 2
    weights = np.ones(len(X))
    assert model.train_step(X, target, weights) >= 0
    with pytest.raises(ValueError, match=r"y must have shape \(24, 3\)"):
        model.train_step(X, y)


def test_train_step_refuses_a_non_finite_loss_before_updating(data):
    X, y = data
    model = tiny_model()
    model.train_step(X, y, optimizer="sgd")
    before = {key: p.copy() for key, p, _ in model.named_parameters()}

    def nan_loss(out, target):
        return math.nan, np.zeros_like(out)

    with pytest.raises(FloatingPointError, match=r"the loss became nan, with learning rate"):
        model.train_step(X, np.zeros((len(X), 3)), loss=nan_loss)
    for key, param, _ in model.named_parameters():  # (the forward updated BatchNorm's stats)
        assert_array_equal(param, before[key])


def test_the_callbacks_module_is_public():
    import fastcnn
    import fastcnn.callbacks as module

    assert fastcnn.callbacks is module and "callbacks" in fastcnn.__all__
    assert fastcnn.History is module.History  # fit's History is a callback
    for name in module.__all__:
        assert getattr(module, name).__module__ == "fastcnn.callbacks"
