"""fastcnn.plotting: every figure drawn headless and checked against the data it shows."""

import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="fastcnn.plotting needs matplotlib (the plot extra)")

from matplotlib.figure import Figure  # noqa: E402
from sklearn.metrics import confusion_matrix  # noqa: E402

import fastcnn  # noqa: E402
from fastcnn import CNNClassifier, models, plotting  # noqa: E402
from fastcnn.datasets import load_digits  # noqa: E402
from fastcnn.layers import Conv2D, Dense, Flatten, ReLU  # noqa: E402
from fastcnn.model import History, Sequential  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    return X[:400], y[:400]


@pytest.fixture(scope="module")
def trained(digits):
    """digits_cnn after two epochs with validation data, and its History."""
    X, y = digits
    model = models.digits_cnn(10, 1, input_size=(8, 8), random_state=0)
    history = model.fit(
        X[:300], y[:300], epochs=2, validation_data=(X[300:], y[300:]), verbose=0,
        random_state=0,
    )  # fmt: skip
    return model, history


@pytest.fixture(scope="module")
def clf(digits):
    X, y = digits
    return CNNClassifier(max_iter=2, random_state=0).fit(X[:200], y[:200])


def image_axes(fig):
    return [ax for ax in fig.axes if ax.images]


def shown(ax) -> np.ndarray:
    return np.ma.getdata(ax.images[0].get_array())


# ---------------------------------------------------------------------------------------
# plot_filters


def test_filters_of_one_input_channel_of_a_layer():
    conv = Conv2D(3, 5, (3, 2), rng=0)  # non-square kernel
    fig = plotting.plot_filters(conv, in_channel=1)
    assert isinstance(fig, Figure)
    axes = image_axes(fig)
    assert len(axes) == 5 and len(fig.axes) == 6  # + the colorbar
    limit = np.abs(conv.weight[:, 1]).max()
    for out, ax in enumerate(axes):
        np.testing.assert_allclose(shown(ax), conv.weight[out, 1], rtol=1e-6)
        assert ax.get_title() == str(out)
        assert ax.images[0].get_clim() == pytest.approx((-limit, limit))
    title = fig.get_suptitle()
    assert title.startswith("Conv2D(3, 5, kernel_size=(3, 2)")
    assert "weight (5, 3, 3, 2), input channel 1" in title


def test_filters_mean_over_input_channels_is_the_default():
    conv = Conv2D(4, 10, 3, rng=1)
    fig = plotting.plot_filters(conv)
    axes = image_axes(fig)
    assert len(axes) == 10
    mean = conv.weight.astype(np.float64).mean(axis=1)
    limit = np.abs(mean).max()
    for out, ax in enumerate(axes):
        np.testing.assert_allclose(shown(ax), mean[out], rtol=1e-6)
        assert ax.images[0].get_clim() == pytest.approx((-limit, limit))
    # 10 panels in rows of 8: the first row full, the second two panels.
    rows = sorted({round(ax.get_position().y0, 3) for ax in axes}, reverse=True)
    assert len(rows) == 2
    assert "mean over 4 input channels" in fig.get_suptitle()


def test_filters_of_a_model_pick_its_conv_layers(trained):
    model, _ = trained
    fig = plotting.plot_filters(model)
    assert len(image_axes(fig)) == 32
    assert fig.get_suptitle().startswith("layer 0: Conv2D(1, 32, kernel_size=(3, 3)")
    second = model.layers[4]
    for layer in (4, -9):
        fig = plotting.plot_filters(model, layer=layer, in_channel=7)
        assert fig.get_suptitle().startswith("layer 4: Conv2D(32, 64")
        np.testing.assert_allclose(shown(image_axes(fig)[63]), second.weight[63, 7], rtol=1e-6)


def test_filters_all_draws_one_mosaic_of_every_kernel():
    conv = Conv2D(2, 3, (2, 3), rng=2)
    fig = plotting.plot_filters(conv, in_channel="all")
    (ax,) = image_axes(fig)
    mosaic = shown(ax)
    assert mosaic.shape == (3 * 3 - 1, 2 * 4 - 1)
    for o in range(3):
        for i in range(2):
            block = mosaic[o * 3 : o * 3 + 2, i * 4 : i * 4 + 3]
            np.testing.assert_allclose(block, conv.weight[o, i], rtol=1e-6)
    assert np.isnan(mosaic[2::3]).all() and np.isnan(mosaic[:, 3::4]).all()  # the gaps
    limit = np.abs(conv.weight).max()
    assert ax.images[0].get_clim() == pytest.approx((-limit, limit))
    assert ax.get_xlabel() == "input channel" and ax.get_ylabel() == "output channel"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]
    assert "every input channel" in fig.get_suptitle()


def test_filters_of_a_fitted_estimator(clf):
    fig = plotting.plot_filters(clf)
    np.testing.assert_allclose(
        shown(image_axes(fig)[0]), clf.model_.layers[0].weight[0, 0], rtol=1e-6
    )


def test_filters_of_zero_weights_still_get_a_symmetric_scale():
    conv = Conv2D(1, 2, 3, rng=0)
    conv.weight[...] = 0
    fig = plotting.plot_filters(conv)
    assert image_axes(fig)[0].images[0].get_clim() == (-1.0, 1.0)


def _no_conv_model():
    return Sequential([Flatten(), Dense(64, 10, rng=0)])


@pytest.mark.parametrize(
    "make, kwargs, error, message",
    [
        (lambda m: Dense(4, 2), {}, TypeError, "must be a fastcnn.layers.Conv2D"),
        (lambda m: _no_conv_model(), {}, ValueError, "no Conv2D layer (it has Flatten, Dense)"),
        (lambda m: m, {"layer": 2}, TypeError, "layer 2 of the model is ReLU(), not a Conv2D"),
        (lambda m: m, {"layer": 13}, ValueError, "layer=13 is out of range for a model of 13"),
        (lambda m: m, {"layer": "0"}, TypeError, "layer must be an int index"),
        (lambda m: m.layers[0], {"layer": 0}, ValueError, "but a Conv2D layer was given"),
        (lambda m: m, {"in_channel": 1}, ValueError, "in_channel=1 is out of range"),
        (lambda m: m, {"in_channel": -1}, ValueError, "in_channel=-1 is out of range"),
        (lambda m: m, {"in_channel": "max"}, ValueError, "'mean', 'all' or an int, got 'max'"),
        (lambda m: m, {"in_channel": 0.5}, TypeError, "'mean', 'all' or an int, got 0.5"),
        (lambda m: m, {"in_channel": True}, TypeError, "got True"),
        (lambda m: CNNClassifier(), {}, ValueError, "CNNClassifier that is not fitted yet"),
    ],
)
def test_filters_errors(trained, make, kwargs, error, message):
    model, _ = trained
    with pytest.raises(error) as info:
        plotting.plot_filters(make(model), **kwargs)
    assert message in str(info.value)


def test_filters_error_lists_the_conv_layers(trained):
    with pytest.raises(TypeError, match=r"Conv2D layers are at \[0, 4\]"):
        plotting.plot_filters(trained[0], layer=-1)


# ---------------------------------------------------------------------------------------
# plot_feature_maps


def _forward(layers, x):
    for layer in layers:
        x = layer.forward(x, training=False)
    return x


def test_feature_maps_default_to_the_end_of_the_first_conv_block(trained, digits):
    model, _ = trained
    image = digits[0][350]  # (1, 8, 8)
    fig = plotting.plot_feature_maps(model, image)
    assert isinstance(fig, Figure)
    # digits_cnn starts Conv2D, BatchNorm2D, ReLU, MaxPool2D: the ReLU (layer 2) ends it.
    assert fig.get_suptitle().startswith("after layer 2: ReLU\n")
    assert "Conv2D -> BatchNorm2D -> ReLU; output (32, 8, 8)" in fig.get_suptitle()
    axes = image_axes(fig)
    assert fig.axes[0] is axes[0] and axes[0].get_title() == "input"
    np.testing.assert_array_equal(shown(axes[0]), image[0])
    expected = _forward(model.layers[:3], image[None])[0]
    assert len(axes) == 1 + 32 and len(fig.axes) == 1 + 32 + 1  # input, maps, colorbar
    for c, ax in enumerate(axes[1:]):
        assert ax.get_title() == str(c)
        np.testing.assert_allclose(shown(ax), expected[c], rtol=1e-5, atol=1e-6)
        assert ax.images[0].get_clim() == pytest.approx((expected.min(), expected.max()))


def test_feature_maps_accept_three_image_shapes(trained, digits):
    model, _ = trained
    image = digits[0][0]
    arrays = [
        shown(image_axes(plotting.plot_feature_maps(model, x, max_channels=2))[2])
        for x in (image, image[0], image[None])
    ]
    np.testing.assert_array_equal(arrays[0], arrays[1])
    np.testing.assert_array_equal(arrays[0], arrays[2])


def test_feature_maps_after_a_chosen_layer(trained, digits):
    model, _ = trained
    image = digits[0][5]
    fig = plotting.plot_feature_maps(model, image, layer=5, max_channels=6)
    assert fig.get_suptitle().startswith("after layer 5: BatchNorm2D\n")
    assert "6 of 64 channels shown" in fig.get_suptitle()
    axes = image_axes(fig)
    assert len(axes) == 1 + 6
    expected = _forward(model.layers[:6], image[None])[0]
    assert expected.shape == (64, 4, 4)
    for c, ax in enumerate(axes[1:]):
        np.testing.assert_allclose(shown(ax), expected[c], rtol=1e-5, atol=1e-6)


def test_feature_maps_of_lenet5_end_at_its_first_tanh():
    model = models.lenet5(random_state=0)
    image = np.random.default_rng(0).random((28, 28), dtype=np.float32)
    fig = plotting.plot_feature_maps(model, image)
    assert fig.get_suptitle().startswith("after layer 1: Tanh\n")
    assert len(image_axes(fig)) == 1 + 6


def test_feature_maps_show_a_colour_input_in_colour():
    model = Sequential([Conv2D(3, 4, 3, rng=0), ReLU()])
    image = np.random.default_rng(1).integers(0, 256, (3, 6, 5)).astype(np.uint8)
    fig = plotting.plot_feature_maps(model, image)
    rgb = shown(image_axes(fig)[0])
    assert rgb.shape == (6, 5, 3) and rgb.min() == 0 and rgb.max() == 1
    np.testing.assert_allclose(rgb * (image.max() - image.min()) + image.min(),
                               np.moveaxis(image, 0, -1))  # fmt: skip
    assert image_axes(fig)[0].get_title() == "input (RGB)"


def test_feature_maps_of_a_fitted_estimator(clf, digits):
    fig = plotting.plot_feature_maps(clf, digits[0][0], max_channels=1)
    assert fig.get_suptitle().startswith("after layer 2: ReLU")


@pytest.mark.parametrize(
    "image, kwargs, error, message",
    [
        (np.zeros((2, 1, 8, 8)), {}, ValueError, "one image of shape (C, H, W), (1, C, H, W)"),
        (np.zeros(8), {}, ValueError, "got shape (8,)"),
        (np.zeros((3, 8, 8)), {}, ValueError, "image of shape (3, 8, 8) does not fit the model"),
        (np.zeros((1, 2, 2)), {"layer": 7}, ValueError, "does not fit the model: layer 7:"),
        (np.array([["a"]]), {}, TypeError, "image must hold real numbers"),
        (np.full((8, 8), np.nan), {}, ValueError, "image contains NaN or infinity"),
        (np.zeros((8, 8)), {"layer": 8}, ValueError, "layer 8 (Flatten()) outputs samples of"),
        (np.zeros((8, 8)), {"layer": -1}, ValueError, "shape (10,), not feature maps"),
        (np.zeros((8, 8)), {"layer": 20}, ValueError, "out of range"),
        (np.zeros((8, 8)), {"layer": 1.0}, TypeError, "layer must be an int index"),
        (np.zeros((8, 8)), {"max_channels": 0}, ValueError, "max_channels must be >= 1"),
        (np.zeros((8, 8)), {"max_channels": "all"}, TypeError, "max_channels must be an int"),
    ],
)
def test_feature_maps_errors(trained, image, kwargs, error, message):
    with pytest.raises(error) as info:
        plotting.plot_feature_maps(trained[0], image, **kwargs)
    assert message in str(info.value)


def test_feature_maps_model_errors():
    with pytest.raises(TypeError, match="model must be a fastcnn.Sequential or a fitted"):
        plotting.plot_feature_maps(Conv2D(1, 2, 3), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="has no Conv2D layer"):
        plotting.plot_feature_maps(_no_conv_model(), np.zeros((1, 64)))
    with pytest.raises(ValueError, match="not fitted yet"):
        plotting.plot_feature_maps(CNNClassifier(), np.zeros((8, 8)))


# ---------------------------------------------------------------------------------------
# plot_history


def test_history_of_a_fit_with_validation(trained):
    _, history = trained
    fig = plotting.plot_history(history)
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    for ax, name in zip(fig.axes, ("loss", "accuracy"), strict=True):
        assert ax.get_xlabel() == "epoch"
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert set(lines) == {"train", "validation"}
        np.testing.assert_array_equal(lines["train"].get_xdata(), [1, 2])
        np.testing.assert_allclose(lines["train"].get_ydata(), history.history[name])
        np.testing.assert_allclose(lines["validation"].get_ydata(), history.history["val_" + name])
    assert fig.get_suptitle() == "learning curves, 2 epochs"


def test_history_from_a_dict_with_some_curves():
    curves = {"loss": [2.0, 1.0, 0.5], "time": [1, 1, 1], "val_loss": [2.5, 1.5, 1.0]}
    fig = plotting.plot_history(curves, validation_label="test")
    (ax,) = fig.axes
    assert ax.get_title() == "loss"
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"train", "test"}
    np.testing.assert_array_equal(lines["test"].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(lines["test"].get_ydata(), [2.5, 1.5, 1.0])

    (ax,) = plotting.plot_history({"val_accuracy": [0.5]}).axes
    assert ax.get_title() == "accuracy" and ax.get_lines()[0].get_label() == "validation"


def test_history_of_a_fitted_estimator(clf, digits):
    (ax,) = plotting.plot_history(clf).axes
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), clf.loss_curve_)
    X, y = digits
    stopping = CNNClassifier(max_iter=2, early_stopping=True, random_state=0).fit(X, y)
    loss, accuracy = plotting.plot_history(stopping).axes
    (line,) = accuracy.get_lines()
    assert line.get_label() == "validation"
    np.testing.assert_allclose(line.get_ydata(), stopping.validation_scores_)


@pytest.mark.parametrize(
    "history, error, message",
    [
        (History(["loss", "accuracy"]), ValueError, "history has no epochs"),
        ({"loss": [], "lr": [0.1]}, ValueError, "history has no epochs"),
        ({"loss": [1.0, 0.5], "accuracy": [0.5]}, ValueError, "different lengths"),
        ({"loss": [[1.0, 0.5]]}, ValueError, "history['loss'] must be 1-D"),
        ({"loss": ["high", "low"]}, TypeError, "history['loss'] must be a list of numbers"),
        ([1.0, 0.5], TypeError, "history must be a fastcnn History, a dict"),
        (CNNClassifier(), ValueError, "not fitted yet"),
    ],
)
def test_history_errors(history, error, message):
    with pytest.raises(error) as info:
        plotting.plot_history(history)
    assert message in str(info.value)


def test_history_epochs_must_match_its_curves():
    history = History(["loss"])
    history.history["loss"] = [1.0, 0.5]
    history.epoch = [0]
    with pytest.raises(ValueError, match=r"history has 1 epoch\(s\) but curves of length 2"):
        plotting.plot_history(history)


# ---------------------------------------------------------------------------------------
# plot_confusion


class _Fixed:
    """A 'model' whose predictions are given."""

    def __init__(self, predictions):
        self.predictions = np.asarray(predictions)

    def predict(self, X):
        return self.predictions


def test_confusion_counts_equal_sklearns(trained, digits):
    model, _ = trained
    X, y = digits[0][300:], digits[1][300:]
    fig = plotting.plot_confusion(model, X, y)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    y_pred = model.predict(X)
    expected = confusion_matrix(y, y_pred)
    np.testing.assert_array_equal(shown(ax), expected)
    assert [t.get_text() for t in ax.texts] == [str(v) for v in expected.ravel()]
    correct = int((y_pred == y).sum())
    assert ax.get_title() == f"accuracy {correct / len(y):.4f} ({correct}/{len(y)})"
    assert ax.get_xlabel() == "predicted label" and ax.get_ylabel() == "true label"
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(c) for c in np.unique(y)]


def test_confusion_normalized_with_chosen_labels():
    y = np.array(["cat", "dog", "dog", "bird", "cat", "dog"])
    model = _Fixed(["cat", "dog", "cat", "bird", "bird", "dog"])
    labels = ["dog", "cat", "bird"]
    fig = plotting.plot_confusion(model, None, y, normalize="true", labels=labels)
    ax = fig.axes[0]
    expected = confusion_matrix(y, model.predictions, labels=labels, normalize="true")
    np.testing.assert_allclose(shown(ax), expected)
    np.testing.assert_allclose(shown(ax).sum(axis=1), 1)
    assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for v in expected.ravel()]
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    assert ax.get_title() == "accuracy 0.6667 (4/6), rows sum to 1"


def test_confusion_of_a_fitted_estimator(clf, digits):
    X, y = digits[0][200:260], digits[1][200:260]
    ax = plotting.plot_confusion(clf, X, y).axes[0]
    np.testing.assert_array_equal(shown(ax), confusion_matrix(y, clf.predict(X)))


@pytest.mark.parametrize(
    "model, y, kwargs, error, message",
    [
        (object(), [0, 1], {}, TypeError, "model must have a predict method, got object"),
        (_Fixed([0, 1]), [0, 1], {"normalize": "rows"}, ValueError, "normalize must be None"),
        (_Fixed([0, 1]), [[0, 1]], {}, ValueError, "y must be 1-D (n_samples,), got shape (1, 2)"),
        (_Fixed([0, 1, 1]), [0, 1], {}, ValueError, "returned shape (3,), but y has shape (2,)"),
        (_Fixed([0, 1]), [0, 1], {"labels": [1, 1]}, ValueError, "must not repeat a label"),
        (_Fixed([0, 1]), [0, 1], {"labels": []}, ValueError, "labels must be a non-empty"),
    ],
)
def test_confusion_errors(model, y, kwargs, error, message):
    with pytest.raises(error) as info:
        plotting.plot_confusion(model, None, y, **kwargs)
    assert message in str(info.value)


# ---------------------------------------------------------------------------------------
# Shared behaviour


def _draw_each(trained, digits):
    model, history = trained
    X, y = digits
    return {
        "plot_filters": lambda **kw: plotting.plot_filters(model, **kw),
        "plot_feature_maps": lambda **kw: plotting.plot_feature_maps(model, X[0], **kw),
        "plot_history": lambda **kw: plotting.plot_history(history, **kw),
        "plot_confusion": lambda **kw: plotting.plot_confusion(model, X[:50], y[:50], **kw),
    }


def test_every_function_saves_a_png_and_nothing_else(trained, digits, tmp_path):
    draw = _draw_each(trained, digits)
    assert sorted(draw) == sorted(plotting.__all__)
    for name, plot in draw.items():
        path = tmp_path / f"{name}.png"
        assert isinstance(plot(path=path), Figure)
        assert path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.png" for n in draw)
    draw["plot_history"](path=str(tmp_path / "small.png"), dpi=50)
    assert (tmp_path / "small.png").stat().st_size < (tmp_path / "plot_history.png").stat().st_size


def test_without_matplotlib_every_function_names_the_extra(trained, digits, monkeypatch):
    draw = _draw_each(trained, digits)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    for plot in draw.values():
        with pytest.raises(ImportError, match=r"pip install 'fastcnn\[plot\]'"):
            plot()


def test_import_is_lazy_and_drawing_never_touches_pyplot():
    code = (
        "import sys, fastcnn, fastcnn.plotting as p\n"
        "assert fastcnn.plotting is p\n"
        "assert 'matplotlib' not in sys.modules, 'import fastcnn.plotting imported matplotlib'\n"
        "assert 'sklearn' not in sys.modules\n"
        "from fastcnn.layers import Conv2D\n"
        "p.plot_filters(Conv2D(1, 2, 3))\n"
        "assert 'matplotlib' in sys.modules and 'matplotlib.pyplot' not in sys.modules\n"
    )
    # The test runs in a scratch directory: point the child at the fastcnn under test.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MPLBACKEND", None)
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_fastcnn_plotting_attribute():
    assert fastcnn.plotting is plotting


def test_the_benchmark_chart_left_the_package():
    # It is drawn by benchmarks/plot.py, beside the suite whose results it reads.
    assert not hasattr(plotting, "plot_benchmark")
