"""Bad user data at the model boundary: clear errors that name the problem.

``test_model.py::test_fit_errors`` covers the arguments of ``fit``; here the *data* of
``fit``, ``predict``, ``predict_proba``, ``decision_function`` and ``evaluate``: images of
the wrong shape, label counts that do not match, a single class, NaN and infinity, empty
and degenerate arrays, and values that only overflow once converted to float32.
"""

import numpy as np
import pytest

from fastcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from fastcnn.model import Sequential


def cnn(dtype=np.float32):
    return Sequential(
        Conv2D(1, 4, 3, padding=1, dtype=dtype, rng=0),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
        Dense(4 * 4 * 4, 3, dtype=dtype, rng=1),
    )


GOOD_X = np.zeros((6, 1, 8, 8), np.float32)
GOOD_Y = np.array([0, 1, 2, 0, 1, 2])
INFERENCE = ["predict", "predict_proba", "decision_function", "evaluate", "fit"]


def call(method, X, y=GOOD_Y):
    model = cnn()
    if method == "fit":
        return model.fit(X, y, epochs=1, verbose=0)
    if method == "evaluate":
        return model.evaluate(X, y)
    return getattr(model, method)(X)


# ---------------------------------------------------------------------------------------
# Wrong image shapes


@pytest.mark.parametrize("method", INFERENCE)
@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((6, 8, 8), r"X of shape \(6, 8, 8\) does not fit the model: layer 0: Conv2D\(1, 4.*"
                    r"expected input of shape \(1, H, W\), got \(8, 8\)"),
        ((6, 8, 8, 1), r"X of shape \(6, 8, 8, 1\) .*expected input of shape \(1, H, W\), "
                       r"got \(8, 8, 1\)"),
        ((6, 3, 8, 8), r"expected input of shape \(1, H, W\), got \(3, 8, 8\)"),
        ((6, 1, 10, 10), r"layer 4: Dense\(in_features=64.*expected input of shape \(64,\), "
                         r"got \(100,\)"),
        ((6, 1, 1, 1), r"layer 2: MaxPool2D.*too small"),
        ((6, 1, 0, 0), r"layer 0: Conv2D.*too small"),
        ((6, 64), r"X of shape \(6, 64\) .*layer 0: Conv2D.*got \(64,\)"),
    ],
)  # fmt: skip
def test_wrong_image_shape_names_the_layer_and_both_shapes(method, shape, match):
    with pytest.raises(ValueError, match=match):
        call(method, np.zeros(shape, np.float32))


def test_dense_model_given_images_suggests_flatten():
    model = Sequential(Dense(64, 3, rng=0))
    with pytest.raises(ValueError, match=r"add a Flatten\(\) layer before Dense"):
        model.predict(np.zeros((2, 1, 8, 8)))


# ---------------------------------------------------------------------------------------
# Labels


@pytest.mark.parametrize("method", ["fit", "evaluate"])
@pytest.mark.parametrize("n_labels", [0, 1, 5, 7, 60])
def test_label_count_mismatch(method, n_labels):
    with pytest.raises(ValueError, match=rf"y must have shape \(6,\) to match the samples, "
                                         rf"got \({n_labels},\)"):  # fmt: skip
        call(method, GOOD_X, np.zeros(n_labels, int))


def test_validation_label_count_mismatch():
    with pytest.raises(ValueError, match=r"y_val must have shape \(4,\)"):
        cnn().fit(GOOD_X, GOOD_Y, verbose=0, validation_data=(GOOD_X[:4], GOOD_Y[:3]))


@pytest.mark.parametrize(
    ("y", "error", "match"),
    [
        ([0, 1, 2, 0, 1, 3], ValueError, r"class indices in \[0, 3\) for a model with 3 "
                                         r"outputs, got values in \[0, 3\]"),
        ([0, 1, -1, 0, 1, 2], ValueError, r"got values in \[-1, 2\]"),
        ([0, 1, np.nan, 0, 1, 2], ValueError, "integer class indices"),
        ([0, 1, np.inf, 0, 1, 2], ValueError, "integer class indices"),
        ([0.0, 1.0, 2.5, 0, 1, 2], ValueError, "integer class indices"),
        (["a", "b", "c", "a", "b", "c"], TypeError, "LabelEncoder"),
        ([1 + 0j] * 6, TypeError, "integer class indices"),
        (np.zeros((6, 3)), ValueError, r"y must have shape \(6,\)"),
    ],
)  # fmt: skip
def test_bad_labels(y, error, match):
    with pytest.raises(error, match=match):
        cnn().fit(GOOD_X, np.array(y), epochs=1, verbose=0)


def test_single_class_is_allowed_in_sequential_but_refused_by_the_classifier():
    """A raw Sequential trains on whatever batch it gets (incremental training sees
    one-class batches legitimately); the scikit-learn classifier, which owns the label
    set, refuses to learn from one class."""
    X = np.random.default_rng(0).standard_normal((6, 1, 8, 8)).astype(np.float32)
    history = cnn().fit(X, np.full(6, 2), epochs=2, verbose=0)
    assert len(history.epoch) == 2 and np.isfinite(history.history["loss"]).all()
    pytest.importorskip("sklearn", reason="the classifier needs scikit-learn")
    from fastcnn.estimator import CNNClassifier

    with pytest.raises(ValueError, match="class"):
        CNNClassifier(max_iter=1).fit(X.reshape(6, -1), np.full(6, "cat"))


# ---------------------------------------------------------------------------------------
# NaN and infinity in the data


@pytest.mark.parametrize("method", INFERENCE)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_images_are_refused(method, value):
    X = GOOD_X.copy()
    X[3, 0, 4, 5] = value
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(in the model dtype "
                                         r"float32\)"):  # fmt: skip
        call(method, X)


def test_values_that_overflow_float32_are_refused():
    X = np.zeros((6, 1, 8, 8))  # float64: finite here
    X[0, 0, 0, 0] = 1e300
    with pytest.raises(ValueError, match=r"X contains NaN or infinity \(in the model dtype "
                                         r"float32\)"):  # fmt: skip
        cnn().fit(X, GOOD_Y, verbose=0)
    cnn(np.float64).fit(X, GOOD_Y, epochs=1, verbose=0, optimizer=None)  # fine in float64


def test_non_finite_validation_data_is_refused():
    X_val = GOOD_X[:2].copy()
    X_val[1] = np.nan
    with pytest.raises(ValueError, match="X_val contains NaN or infinity"):
        cnn().fit(GOOD_X, GOOD_Y, verbose=0, validation_data=(X_val, GOOD_Y[:2]))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_regression_targets_are_refused(value):
    model = Sequential(Dense(3, 1, rng=0))
    target = np.ones((6, 1))
    target[2] = value
    with pytest.raises(ValueError, match=r"y contains NaN or infinity"):
        model.fit(np.ones((6, 3)), target, loss="mse", verbose=0)
    with pytest.raises(ValueError, match=r"y contains NaN or infinity"):
        model.evaluate(np.ones((6, 3)), target, loss="mse")


def test_regression_targets_of_the_wrong_shape():
    model = Sequential(Dense(3, 2, rng=0))
    with pytest.raises(ValueError, match=r"y must have shape \(6, 2\) \(the model's output\), "
                                         r"got \(6,\)"):  # fmt: skip
        model.fit(np.ones((6, 3)), np.ones(6), loss="mse", verbose=0)


# ---------------------------------------------------------------------------------------
# Empty and degenerate arrays


@pytest.mark.parametrize("method", INFERENCE)
def test_empty_batches_are_refused(method):
    with pytest.raises(ValueError, match=r"X has 0 samples, shape \(0, 1, 8, 8\)"):
        call(method, np.zeros((0, 1, 8, 8), np.float32), np.zeros(0, int))


@pytest.mark.parametrize("method", INFERENCE)
@pytest.mark.parametrize(
    ("X", "error", "match"),
    [
        (np.float32(1.0), ValueError, r"batch of samples of shape \(n_samples, ...\), got "
                                      r"shape \(\)"),
        (np.zeros(6, np.float32), ValueError, r"got shape \(6,\)"),
        ([], ValueError, r"got shape \(0,\)"),
        (np.array([[None]]), TypeError, "X must hold real numbers, got dtype object"),
        (np.zeros((6, 1, 8, 8), complex), TypeError, "got dtype complex128"),
        (np.zeros((6, 1, 8, 8), "U1"), TypeError, "got dtype <U1"),
    ],
)  # fmt: skip
def test_degenerate_inputs_are_refused(method, X, error, match):
    with pytest.raises(error, match=match):
        call(method, X)


def test_ragged_nested_lists_are_a_value_error():
    with pytest.raises(ValueError, match="inhomogeneous"):
        cnn().predict([[[[0.0] * 8] * 8], [[[0.0] * 7] * 8]])


def test_integer_and_boolean_images_are_converted_once():
    X = np.random.default_rng(0).integers(0, 256, (6, 1, 8, 8), dtype=np.uint8)
    model = cnn()
    expected = model.predict_proba(X.astype(np.float32))
    np.testing.assert_array_equal(model.predict_proba(X), expected)
    assert model.predict(X.astype(bool)).shape == (6,)
