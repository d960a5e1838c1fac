"""Sequential: whole-model gradients, training on digits, inference, save/load, interrupts."""

import copy
import io
import json
import os
import signal
import zipfile

import numpy as np
import pytest
from conftest import numerical_grad
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn.model as model_module
from fastcnn.callbacks import _ProgressBar
from fastcnn.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    MaxPool2D,
    ReLU,
    Tanh,
)
from fastcnn.losses import softmax, softmax_cross_entropy
from fastcnn.model import FORMAT_VERSION, History, Sequential, load
from fastcnn.optim import SGD, Adam, StepLR


def small_model(dtype=np.float32, p=0.3):
    return Sequential(
        Conv2D(1, 3, 3, padding=1, dtype=dtype, rng=0),
        BatchNorm2D(3, dtype=dtype),
        ReLU(),
        MaxPool2D(2),
        Dropout(p),
        Flatten(),
        Dense(27, 4, dtype=dtype, rng=1),
    )


def float64_twin(model: Sequential) -> Sequential:
    config = model.get_config()
    for spec in config["layers"]:
        if "dtype" in spec["config"]:
            spec["config"]["dtype"] = "float64"
    twin = Sequential.from_config(config)
    twin.load_state_dict({k: v.astype(np.float64) for k, v in model.state_dict().items()})
    return twin


def forward_seeded(model, x, training):
    for layer in model.layers:  # the same dropout mask on every call
        if isinstance(layer, Dropout):
            layer.rng = np.random.default_rng(11)
    return model.forward(x, training)


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    X = (data.images / 16.0).reshape(-1, 1, 8, 8)
    return X, data.target


def digits_model(dtype=np.float32, seed=0):
    return Sequential(
        Conv2D(1, 8, 3, padding=1, dtype=dtype, rng=seed),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(8 * 4 * 4, 10, dtype=dtype, rng=seed + 1),
    )


# ---------------------------------------------------------------------------------------
# Gradients of a whole model


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_whole_model_gradients_match_numerical(backend, dtype, training, rng):
    model = small_model(dtype)
    bn = model[1]
    bn.gamma[...] = rng.uniform(0.5, 1.5, 3)
    bn.beta[...] = rng.standard_normal(3)
    bn.running_mean[...] = rng.standard_normal(3) * 0.1
    bn.running_var[...] = rng.uniform(0.5, 2, 3)
    model[-1].bias[...] = rng.standard_normal(4)
    x = rng.standard_normal((4, 1, 6, 6)).astype(dtype)
    y = rng.integers(0, 4, 4)

    twin = float64_twin(model)  # before any training-mode forward moves the statistics
    logits = forward_seeded(model, x, training)
    _, grad = softmax_cross_entropy(logits, y)
    grad_x = model.backward(grad)
    analytic = {"x": grad_x, **{name: g.copy() for name, _, g in model.named_parameters()}}

    x64 = x.astype(np.float64)

    def loss():
        return softmax_cross_entropy(forward_seeded(twin, x64, training), y)[0]

    numeric = {"x": numerical_grad(loss, x64)}
    numeric.update({name: numerical_grad(loss, p) for name, p, _ in twin.named_parameters()})
    assert set(analytic) == {"x", "0.weight", "0.bias", "1.gamma", "1.beta", "6.weight", "6.bias"}
    rtol, atol = (1e-6, 1e-8) if dtype == np.float64 else (2e-3, 2e-4)
    for name, value in analytic.items():
        assert value.dtype == dtype
        scale = max(1.0, float(np.abs(numeric[name]).max()))
        assert_allclose(value, numeric[name], rtol=rtol, atol=atol * scale, err_msg=name)


def test_backward_without_input_gradient(rng):
    model = small_model()
    x = rng.standard_normal((4, 1, 6, 6)).astype(np.float32)
    _, grad = softmax_cross_entropy(model.forward(x), np.arange(4))
    assert model.backward(grad, retain_activations=True).shape == x.shape
    weight_grad = model[0].grads["weight"].copy()
    assert model.backward(grad, input_grad=False) is None
    assert_array_equal(model[0].grads["weight"], weight_grad)
    assert model[0].needs_input_grad  # restored, so the layer works on its own afterwards


def test_backward_releases_the_activations_unless_retained(rng):
    """As PyTorch frees a graph after backward(): every layer lets go of what its forward
    saved, so the next step's outputs reuse the freed memory instead of a second set
    allocated while the first is still held."""
    from fastcnn import _buffers

    model = Sequential(Conv2D(1, 4, 3, padding=1, rng=0), ReLU(), MaxPool2D(2), Flatten(),
                       Dense(4 * 8 * 8, 3, rng=1))  # fmt: skip
    x = rng.standard_normal((64, 1, 16, 16)).astype(np.float32)  # 256 KB activations
    y = np.arange(64) % 3
    _, grad = softmax_cross_entropy(model.forward(x, training=True), y)
    model.backward(grad, retain_activations=True)
    assert all(layer._cache for layer in model if not isinstance(layer, Flatten))
    weight_grad = model[0].grads["weight"].copy()
    model.backward(grad)  # the retained activations give the same gradients again
    assert_array_equal(model[0].grads["weight"], weight_grad)
    assert not any(layer._cache for layer in model)
    with pytest.raises(RuntimeError, match="needs the activations of a forward.*retain"):
        model.backward(grad)

    _, grad = softmax_cross_entropy(model.forward(x, training=True), y)
    model.backward(grad)
    after_one_step = _buffers.kept_bytes()  # the freed activations, kept for reuse
    if _buffers._memory is not None:
        assert after_one_step >= 64 * 4 * 16 * 16 * 4
    for _ in range(2):
        _, grad = softmax_cross_entropy(model.forward(x, training=True), y)
        model.backward(grad)
    assert _buffers.kept_bytes() == after_one_step  # with retain_activations=True: more


# ---------------------------------------------------------------------------------------
# Training


def test_fit_on_digits_reaches_accuracy(backend, dtype, digits):
    X, y = digits
    X_train, y_train, X_test, y_test = X[:500], y[:500], X[1000:1300], y[1000:1300]
    model = digits_model(dtype)
    history = model.fit(
        X_train, y_train, epochs=8, batch_size=32, optimizer=Adam(1e-2),
        validation_data=(X_test, y_test), random_state=0, verbose=0,
    )  # fmt: skip
    losses = history.history["loss"]
    assert len(losses) == 8 and history.epoch == list(range(8))
    assert losses[-1] < 0.25 * losses[0]
    assert history.history["accuracy"][-1] > 0.9
    scores = model.evaluate(X_test, y_test)
    assert scores["accuracy"] >= 0.9, scores
    assert scores["accuracy"] == pytest.approx(history.history["val_accuracy"][-1])
    assert scores["loss"] == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    assert all(t > 0 for t in history.history["time"])
    for p, g in model.parameters():
        assert p.dtype == dtype and g.dtype == dtype


def test_fit_is_reproducible_with_random_state(digits):
    X, y = digits[0][:200], digits[1][:200]
    weights = []
    for _ in range(2):
        model = Sequential(
            Conv2D(1, 4, 3, rng=0), Tanh(), AvgPool2D(2), Flatten(), Dropout(0.5),
            Dense(36, 10, rng=1),
        )  # fmt: skip
        model.fit(X, y, epochs=2, validation_split=0.2, random_state=3, verbose=0)
        weights.append(model.state_dict())
    for name in weights[0]:
        assert_array_equal(weights[0][name], weights[1][name])


def test_fit_converts_uint8_once_and_keeps_float32(digits, monkeypatch):
    X, y = digits
    X8 = (X[:128] * 255).astype(np.uint8)
    model = digits_model()
    seen = []
    forward = Conv2D.forward
    monkeypatch.setattr(Conv2D, "forward", lambda self, x, training=False: (
        seen.append(x.dtype), forward(self, x, training))[1])  # fmt: skip
    model.fit(X8, y[:128], epochs=1, verbose=0)
    assert set(seen) == {np.dtype(np.float32)}
    assert_array_equal(model.predict(X8), model.predict(X8.astype(np.float32)))


def test_fit_keeps_the_optimizer_across_calls(digits):
    X, y = digits[0][:64], digits[1][:64]
    model = digits_model()
    opt = SGD(lr=0.05, momentum=0.9)
    model.fit(X, y, epochs=1, batch_size=16, optimizer=opt, verbose=0)
    assert model.optimizer is opt and opt.n_steps == 4
    model.fit(X, y, epochs=1, batch_size=16, verbose=0)  # None: continue with the same one
    assert opt.n_steps == 8  # state kept: same parameter arrays
    assert isinstance(digits_model().fit(X, y, epochs=0, verbose=0), History)


def test_callbacks_stop_and_schedule(digits):
    X, y = digits[0][:64], digits[1][:64]
    model = digits_model()
    opt = SGD(lr=0.1)
    seen = []

    class StopAtTwo:
        def on_epoch_end(self, epoch, logs):
            seen.append((epoch, sorted(logs)))
            return epoch == 1

    history = model.fit(
        X, y, epochs=5, optimizer=opt, callbacks=[StepLR(opt, 1, 0.5), StopAtTwo()], verbose=0
    )
    assert seen == [
        (0, ["accuracy", "loss", "lr", "time"]),
        (1, ["accuracy", "loss", "lr", "time"]),
    ]
    assert history.stopped_by_callback and history.epoch == [0, 1]
    assert history.history["lr"] == [0.1, 0.05]
    assert opt.lr == pytest.approx(0.025)


def test_validation_split_and_keys(digits):
    X, y = digits[0][:100], digits[1][:100]
    history = digits_model().fit(X, y, epochs=1, validation_split=0.25, verbose=0)
    assert set(history.history) == {
        "loss", "accuracy", "val_loss", "val_accuracy", "time", "lr",
    }  # fmt: skip
    assert 0 <= history.history["val_accuracy"][0] <= 1


def test_fit_with_mse_loss(rng):
    X = rng.standard_normal((64, 3)).astype(np.float32)
    target = X @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    model = Sequential(Dense(3, 1, rng=0))
    history = model.fit(X, target, epochs=30, batch_size=16, loss="mse", optimizer=SGD(0.1),
                        verbose=0)  # fmt: skip
    assert "accuracy" not in history.history
    assert history.history["loss"][-1] < 1e-3
    assert model.evaluate(X, target)["loss"] < 1e-3


def test_divergence_raises_with_epoch_and_learning_rate(rng):
    X = rng.standard_normal((64, 20)).astype(np.float32) * 10
    y = rng.integers(0, 3, 64)
    model = Sequential(Dense(20, 50, rng=0), ReLU(), Dense(50, 3, rng=0))
    with pytest.raises(FloatingPointError, match=r"epoch 1/5.*learning rate 100000000.0"):
        model.fit(X, y, epochs=5, batch_size=8, optimizer=SGD(lr=1e8), verbose=0)


def _blow_up_batchnorm_statistics(dtype):
    """A batch whose variance overflows the dtype: training mode normalizes it to finite
    outputs (finite loss and weights) while the running variance becomes inf."""
    rng = np.random.default_rng(0)
    big = {np.dtype(np.float32): 1e20, np.dtype(np.float64): 1e200}[np.dtype(dtype)]
    X = (rng.standard_normal((32, 2, 3, 3)) * big).astype(dtype)
    assert np.isfinite(X).all()
    model = Sequential(BatchNorm2D(2, dtype=dtype), Flatten(), Dense(18, 2, dtype=dtype, rng=0))
    return model, X, rng.integers(0, 2, 32)


def test_divergence_of_buffers_raises(backend, dtype):
    # The documented check covers all state (parameters and buffers), not just weights.
    model, X, y = _blow_up_batchnorm_statistics(dtype)
    with (
        np.errstate(all="ignore"),
        pytest.raises(
            FloatingPointError,
            match=r"buffers became NaN or infinite in epoch 1/2, with learning rate 0.1 "
            r"\(first: '0.running_var'\)",
        ),
    ):
        model.fit(X, y, epochs=2, batch_size=8, optimizer=SGD(0.1), verbose=0)
    assert model.history.epoch == []


def test_divergence_of_batchnorm_statistics_in_digits_cnn_raises(digits):
    # Issue 20's reproducer, on the default backend (the test above covers both; this
    # run takes 12 s on numpy's). float32 only: in float64 the same run stays finite.
    from fastcnn.models import digits_cnn

    model = digits_cnn(random_state=10)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="running_var"):
        model.fit(digits[0] * 100, digits[1], epochs=3, optimizer=SGD(1000.0), verbose=0,
                  random_state=0)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Ctrl-C


def test_keyboard_interrupt_in_callback_returns_history(digits, capsys):
    X, y = digits[0][:64], digits[1][:64]
    model = digits_model()

    class CtrlC:
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                raise KeyboardInterrupt

    history = model.fit(X, y, epochs=5, callbacks=[CtrlC()], verbose=0)
    assert history.interrupted and history.epoch == [0, 1]
    assert "Training interrupted" in capsys.readouterr().err
    assert model.predict(X).shape == (64,)  # still usable, and trainable
    assert model.fit(X, y, epochs=1, verbose=0).epoch == [0]


def test_keyboard_interrupt_mid_batch_keeps_model_usable(digits, monkeypatch, capsys):
    X, y = digits[0][:64], digits[1][:64]
    model = digits_model()
    calls = []
    relu = model[1]
    original = relu.forward

    def flaky(x, training=False):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(x, training)

    monkeypatch.setattr(relu, "forward", flaky)
    history = model.fit(X, y, epochs=3, batch_size=16, verbose=1)
    err = capsys.readouterr().err
    assert history.interrupted and history.epoch == []
    assert "Training interrupted at epoch 1/3, batch 3/4" in err
    assert all(np.all(np.isfinite(p)) for p, _ in model.parameters())
    monkeypatch.undo()
    assert model.evaluate(X, y)["accuracy"] >= 0


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="fit only takes over SIGINT from Python's default handler",
)
def test_sigint_stops_after_the_current_batch(digits, capsys):
    X, y = digits[0][:64], digits[1][:64]
    model = digits_model()

    class CountingSGD(SGD):
        def step(self, params=None):
            super().step(params)
            if self.n_steps == 3:  # a real Ctrl-C arriving during batch 3
                os.kill(os.getpid(), signal.SIGINT)

    opt = CountingSGD(0.1)
    history = model.fit(X, y, epochs=2, batch_size=8, optimizer=opt, verbose=0)
    assert history.interrupted and opt.n_steps == 3  # batch 3 completed, no batch 4
    assert "stopping after the current batch" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


# ---------------------------------------------------------------------------------------
# Progress output


def test_progress_line_per_epoch_on_stderr(digits, capsys):
    X, y = digits[0][:64], digits[1][:64]
    digits_model().fit(X, y, epochs=2, validation_split=0.25, verbose=1)
    err = capsys.readouterr().err
    lines = [line.strip("\r") for line in err.split("\n") if line]
    assert len(lines) == 2
    assert lines[0].startswith("Epoch 1/2 [====================] 2/2")
    for word in ("loss", "accuracy", "val_loss", "val_accuracy", "img/s"):
        assert word in lines[1]
    digits_model().fit(X, y, epochs=1, verbose=0)
    assert capsys.readouterr().err == ""


def test_live_progress_bar_redraws_in_place():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    bar = _ProgressBar(0, 3, 10, verbose=1, stream=stream)
    bar.update(5, 160, {"loss": 1.5, "acc": 0.5})
    assert stream.getvalue().startswith("\rEpoch 1/3 [==========>.........] 5/10  loss 1.5000")
    assert "img/s  ETA" in stream.getvalue() and "\n" not in stream.getvalue()
    bar.update(6, 192, {"loss": 1.4})  # throttled: drawn at most every 0.1 s
    assert stream.getvalue().count("\r") == 1
    bar.finish(320, 1.0, {"loss": 1.0, "time": 1.0, "lr": 0.1})
    assert stream.getvalue().endswith("\n")
    assert stream.getvalue().rstrip().endswith("10/10  loss 1.0000  320 img/s  1.0s")
    assert "lr" not in stream.getvalue()


# ---------------------------------------------------------------------------------------
# Inference, summary and introspection


def test_predict_is_batched_and_consistent(rng):
    model = small_model(p=0.5)
    X = rng.standard_normal((23, 1, 6, 6)).astype(np.float32)
    logits = model.forward(X)  # eval mode: dropout off, running statistics
    proba = model.predict_proba(X, batch_size=5)
    assert proba.shape == (23, 4) and proba.dtype == np.float32
    assert_allclose(proba, softmax(logits, axis=1), rtol=1e-5, atol=1e-7)
    assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    assert_array_equal(model.predict(X, batch_size=7), logits.argmax(axis=1))
    assert_allclose(model.decision_function(X.tolist(), batch_size=100), logits, rtol=1e-5)


def test_summary_lists_layers_shapes_and_params():
    model = small_model()
    text = model.summary((1, 6, 6))
    assert "Conv2D(1, 3, kernel_size=(3, 3)" in text
    assert "(3, 6, 6)" in text and "(3, 3, 3)" in text and "(27,)" in text and "(4,)" in text
    total = 3 * 9 + 3 + 6 + 27 * 4 + 4
    assert model.num_params == total
    assert text.endswith(f"Total params: {total:,}")
    assert len(text.splitlines()) == 4 + len(model) + 2
    with pytest.raises(ValueError, match=r"layer 0: Conv2D.*expected input of shape \(1, H, W\)"):
        model.summary((3, 6, 6))


def test_parameters_are_live_arrays():
    model = small_model()
    pairs = model.parameters()
    assert len(pairs) == 6
    assert pairs[0][0] is model[0].weight and pairs[0][1] is model[0].grads["weight"]
    assert [n for n, _, _ in model.named_parameters()][:2] == ["0.weight", "0.bias"]
    assert "1.running_var" in model.state_dict()
    assert repr(model).startswith("Sequential(\n  (0): Conv2D(1, 3")
    assert isinstance(model[2], ReLU) and len(model[1:3]) == 2


def test_deepcopy_after_fit_drops_activations(digits):
    model = digits_model()
    X, y = digits[0][:64], digits[1][:64]
    model.fit(X, y, epochs=1, verbose=0)
    clone = copy.deepcopy(model)
    assert_array_equal(clone.predict_proba(X), model.predict_proba(X))
    assert all(layer._cache == {} for layer in copy.deepcopy(model).layers)


# ---------------------------------------------------------------------------------------
# Errors at the boundary


def test_model_construction_errors():
    with pytest.raises(TypeError, match="layer 1 must be a fastcnn Layer, got str"):
        Sequential(ReLU(), "relu")
    with pytest.raises(ValueError, match="has dtype float64 but the model's other layers"):
        Sequential(Dense(2, 2), Dense(2, 2, dtype=np.float64))
    relu = ReLU()
    with pytest.raises(ValueError, match="already in the model"):
        Sequential(relu, relu)


class _ScanCounter(list):
    """A layer list that fails once iterated over more than `limit` elements in all."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.seen = limit, 0

    def __iter__(self):
        for item in super().__iter__():
            self.seen += 1
            if self.seen > self.limit:
                raise AssertionError(f"more than {self.limit} layers visited: a scan per add")
            yield item


class _CountingReLU(ReLU):
    """A parameter-free layer that counts (and caps) the reads of its dtype."""

    reads = [0, 0]  # [count, limit]

    @property
    def dtype(self):
        counter = _CountingReLU.reads
        counter[0] += 1
        if counter[0] > counter[1]:
            raise AssertionError(f"more than {counter[1]} dtype reads: a scan per add")
        return None


N_LAYERS = 20_000


def test_add_is_linear_in_the_layer_count(monkeypatch):
    # Not a timer: a scan of every layer per add visits ~n**2 / 2 = 2e8 layers here.
    monkeypatch.setattr(_CountingReLU, "reads", [0, 3 * N_LAYERS])
    model = Sequential()
    model.layers = _ScanCounter(limit=N_LAYERS)
    for _ in range(N_LAYERS):
        model.add(_CountingReLU())
    assert len(model) == N_LAYERS
    relu = model[N_LAYERS // 2]
    with pytest.raises(ValueError, match=f"layer {N_LAYERS} .* already in the model"):
        model.add(relu)  # still refused, after one scan that finds it


def test_building_from_a_list_is_linear(monkeypatch):
    layers = [_CountingReLU() for _ in range(N_LAYERS)]
    monkeypatch.setattr(_CountingReLU, "reads", [0, 3 * N_LAYERS])
    model = Sequential(layers)
    assert len(model) == N_LAYERS and model.dtype == np.float32


def test_layer_checks_follow_edits_of_the_layer_list():
    dense, relu = Dense(2, 2), ReLU()
    model = Sequential(dense, relu)
    model.layers.pop()  # an edit that bypasses add()
    model.add(relu)  # allowed again: it is no longer in the model
    model.layers[1] = ReLU()  # replaced in place: same length, other last layer
    model.add(relu)
    with pytest.raises(ValueError, match="already in the model"):
        model.add(dense)
    model.layers[:] = []
    model.add(Dense(2, 2, dtype=np.float64))  # the old float32 layer is gone
    assert model.dtype == np.float64


def test_pickled_model_still_refuses_a_layer_twice():
    model = copy.deepcopy(Sequential(Dense(2, 2), ReLU()))
    with pytest.raises(ValueError, match="already in the model"):
        model.add(model[1])
    with pytest.raises(ValueError, match="has dtype float64"):
        model.add(Dense(2, 2, dtype=np.float64))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"X": np.zeros((4, 3, 8, 8))},
            ValueError,
            r"X of shape \(4, 3, 8, 8\) does not fit "
            r"the model: layer 0: Conv2D",
        ),  # fmt: skip
        ({"X": np.zeros((4, 64))}, ValueError, "layer 0: Conv2D"),
        ({"X": np.full((4, 1, 8, 8), np.nan)}, ValueError, "X contains NaN or infinity"),
        ({"X": np.zeros(4)}, ValueError, r"batch of samples of shape \(n_samples, ...\)"),
        ({"X": np.zeros((0, 1, 8, 8)), "y": np.zeros(0, int)}, ValueError, "X has 0 samples"),
        ({"X": np.array([["a"]])}, TypeError, "X must hold real numbers"),
        ({"y": [0, 1, 2, 10]}, ValueError, r"class indices in \[0, 10\) for a model with 10"),
        ({"y": ["a", "b", "c", "d"]}, TypeError, "LabelEncoder"),
        ({"y": [0.5, 1, 2, 3]}, ValueError, "integer class indices"),
        ({"y": [[0], [1], [2], [3]]}, ValueError, r"use y.ravel\(\)"),
        ({"y": [0, 1]}, ValueError, r"y must have shape \(4,\)"),
        ({"epochs": -1}, ValueError, "epochs must be >= 0"),
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an int"),
        ({"verbose": 3}, ValueError, "verbose must be 0, 1 or 2"),
        ({"optimizer": "rmsprop"}, ValueError, r"optimizer must be one of \['adam', 'sgd'\]"),
        ({"optimizer": 42}, TypeError, "optimizer must be a fastcnn.optim optimizer"),
        ({"loss": "hinge"}, ValueError, "loss must be one of"),
        ({"validation_split": 1.0}, ValueError, r"validation_split must be in \[0, 1\)"),
        ({"validation_split": 0.5, "validation_data": ([0], [0])}, ValueError, "not both"),
        ({"callbacks": [object()]}, TypeError, r"callbacks\[0\].*on_epoch_end"),
        (
            {"validation_data": (np.zeros((2, 1, 8, 8)), [0, 11])},
            ValueError,
            r"y_val must hold class indices",
        ),  # fmt: skip
    ],
)
def test_fit_errors(kwargs, error, match):
    args = {"X": np.zeros((4, 1, 8, 8)), "y": [0, 1, 2, 3], "verbose": 0, **kwargs}
    with pytest.raises(error, match=match):
        digits_model().fit(args.pop("X"), args.pop("y"), **args)


def test_cross_entropy_needs_vector_outputs():
    model = Sequential(Conv2D(1, 2, 3))
    with pytest.raises(ValueError, match=r"logits per sample, but it outputs \(2, 6, 6\)"):
        model.fit(np.zeros((2, 1, 8, 8)), [0, 1], verbose=0)
    with pytest.raises(ValueError, match="no layers"):
        Sequential().fit(np.zeros((2, 3)), [0, 1], verbose=0)


# ---------------------------------------------------------------------------------------
# Save and load


def test_save_load_round_trip(tmp_path, dtype, rng, digits):
    model = small_model(dtype)
    X = rng.standard_normal((16, 1, 6, 6))
    model.fit(X, rng.integers(0, 4, 16), epochs=2, batch_size=4, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = load(path)
    assert repr(loaded) == repr(model) and loaded.dtype == dtype
    assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert_array_equal(loaded[1].running_var, model[1].running_var)
    with np.load(path, allow_pickle=False) as archive:
        assert archive["__fastcnn_format__"] == FORMAT_VERSION
        assert archive["__architecture__"].dtype.kind == "U"  # a string, not an object
        assert all(archive[key].dtype != object for key in archive.files)
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left behind


def _rewrite(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _contents(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    small_model().save(path)
    return path


def test_load_refuses_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"good.npz' is not a fastcnn model file: .*npz"):
        load(saved)


def test_load_refuses_corrupt_entry(saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("0.weight.npy")
    start = info.header_offset + 30 + len(info.filename) + 128  # inside the array data
    data[start : start + 16] = b"\xff" * 16
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"entry '0.weight' is truncated or corrupt"):
        load(saved)


def test_load_refuses_foreign_files(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, weights=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz' is not a fastcnn model file: it has no"):
        load(other)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="holds a single array"):
        load(single)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt' is not a fastcnn model file"):
        load(text)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.npz")


def test_load_refuses_pickled_objects(saved):
    arrays = _contents(saved)
    arrays["0.weight"] = np.array([object()] * 2, dtype=object)
    _rewrite(saved, arrays)
    with pytest.raises(ValueError, match="entry '0.weight' holds pickled Python objects"):
        load(saved)
    arrays = _contents_without_pickles(arrays)
    arrays["__architecture__"] = np.array([{"layers": []}], dtype=object)
    _rewrite(saved, arrays)
    with pytest.raises(ValueError, match="'__architecture__' holds pickled Python objects"):
        load(saved)
    # A plain pickle file is not even opened as data.
    import pickle

    saved.write_bytes(pickle.dumps({"weights": [1, 2]}))
    with pytest.raises(ValueError, match="not a fastcnn model file.*pickled"):
        load(saved)


def _contents_without_pickles(arrays):
    fresh = dict(arrays)
    fresh["0.weight"] = np.zeros((3, 1, 3, 3), np.float32)
    return fresh


def _edit_architecture(path, edit):
    arrays = _contents(path)
    config = json.loads(str(arrays["__architecture__"]))
    edit(config)
    arrays["__architecture__"] = np.array(json.dumps(config))
    _rewrite(path, arrays)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (
            lambda c: c["layers"][2].update({"class": "os.system"}),
            "unknown layer class 'os.system'",
        ),
        (
            lambda c: c["layers"][0]["config"].update({"out_channels": 5}),
            r"array '0.weight' must have shape \(5, 1, 3, 3\) and dtype float32",
        ),  # fmt: skip
        (
            lambda c: c["layers"][0]["config"].update({"dtype": "float64"}),
            r"layer 1 .*has dtype float32 but the model's other layers have dtype float64",
        ),  # fmt: skip
        (lambda c: c["layers"][0]["config"].update({"evil": 1}), "unexpected keyword"),
        (lambda c: c["layers"].pop(), r"unexpected \['6.bias', '6.weight'\]"),
        (lambda c: c.update({"kind": "keras.Model"}), "not a fastcnn.Sequential architecture"),
    ],
)
def test_load_validates_architecture_against_arrays(saved, edit, match):
    _edit_architecture(saved, edit)
    with pytest.raises(ValueError, match=match) as info:
        load(saved)
    assert "good.npz" in str(info.value)


def test_load_validates_arrays_and_version(saved):
    arrays = _contents(saved)
    _rewrite(saved, {k: v for k, v in arrays.items() if k != "1.running_mean"})
    with pytest.raises(ValueError, match=r"missing \['1.running_mean'\]"):
        load(saved)
    _rewrite(saved, {**arrays, "0.weight": arrays["0.weight"].astype(np.float64)})
    with pytest.raises(ValueError, match="'0.weight' must have shape .* and dtype float32"):
        load(saved)
    _rewrite(saved, {**arrays, "__fastcnn_format__": np.array(99)})
    with pytest.raises(ValueError, match="format 99; this fastcnn reads format 1 .*newer"):
        load(saved)
    _rewrite(saved, {**arrays, "__architecture__": np.array("{not json")})
    with pytest.raises(ValueError, match="invalid architecture"):
        load(saved)


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch, rng):
    path = tmp_path / "model.npz"
    first = small_model()
    first.save(path)
    before = path.read_bytes()

    def failing_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")
        raise OSError("No space left on device")

    second = small_model()
    second[0].weight[...] = 0
    monkeypatch.setattr(model_module.np, "savez", failing_savez)
    with pytest.raises(OSError, match="No space left"):
        second.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]  # the temporary file was removed
    X = rng.standard_normal((3, 1, 6, 6))
    assert_array_equal(load(path).predict_proba(X), first.predict_proba(X))


def test_save_refuses_unregistered_layers(tmp_path):
    class Custom(Layer):
        pass

    with pytest.raises(ValueError, match="not a registered layer class.*register_layer"):
        Sequential(Custom()).save(tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_same_seed_gives_same_model_on_both_backends(digits):
    import fastcnn

    if "cython" not in fastcnn.available_backends():
        pytest.skip(f"compiled extension not importable: {fastcnn.backend_import_error()}")
    X, y = digits[0][:256], digits[1][:256]
    states = {}
    for name in ("numpy", "cython"):
        with fastcnn.use_backend(name):
            model = digits_model(np.float64)
            model.fit(X, y, epochs=2, optimizer=Adam(1e-2), random_state=0, verbose=0)
            states[name] = model.state_dict()
    for key, value in states["numpy"].items():
        assert_allclose(states["cython"][key], value, rtol=1e-8, atol=1e-10, err_msg=key)
