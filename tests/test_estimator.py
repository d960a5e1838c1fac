"""CNNClassifier: scikit-learn's estimator checks and the ways users combine estimators."""

import os
import pickle
import signal
import threading

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import (
    check_methods_sample_order_invariance,
    check_methods_subset_invariance,
    parametrize_with_checks,
)

import fastcnn
from fastcnn import CNNClassifier
from fastcnn.datasets import load_digits
from fastcnn.layers import Conv2D, Dense, Flatten, ReLU
from fastcnn.optim import Adam

# Checks that cannot pass for the default (float32) estimator, with the reason.
EXPECTED_FAILED_CHECKS = {
    "check_methods_sample_order_invariance": (
        "float32 convolutions and matrix products round differently depending on a "
        "sample's position in the batch (BLAS tiles, per-thread blocks), which moves "
        "probabilities by ~1e-7 while the check allows 1e-9. Predicted labels do not "
        "change, and with dtype='float64' the check passes (tested below)."
    ),
}


# Like scikit-learn's SGD and MLP estimators: the loss is weighted, but the default
# network's BatchNorm2D normalizes with the batch's mean and variance, in which a
# repeated sample counts twice and a weighted one once (a zero-weight one still counts),
# and Dropout draws a mask per sample. The weighted loss itself is equivalent to repeats:
# tests/test_losses.py::test_integer_weights_equal_repeated_samples.
SAMPLE_WEIGHT_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "sample_weight is not equivalent to removing/repeating samples in BatchNorm's "
        "batch statistics and Dropout's masks"
    ),
}


def _expected_failed_checks(estimator):
    if estimator.dtype == "float32":
        return {**EXPECTED_FAILED_CHECKS, **SAMPLE_WEIGHT_CHECKS}
    return SAMPLE_WEIGHT_CHECKS


@parametrize_with_checks(
    [CNNClassifier(random_state=0)], expected_failed_checks=_expected_failed_checks
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "check", [check_methods_sample_order_invariance, check_methods_subset_invariance]
)
def test_float64_predictions_do_not_depend_on_the_batch(check):
    check("CNNClassifier", CNNClassifier(dtype="float64", max_iter=3, random_state=0))


# ---------------------------------------------------------------------------------------
# Data


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits()
    return train_test_split(X, y, test_size=0.2, stratify=y, random_state=42)


@pytest.fixture(scope="module")
def small(digits):
    """600 training images and 200 test images: enough for a few epochs to mean something."""
    X_train, X_test, y_train, y_test = digits
    return X_train[:600], X_test[:200], y_train[:600], y_test[:200]


def test_digits_accuracy(digits):
    X_train, X_test, y_train, y_test = digits
    clf = CNNClassifier(max_iter=5, random_state=0).fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.95
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.t_ == 5 * len(y_train)
    assert clf.image_shape_ == (1, 8, 8) and clf.n_features_in_ == 64
    np.testing.assert_array_equal(clf.classes_, np.arange(10))
    proba = clf.predict_proba(X_test)
    assert proba.shape == (len(y_test), 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(X_test))
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X_test)), proba, rtol=1e-4)


@pytest.mark.parametrize("layout", ["flat", "flat_image_shape", "3d", "4d"])
def test_input_layouts_give_the_same_model(small, layout):
    X_train, X_test, y_train, _ = small
    reshape = {
        "flat": lambda X: X.reshape(len(X), 64),
        "flat_image_shape": lambda X: X.reshape(len(X), 64),
        "3d": lambda X: X[:, 0],
        "4d": lambda X: X,
    }[layout]
    image_shape = (8, 8) if layout == "flat_image_shape" else None
    clf = CNNClassifier(max_iter=1, random_state=0, image_shape=image_shape)
    clf.fit(reshape(X_train), y_train)
    reference = CNNClassifier(max_iter=1, random_state=0).fit(X_train, y_train)
    assert clf.image_shape_ == (1, 8, 8) and clf.n_features_in_ == 64
    np.testing.assert_array_equal(clf.predict(reshape(X_test)), reference.predict(X_test))
    # Flat rows and images are interchangeable at predict time.
    np.testing.assert_array_equal(clf.predict(X_test), clf.predict(X_test.reshape(-1, 64)))


def test_input_shape_errors(small):
    X_train, X_test, y_train, _ = small
    clf = CNNClassifier(max_iter=1, random_state=0).fit(X_train, y_train)
    with pytest.raises(ValueError, match=r"images of shape \(1, 7, 7\).*fitted on .*\(1, 8, 8\)"):
        clf.predict(X_test[:, :, :7, :7])
    with pytest.raises(ValueError, match="X has 49 features, but CNNClassifier is expecting 64"):
        clf.predict(X_test[:, :, :7, :7].reshape(-1, 49))
    with pytest.raises(ValueError, match="5 dimensions"):
        clf.predict(X_test[:, None])
    with pytest.raises(ValueError, match=r"image_shape=\(3, 3\) holds 9 values.*64 features"):
        CNNClassifier(image_shape=(3, 3)).fit(X_train.reshape(-1, 64), y_train)


def test_flat_tabular_input_becomes_a_strip_or_a_square():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    y = (X[:, 0] > 0).astype(int)
    assert CNNClassifier(max_iter=1).fit(X, y).image_shape_ == (1, 1, 6)
    X9 = rng.normal(size=(40, 9))
    assert CNNClassifier(max_iter=1).fit(X9, y).image_shape_ == (1, 3, 3)
    assert CNNClassifier(max_iter=1, image_shape=(1, 9)).fit(X9, y).image_shape_ == (1, 1, 9)
    clf = CNNClassifier(max_iter=1, image_shape=(3, 1, 3)).fit(X9, y)
    assert clf.image_shape_ == (3, 1, 3)


@pytest.mark.parametrize("n_features", [1, 2, 3])
def test_tiny_feature_maps_never_get_a_batch_of_one(n_features):
    # 65 = 64 + 1: a last batch of one sample would reach a BatchNorm with 1x1 maps.
    X = np.random.default_rng(0).normal(size=(65, n_features))
    y = (X[:, 0] > 0).astype(int)
    clf = CNNClassifier(max_iter=2, random_state=0).fit(X, y)
    assert clf.n_iter_ == 2


# ---------------------------------------------------------------------------------------
# Labels


@pytest.mark.parametrize(
    "labels",
    [
        np.array(["zero", "one", "two"]),
        np.array(["zero", "one", "two"], dtype=object),
        np.array([-5, 3, 100]),
        np.array([1.0, 2.0, 4.0]),
        np.array([True, False, True])[:2],
    ],
    ids=["str", "object", "noncontiguous-int", "float", "bool"],
)
def test_any_label_type(small, labels):
    X_train, X_test, y_train, y_test = small
    n = len(labels)
    keep, keep_test = y_train < n, y_test < n
    clf = CNNClassifier(max_iter=5, random_state=0)
    clf.fit(X_train[keep], labels[y_train[keep]])
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    pred = clf.predict(X_test[keep_test])
    assert pred.dtype == clf.classes_.dtype and set(pred) <= set(labels)
    assert clf.score(X_test[keep_test], labels[y_test[keep_test]]) > 0.9


def test_one_class_is_an_error(small):
    X_train, _, _, _ = small
    with pytest.raises(ValueError, match="at least 2 classes.*got 1 class"):
        CNNClassifier().fit(X_train[:10], np.full(10, "a"))


# ---------------------------------------------------------------------------------------
# partial_fit, warm_start, early stopping


def test_partial_fit_with_classes(small):
    X_train, X_test, y_train, y_test = small
    names = np.array(list("abcdefghij"))
    clf = CNNClassifier(random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X_train[:100], names[y_train[:100]])
    # The first batch lacks some classes: `classes` announces them all.
    first = y_train < 5
    clf.partial_fit(X_train[first], names[y_train[first]], classes=names)
    np.testing.assert_array_equal(clf.classes_, names)
    assert clf.n_iter_ == 1
    for _ in range(4):
        clf.partial_fit(X_train, names[y_train])
    assert clf.n_iter_ == 5 and len(clf.loss_curve_) == 5
    assert clf.score(X_test, names[y_test]) > 0.85
    with pytest.raises(ValueError, match="labels not seen"):
        clf.partial_fit(X_train[:5], np.array(["a", "b", "z", "a", "b"]))
    with pytest.raises(ValueError, match="X has 63 features"):
        clf.partial_fit(X_train.reshape(-1, 64)[:, :63], names[y_train])


def test_warm_start_continues(small):
    X_train, _, y_train, _ = small
    clf = CNNClassifier(max_iter=2, warm_start=True, random_state=0).fit(X_train, y_train)
    weights = clf.model_.state_dict()
    clf.fit(X_train, y_train)
    assert clf.n_iter_ == 4 and len(clf.loss_curve_) == 4
    cold = CNNClassifier(max_iter=2, random_state=0).fit(X_train, y_train)
    for name, value in cold.model_.state_dict().items():
        np.testing.assert_array_equal(value, weights[name])  # the first fit was a cold one
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X_train, y_train + 1)
    # Without warm_start every fit starts over.
    cold.fit(X_train, y_train)
    assert cold.n_iter_ == 2


def test_early_stopping(small):
    X_train, _, y_train, _ = small
    clf = CNNClassifier(
        max_iter=30, early_stopping=True, n_iter_no_change=2, tol=0.5, random_state=0
    ).fit(X_train, y_train)
    # tol=0.5: only the first epoch improves (on -inf); then n_iter_no_change more.
    assert clf.n_iter_ == 3
    assert len(clf.validation_scores_) == 3
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    plain = CNNClassifier(max_iter=30, n_iter_no_change=3, tol=10.0).fit(X_train, y_train)
    assert plain.n_iter_ == 4 and plain.validation_scores_ is None


# ---------------------------------------------------------------------------------------
# Parameters and architectures


def test_clone_and_get_params_round_trip():
    clf = CNNClassifier("lenet5", max_iter=3, learning_rate_init=1e-3, image_shape=(28, 28))
    params = clf.get_params()
    assert params["architecture"] == "lenet5" and params["max_iter"] == 3
    twin = CNNClassifier(**params)
    assert twin.get_params() == params
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == params
    assert clf.set_params(max_iter=7) is clf and clf.max_iter == 7


def test_clone_of_a_fitted_estimator_is_unfitted(small):
    X_train, _, y_train, _ = small
    clf = CNNClassifier(max_iter=1, random_state=0).fit(X_train, y_train)
    assert not hasattr(clone(clf), "model_")


@pytest.mark.parametrize(
    "params, match",
    [
        ({"max_iter": 0}, "max_iter must be an int >= 1"),
        ({"batch_size": 2.5}, "batch_size must be an int"),
        ({"learning_rate_init": -1.0}, "learning_rate_init must be a float"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"architecture": "resnet"}, "architecture must be one of"),
        ({"architecture": 42}, "architecture must be one of"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"image_shape": (8, -8)}, "image_shape must be"),
        ({"dtype": "float16"}, "dtype must be one of"),
        ({"backend": "torch"}, "backend must be None or one of"),
        ({"verbose": 5}, "verbose must be 0, 1 or 2"),
    ],
)
def test_invalid_parameters_fail_in_fit(small, params, match):
    X_train, _, y_train, _ = small
    clf = CNNClassifier(**params)  # never in __init__
    with pytest.raises(ValueError, match=match):
        clf.fit(X_train[:20], y_train[:20])


def _tiny_layers(input_shape, n_classes):
    c, h, w = input_shape
    return [Conv2D(c, 4, 3, padding=1), ReLU(), Flatten(), Dense(4 * h * w, n_classes)]


def test_custom_architectures(small):
    X_train, X_test, y_train, y_test = small
    layers = _tiny_layers((1, 8, 8), 10)
    before = [layer.weight.copy() for layer in layers if hasattr(layer, "weight")]
    results = []
    for arch in (layers, fastcnn.Sequential(layers), _tiny_layers):
        clf = CNNClassifier(arch, max_iter=6, learning_rate_init=0.01, random_state=0)
        clf.fit(X_train, y_train)
        assert clf.score(X_test, y_test) > 0.8
        results.append(clf.predict_proba(X_test))
    # The user's layers are copied, not trained, and re-initialized from random_state.
    after = [layer.weight for layer in layers if hasattr(layer, "weight")]
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    with pytest.raises(ValueError, match="must output 3 logits"):
        CNNClassifier(layers).fit(X_train, y_train % 3)
    with pytest.raises(ValueError, match="dtype"):
        CNNClassifier(layers, dtype="float64").fit(X_train, y_train)


def test_lenet5_architecture_on_28x28_images(small):
    X_train, X_test, y_train, y_test = small
    pad = ((0, 0), (0, 0), (10, 10), (10, 10))
    clf = CNNClassifier("lenet5", max_iter=2, random_state=0)
    clf.fit(np.pad(X_train, pad), y_train)
    assert clf.model_.num_params == 61_706
    assert clf.score(np.pad(X_test, pad), y_test) > 0.5
    with pytest.raises(ValueError, match="at least 16x16"):
        CNNClassifier("lenet5").fit(X_train, y_train)


def test_float64(small):
    X_train, X_test, y_train, y_test = small
    clf = CNNClassifier(max_iter=2, dtype="float64", random_state=0).fit(X_train, y_train)
    assert clf.model_.dtype == np.float64
    assert clf.predict_proba(X_test).dtype == np.float64


# ---------------------------------------------------------------------------------------
# Composition: pickling, pipelines, model selection


def test_pickle_round_trip(small):
    X_train, X_test, y_train, _ = small
    clf = CNNClassifier(max_iter=1, random_state=0).fit(X_train, y_train)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X_test), clf.predict_proba(X_test))
    restored.partial_fit(X_train, y_train)  # the optimizer state came along
    assert restored.n_iter_ == 2


def test_pipeline(small):
    X_train, X_test, y_train, y_test = small
    # Raw 0..16 pixel values as flat rows, scaled inside the pipeline.
    pipe = make_pipeline(
        FunctionTransformer(lambda X: X / 16.0),
        CNNClassifier(max_iter=3, image_shape=(8, 8), random_state=0),
    )
    pipe.fit(X_train.reshape(-1, 64) * 16, y_train)
    assert pipe.score(X_test.reshape(-1, 64) * 16, y_test) > 0.9


def test_cross_val_score(small):
    X_train, _, y_train, _ = small
    scores = cross_val_score(CNNClassifier(max_iter=2, random_state=0), X_train, y_train, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.6


def test_grid_search_in_parallel(small):
    X_train, X_test, y_train, y_test = small
    search = GridSearchCV(
        CNNClassifier(max_iter=2, random_state=0),
        {"learning_rate_init": [1e-3, 3e-3]},
        cv=2,
        n_jobs=2,
    )
    search.fit(X_train, y_train)
    assert search.best_params_["learning_rate_init"] in (1e-3, 3e-3)
    assert search.score(X_test, y_test) > 0.8


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def n_threads(request):
    fastcnn.set_num_threads(request.param)
    yield request.param
    fastcnn.set_num_threads(None)


def test_same_seed_same_predictions_on_both_backends(digits, n_threads):
    if "cython" not in fastcnn.available_backends():
        pytest.skip("compiled backend not available")
    X_train, X_test, y_train, y_test = digits
    X_train, y_train = X_train[:600], y_train[:600]  # keeps the numpy-backend fit short
    fits = {
        name: CNNClassifier(max_iter=3, random_state=0, backend=name).fit(X_train, y_train)
        for name in ("cython", "numpy")
    }
    pred = {name: clf.predict(X_test) for name, clf in fits.items()}
    proba = {name: clf.predict_proba(X_test) for name, clf in fits.items()}
    # float32 rounding differs between the backends (summation order, which also depends
    # on the thread count) and training amplifies it (Adam rescales tiny gradients), so
    # the probabilities drift apart by up to a few percent; the labels agree except at
    # near-ties, and so do the accuracies.
    differ = pred["cython"] != pred["numpy"]
    assert differ.mean() <= 0.005
    top2 = np.sort(proba["numpy"][differ], axis=1)[:, -2:]
    assert np.all(top2[:, 1] - top2[:, 0] < 0.1)
    accuracies = [np.mean(p == y_test) for p in pred.values()]
    assert abs(accuracies[0] - accuracies[1]) <= 0.005
    # The mean loss of the first epoch, while the drift is small, agrees closely.
    assert fits["cython"].loss_curve_[0] == pytest.approx(fits["numpy"].loss_curve_[0], 1e-3)


def test_same_seed_same_float64_model_on_both_backends(small):
    if "cython" not in fastcnn.available_backends():
        pytest.skip("compiled backend not available")
    X_train, X_test, y_train, _ = small
    proba = [
        CNNClassifier(max_iter=2, dtype="float64", random_state=0, backend=name)
        .fit(X_train, y_train)
        .predict_proba(X_test)
        for name in ("cython", "numpy")
    ]
    np.testing.assert_allclose(proba[0], proba[1], rtol=1e-7, atol=1e-9)


@pytest.mark.skipif(
    signal.getsignal(signal.SIGINT) is not signal.default_int_handler,
    reason="fit only takes over SIGINT from Python's default handler",
)
def test_ctrl_c_leaves_a_usable_estimator_and_stops_a_grid_search(small, monkeypatch):
    """A real SIGINT during fit: the estimator keeps the network trained so far and the
    interrupt reaches the caller, so GridSearchCV does not score a half-trained model and
    carry on (scikit-learn's MLP and Keras behave so)."""
    X, _, y, _ = small
    original = Adam.step

    def step(self, params=None):
        original(self, params)
        if self.n_steps == 3:  # a Ctrl-C arriving during batch 3
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Adam, "step", step)
    clf = CNNClassifier(max_iter=5, batch_size=16, random_state=0)
    with pytest.raises(KeyboardInterrupt, match="interrupted after 0 epoch"):
        clf.fit(X, y)
    assert clf.predict(X[:7]).shape == (7,)  # usable as it is
    search = GridSearchCV(CNNClassifier(max_iter=3, batch_size=16), {"alpha": [0.0, 1e-4]}, cv=2)
    with pytest.raises(KeyboardInterrupt):
        search.fit(X, y)
    assert not hasattr(search, "cv_results_")
    monkeypatch.undo()
    assert clf.fit(X, y).n_iter_ == 5  # and trainable again


@pytest.mark.parametrize("default", ["cython", "numpy"])
def test_the_backend_parameter_applies_only_to_the_fitting_thread(small, default, monkeypatch):
    # CNNClassifier(backend=...) once switched the whole process while it fit: every other
    # thread ran on that backend meanwhile (and could be left on it).
    if "cython" not in fastcnn.available_backends():
        pytest.skip("compiled backend not available")
    from fastcnn import _backend, estimator

    other = "numpy" if default == "cython" else "cython"
    inside, checked = threading.Event(), threading.Event()
    seen = {}
    on_epoch_end = estimator._TrainingMonitor.on_epoch_end

    def pause_in_fit(self, epoch, logs):
        seen.setdefault("fit", fastcnn.get_backend())
        inside.set()
        assert checked.wait(30)
        return on_epoch_end(self, epoch, logs)

    monkeypatch.setattr(estimator._TrainingMonitor, "on_epoch_end", pause_in_fit)
    X_train, _, y_train, _ = small
    clf = CNNClassifier(max_iter=1, random_state=0, backend=other)
    previous = fastcnn.get_backend()
    fastcnn.set_backend(default)
    try:
        fitter = threading.Thread(target=clf.fit, args=(X_train[:64], y_train[:64]))
        fitter.start()
        assert inside.wait(60)
        seen["other thread"] = fastcnn.get_backend()
        seen["other thread runs compiled ops"] = _backend.current() is _backend._compiled
        checked.set()
        fitter.join(60)
        seen["after"] = fastcnn.get_backend()
    finally:
        checked.set()
        fastcnn.set_backend(previous)
    assert seen == {
        "fit": other,
        "other thread": default,
        "other thread runs compiled ops": default == "cython",
        "after": default,
    }
    assert clf.n_iter_ == 1


# ---------------------------------------------------------------------------------------
# Conventions Sequential shares with the estimator


@pytest.mark.parametrize("name, cls", [("adam", "Adam"), ("sgd", "SGD")])
def test_sequential_fit_takes_the_estimators_optimizer_names(small, name, cls):
    X_train, _, y_train, _ = small
    model = fastcnn.models.digits_cnn(10, 1, input_size=(8, 8), random_state=0)
    model.fit(X_train[:64], y_train[:64], epochs=1, optimizer=name, verbose=0)
    assert type(model.optimizer).__name__ == cls and model.optimizer.n_steps == 2
    with pytest.raises(ValueError, match=r"optimizer must be one of \['adam', 'sgd'\]"):
        model.fit(X_train[:64], y_train[:64], optimizer="rmsprop", verbose=0)


def test_one_image_without_its_batch_axis_is_explained(small):
    X_train, X_test, y_train, _ = small
    model = fastcnn.models.digits_cnn(10, 1, input_size=(8, 8), random_state=0)
    with pytest.raises(ValueError, match=r"one sample of shape \(1, 8, 8\).*X\[None\]"):
        model.predict(X_test[0])
    assert model.predict(X_test[0][None]).shape == (1,)
    # For the estimator, a single-channel (1, 8, 8) is also a batch of one (n, H, W)
    # image, which it always accepted; with more channels the shape is unambiguous.
    rgb_train, rgb_test = (np.repeat(X[:, :, :, :, None], 3, axis=4) for X in (X_train, X_test))
    for data_format, to_format in [
        ("channels_first", lambda X: X[:, 0].transpose(0, 3, 1, 2)),
        ("channels_last", lambda X: X[:, 0]),
    ]:
        clf = CNNClassifier(max_iter=1, random_state=0, data_format=data_format)
        clf.fit(to_format(rgb_train[:100]), y_train[:100])
        one = to_format(rgb_test)[0]
        with pytest.raises(ValueError, match=r"one image of shape .*X\[None\]"):
            clf.predict(one)
        assert clf.predict(one[None]).shape == (1,)


# ---------------------------------------------------------------------------------------
# Input conventions: data_format, rescale, sample and class weights


def _rgb(X):
    """Three different channels from grey digits, (n, 3, 8, 8)."""
    return np.concatenate([X, X[:, :, ::-1], X.transpose(0, 1, 3, 2)], axis=1)


@pytest.mark.parametrize("to_rgb", [False, True], ids=["grey", "rgb"])
def test_both_data_formats_give_the_same_model(small, to_rgb):
    X_train, X_test, y_train, _ = small
    if to_rgb:
        X_train, X_test = _rgb(X_train), _rgb(X_test)
    last = {name: X.transpose(0, 2, 3, 1) for name, X in [("train", X_train), ("test", X_test)]}
    first = CNNClassifier(max_iter=2, random_state=0).fit(X_train, y_train)
    second = CNNClassifier(max_iter=2, random_state=0, data_format="channels_last")
    second.fit(last["train"], y_train)
    assert second.image_shape_ == first.image_shape_ == X_train.shape[1:]
    np.testing.assert_array_equal(second.predict_proba(last["test"]), first.predict_proba(X_test))
    for (a, _), (b, _) in zip(first.model_.parameters(), second.model_.parameters(), strict=True):
        np.testing.assert_array_equal(a, b)
    # Flat rows in channels-last order, with image_shape given as (H, W, C).
    flat = CNNClassifier(
        max_iter=2, random_state=0, data_format="channels_last", image_shape=last["test"].shape[1:]
    ).fit(last["train"].reshape(len(X_train), -1), y_train)
    np.testing.assert_array_equal(
        flat.predict_proba(last["test"].reshape(len(X_test), -1)), first.predict_proba(X_test)
    )


def test_channels_last_shape_warns_with_channels_first(small, recwarn):
    X_train, _, y_train, _ = small
    X, y = X_train[:40], y_train[:40]
    with pytest.warns(fastcnn.FastCNNWarning, match=r"\(40, 8, 8, 1\).*data_format='channels_l"):
        CNNClassifier(max_iter=1).fit(X.transpose(0, 2, 3, 1), y)
    with pytest.warns(fastcnn.FastCNNWarning, match="8 channels of 8x3 images"):
        CNNClassifier(max_iter=1).fit(_rgb(X).transpose(0, 2, 3, 1), y)
    recwarn.clear()
    for X_ok, data_format in [
        (X, "channels_first"),  # (n, 1, 8, 8)
        (_rgb(X), "channels_first"),  # (n, 3, 8, 8)
        (X[:, 0], "channels_first"),  # (n, 8, 8)
        (X.reshape(40, 64), "channels_first"),  # flat
        (np.zeros((40, 16, 4, 4), np.float32), "channels_first"),  # 16 feature maps
        (X.transpose(0, 2, 3, 1), "channels_last"),
    ]:
        CNNClassifier(max_iter=1, data_format=data_format).fit(X_ok, y)
    assert not [w for w in recwarn if issubclass(w.category, fastcnn.FastCNNWarning)]


def test_rescale_and_the_warning_for_raw_8_bit_images(small, recwarn):
    X_train, X_test, y_train, _ = small
    as_uint8 = (X_train * 255).round().astype(np.uint8)  # digits come in [0, 1]
    with pytest.warns(fastcnn.FastCNNWarning, match=r"uint8 with values up to 255.*rescale=1/255"):
        CNNClassifier(max_iter=1, random_state=0).fit(as_uint8, y_train)
    recwarn.clear()
    scaled = CNNClassifier(max_iter=2, random_state=0, rescale=1 / 255).fit(as_uint8, y_train)
    assert not [w for w in recwarn if issubclass(w.category, fastcnn.FastCNNWarning)]
    by_hand = CNNClassifier(max_iter=2, random_state=0)
    by_hand.fit(as_uint8.astype(np.float32) * np.float32(1 / 255), y_train)
    test_uint8 = (X_test * 255).round().astype(np.uint8)
    np.testing.assert_allclose(
        scaled.predict_proba(test_uint8),
        by_hand.predict_proba(test_uint8.astype(np.float32) * np.float32(1 / 255)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert as_uint8.max() == 255  # the caller's array is left as it was


def test_sample_weight_of_ones_changes_nothing(small):
    X_train, X_test, y_train, _ = small
    plain = CNNClassifier(max_iter=2, random_state=0).fit(X_train, y_train)
    ones = CNNClassifier(max_iter=2, random_state=0)
    ones.fit(X_train, y_train, sample_weight=np.ones(len(y_train)))
    np.testing.assert_array_equal(ones.predict_proba(X_test), plain.predict_proba(X_test))


def _tiny_float64_layers(input_shape, n_classes):
    c, h, w = input_shape
    conv = Conv2D(c, 4, 3, padding=1, dtype=np.float64)
    return [conv, ReLU(), Flatten(), Dense(4 * h * w, n_classes, dtype=np.float64)]


def test_integer_sample_weights_equal_repeated_samples():
    """One batch of everything, plain SGD, no BatchNorm or Dropout: weight k acts as the
    sample given k times (scikit-learn's convention)."""
    X, y = load_digits()
    X, y = X[:60], y[:60]
    weights = np.random.default_rng(0).integers(1, 4, len(y))
    params = dict(
        architecture=_tiny_float64_layers, max_iter=3, batch_size=1000, optimizer="sgd",
        momentum=0.0, learning_rate="constant", learning_rate_init=0.05, dtype="float64",
        random_state=0,
    )  # fmt: skip
    weighted = CNNClassifier(**params).fit(X, y, sample_weight=weights)
    repeated = CNNClassifier(**params).fit(X.repeat(weights, axis=0), y.repeat(weights))
    np.testing.assert_allclose(
        weighted.predict_proba(X), repeated.predict_proba(X), rtol=1e-9, atol=1e-12
    )
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-10)


def test_class_weight_balanced_and_dict_follow_scikit_learn(small):
    from sklearn.utils.class_weight import compute_sample_weight

    X_train, X_test, y_train, _ = small
    X, y = X_train[:300], np.where(y_train[:300] < 3, y_train[:300], 3)  # imbalanced
    balanced = CNNClassifier(max_iter=2, random_state=0, class_weight="balanced").fit(X, y)
    by_weights = CNNClassifier(max_iter=2, random_state=0)
    by_weights.fit(X, y, sample_weight=compute_sample_weight("balanced", y))
    np.testing.assert_allclose(
        balanced.predict_proba(X_test), by_weights.predict_proba(X_test), rtol=1e-5, atol=1e-6
    )
    # A dict, times sample_weight; labels as the user gives them.
    labels = np.array(["a", "b", "c", "d"])[y]
    sw = np.linspace(0.5, 2.0, len(y))
    as_dict = CNNClassifier(max_iter=2, random_state=0, class_weight={"a": 3.0, "d": 0.5})
    as_dict.fit(X, labels, sample_weight=sw)
    by_hand = CNNClassifier(max_iter=2, random_state=0)
    by_hand.fit(X, labels, sample_weight=sw * np.choose(y, [3.0, 1.0, 1.0, 0.5]))
    np.testing.assert_allclose(
        as_dict.predict_proba(X_test), by_hand.predict_proba(X_test), rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="class_weight has a weight for 'e'"):
        CNNClassifier(class_weight={"e": 2.0}).fit(X, labels)
    with pytest.raises(ValueError, match="'balanced' is not available to partial_fit"):
        CNNClassifier(class_weight="balanced").partial_fit(X, y, classes=np.arange(4))
    CNNClassifier(class_weight={0: 2.0}).partial_fit(X[:50], y[:50], classes=np.arange(4))


def test_new_parameters_round_trip_and_are_validated(small):
    X_train, _, y_train, _ = small
    clf = CNNClassifier(data_format="channels_last", rescale=1 / 255, class_weight="balanced")
    assert clone(clf).get_params() == clf.get_params()
    for params, match in [
        ({"data_format": "NHWC"}, "data_format must be one of"),
        ({"rescale": 0.0}, r"rescale must be a float in \(0.0, inf\)"),
        ({"rescale": "1/255"}, "rescale must be a float"),
        ({"class_weight": "auto"}, "class_weight must be None, 'balanced' or a dict"),
    ]:
        with pytest.raises(ValueError, match=match):
            CNNClassifier(**params).fit(X_train[:20], y_train[:20])
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(20,\)"):
        CNNClassifier().fit(X_train[:20], y_train[:20], sample_weight=np.ones(3))
