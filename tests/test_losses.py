"""Losses: hand-computed values, stability at huge logits, gradients, both backends
against each other, errors."""

import math

import numpy as np
import pytest
from conftest import numerical_grad, tol
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
from fastcnn import _backend
from fastcnn.layers import Conv2D, Dense, Flatten, ReLU
from fastcnn.losses import get_loss, log_softmax, mse, softmax, softmax_cross_entropy
from fastcnn.optim import SGD


def test_cross_entropy_hand_computed(dtype, backend):
    logits = np.array([[0.0, 0.0], [1.0, 2.0]], dtype)
    y = np.array([0, 1])
    loss, grad = softmax_cross_entropy(logits, y)
    expected = (math.log(2) + math.log(1 + math.exp(-1))) / 2
    assert isinstance(loss, float)
    assert loss == pytest.approx(expected, rel=1e-6)
    p = 1 / (1 + math.exp(-1))  # probability of class 1 in row 2
    assert grad.dtype == dtype
    assert_allclose(grad, [[-0.25, 0.25], [(1 - p) / 2, (p - 1) / 2]], rtol=1e-6)


@pytest.mark.parametrize("scale", [1e4, 1e30])
def test_cross_entropy_is_stable_for_huge_logits(dtype, scale, backend):
    logits = np.array([[scale, 0.0, -scale], [0.0, scale, scale]], dtype)
    loss, grad = softmax_cross_entropy(logits, np.array([0, 1]))
    # Row 1 is certain and right (loss 0); row 2 splits between two equal classes (log 2).
    assert loss == pytest.approx(math.log(2) / 2, rel=1e-6)
    assert np.all(np.isfinite(grad))
    assert_allclose(grad, [[0, 0, 0], [0, -0.25, 0.25]], atol=1e-7)
    loss_wrong, _ = softmax_cross_entropy(logits, np.array([2, 0]))
    assert loss_wrong == pytest.approx((2 * scale + scale + math.log(2)) / 2, rel=1e-6)


def test_cross_entropy_gradient_matches_numerical(rng, backend):
    logits = rng.standard_normal((5, 4)) * 3
    y = rng.integers(0, 4, 5)
    _, grad = softmax_cross_entropy(logits, y)
    numeric = numerical_grad(lambda: softmax_cross_entropy(logits, y)[0], logits)
    assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_cross_entropy_matches_torch(rng, backend):
    torch = pytest.importorskip("torch", reason="torch is optional: an independent reference")
    logits = rng.standard_normal((8, 5)) * 10
    y = rng.integers(0, 5, 8)
    loss, grad = softmax_cross_entropy(logits, y)
    t = torch.from_numpy(logits).requires_grad_(True)
    ref = torch.nn.functional.cross_entropy(t, torch.from_numpy(y))
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    assert_allclose(grad, t.grad.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.skipif("cython" not in fastcnn.available_backends(), reason="no compiled backend")
@pytest.mark.parametrize("shape", [(1, 1), (64, 10), (7, 1000), (300, 3)])
def test_cross_entropy_compiled_matches_numpy(shape, dtype, rng):
    logits = (rng.standard_normal(shape) * 5).astype(dtype)
    logits[0, 0] = np.nan  # NaN, +inf and -inf rows: the same specials on both backends
    if shape[0] > 3:
        logits[1, -1], logits[2, 0] = np.inf, -np.inf
    y = rng.integers(0, shape[1], shape[0]).astype(np.uint8 if shape[1] < 256 else np.int32)
    results = {}
    for name in ("numpy", "cython"):
        with fastcnn.use_backend(name):
            results[name] = softmax_cross_entropy(logits, y)
    (loss_np, grad_np), (loss_c, grad_c) = results["numpy"], results["cython"]
    assert grad_c.dtype == dtype and grad_c.shape == shape
    assert_array_equal(np.isnan(grad_c), np.isnan(grad_np))
    assert_array_equal(np.isinf(grad_c), np.isinf(grad_np))
    finite = np.isfinite(grad_np)
    assert_allclose(grad_c[finite], grad_np[finite], **tol(dtype))
    assert math.isnan(loss_c) and math.isnan(loss_np)  # row 0 has a NaN
    logits[:3] = 0.0
    with fastcnn.use_backend("numpy"):
        loss_np, _ = softmax_cross_entropy(logits, y)
    loss_c, _ = softmax_cross_entropy(logits, y)
    assert loss_c == pytest.approx(loss_np, rel=tol(dtype)["rtol"])


def test_cross_entropy_of_float16_logits_uses_the_numpy_loss(backend):
    logits = np.array([[0.0, 0.0], [1.0, 2.0]], np.float16)
    loss, grad = softmax_cross_entropy(logits, np.array([0, 1]))
    assert grad.dtype == np.float16
    assert loss == pytest.approx((math.log(2) + math.log(1 + math.exp(-1))) / 2, rel=1e-3)


@pytest.mark.skipif("cython" not in fastcnn.available_backends(), reason="no compiled backend")
def test_compiled_loss_refuses_labels_out_of_range_and_mismatched_shapes():
    kernel = _backend._compiled.softmax_cross_entropy
    logits, grad = np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"y\[1\] = 3 is not a class index in \[0, 3\)"):
        kernel(logits, np.array([0, 3], np.intp), grad, 1)
    with pytest.raises(ValueError, match="do not match"):
        kernel(logits, np.array([0], np.intp), grad, 1)


def test_softmax_and_log_softmax(dtype):
    logits = np.array([[1e4, 1e4 - 1, -1e4], [1.0, 2.0, 3.0]], dtype)
    p = softmax(logits)
    assert p.dtype == dtype
    assert np.all(np.isfinite(p))
    assert_allclose(p.sum(axis=1), 1, rtol=1e-6)
    e = np.exp([0.0, -1.0])
    assert_allclose(p[0, :2], e / e.sum(), rtol=1e-6)
    assert_allclose(p[1], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum(), rtol=1e-6)
    assert_allclose(np.exp(log_softmax(logits)), p, rtol=1e-5)
    assert_allclose(softmax(logits.T, axis=0), p.T)


def test_mse_hand_computed_and_gradient(dtype, rng):
    pred = np.array([[1.0, 2.0], [3.0, 4.0]], dtype)
    target = np.array([[1.0, 0.0], [0.0, 4.0]])
    loss, grad = mse(pred, target)
    assert loss == pytest.approx((4 + 9) / 4)
    assert grad.dtype == dtype
    assert_allclose(grad, [[0, 1], [1.5, 0]])
    p = rng.standard_normal((3, 2))
    t = rng.standard_normal((3, 2))
    assert_allclose(mse(p, t)[1], numerical_grad(lambda: mse(p, t)[0], p), rtol=1e-6)


@pytest.mark.parametrize(
    ("logits", "y", "error", "match"),
    [
        (np.zeros((3, 4)), np.array([0, 1, 4]), ValueError, r"class indices in \[0, 4\)"),
        (np.zeros((3, 4)), np.array([0, -1, 2]), ValueError, r"got values in \[-1, 2\]"),
        (np.zeros((3, 4)), np.array([0, 1]), ValueError, r"labels must have shape \(3,\)"),
        (np.zeros((3, 4)), np.array([0.0, 1.0, 2.0]), TypeError, "integer class indices"),
        (np.zeros(4), np.array([0]), ValueError, r"logits must have shape \(N, n_classes\)"),
        (np.zeros((2, 3), int), np.array([0, 1]), TypeError, "logits must be a float array"),
        (np.zeros((0, 3)), np.zeros(0, int), ValueError, "empty batch"),
    ],
)
def test_cross_entropy_errors(logits, y, error, match):
    with pytest.raises(error, match=match):
        softmax_cross_entropy(logits, y)


def test_mse_and_get_loss_errors():
    with pytest.raises(ValueError, match=r"target must have the shape of pred \(2, 3\)"):
        mse(np.zeros((2, 3)), np.zeros((3, 2)))
    assert get_loss("cross_entropy") is softmax_cross_entropy
    assert get_loss("mse") is mse
    with pytest.raises(ValueError, match="loss must be one of"):
        get_loss("hinge")


# ---------------------------------------------------------------------------------------
# Sample weights: each sample's loss is multiplied by its weight, the sum divided by N


def test_weighted_cross_entropy_hand_computed(dtype, backend):
    logits = np.array([[0.0, 0.0], [1.0, 2.0], [3.0, 0.0]], dtype)
    y = np.array([0, 1, 1])
    w = np.array([2.0, 0.5, 0.0])
    loss, grad = softmax_cross_entropy(logits, y, sample_weight=w)
    row_losses = [math.log(2), math.log(1 + math.exp(-1)), 3 + math.log(1 + math.exp(-3))]
    assert loss == pytest.approx(float(np.dot(w, row_losses)) / 3, rel=1e-6)
    p = 1 / (1 + math.exp(-1))
    assert grad.dtype == dtype
    expected = [[-2 * 0.5 / 3, 2 * 0.5 / 3], [0.5 * (1 - p) / 3, 0.5 * (p - 1) / 3], [0, 0]]
    assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    logits64 = logits.astype(np.float64)
    numeric = numerical_grad(lambda: softmax_cross_entropy(logits64, y, w)[0], logits64)
    assert_allclose(grad, numeric, rtol=1e-4, atol=1e-6)


def test_unit_weights_change_nothing(rng, dtype, backend):
    logits = rng.standard_normal((6, 4)).astype(dtype)
    y = rng.integers(0, 4, 6)
    plain = softmax_cross_entropy(logits, y)
    weighted = softmax_cross_entropy(logits, y, sample_weight=np.ones(6))
    assert weighted[0] == pytest.approx(plain[0], rel=1e-6)
    assert_allclose(weighted[1], plain[1], **tol(dtype))
    pred, target = rng.standard_normal((6, 3)).astype(dtype), rng.standard_normal((6, 3))
    assert mse(pred, target, sample_weight=np.ones(6))[0] == pytest.approx(mse(pred, target)[0])


def test_weighted_mse_hand_computed_and_gradient(dtype, rng):
    pred = np.array([[1.0, 2.0], [3.0, 4.0]], dtype)
    target = np.array([[1.0, 0.0], [0.0, 4.0]])
    loss, grad = mse(pred, target, sample_weight=np.array([3.0, 1.0]))
    assert loss == pytest.approx((3 * 4 + 1 * 9) / 4)
    assert grad.dtype == dtype
    assert_allclose(grad, [[0, 3 * 1], [1.5, 0]])
    p, t, w = rng.standard_normal((3, 2)), rng.standard_normal((3, 2)), rng.random(3)
    numeric = numerical_grad(lambda: mse(p, t, sample_weight=w)[0], p)
    assert_allclose(mse(p, t, sample_weight=w)[1], numeric, rtol=1e-6)


@pytest.mark.parametrize(
    ("w", "error", "match"),
    [
        (np.ones(2), ValueError, r"sample_weight must have shape \(3,\)"),
        (np.array([1.0, -1.0, 1.0]), ValueError, "non-negative"),
        (np.array([1.0, np.nan, 1.0]), ValueError, "finite"),
        (np.array(["a", "b", "c"]), TypeError, "real numbers"),
    ],
)
def test_sample_weight_errors(w, error, match):
    with pytest.raises(error, match=match):
        softmax_cross_entropy(np.zeros((3, 2)), np.array([0, 1, 0]), sample_weight=w)
    with pytest.raises(error, match=match):
        mse(np.zeros((3, 2)), np.zeros((3, 2)), sample_weight=w)


# ---------------------------------------------------------------------------------------
# Sample weights in Sequential.fit


def _tiny_model(dtype, seed=0):
    return fastcnn.Sequential(
        Conv2D(1, 2, 3, dtype=dtype, rng=seed),
        ReLU(),
        Flatten(),
        Dense(2 * 4 * 4, 3, dtype=dtype, rng=seed),
    )


def _images(rng, n, dtype):
    return rng.standard_normal((n, 1, 6, 6)).astype(dtype), rng.integers(0, 3, n)


def test_fit_reports_the_weighted_mean_loss(dtype, backend, rng):
    X, y = _images(rng, 7, dtype)
    w = rng.random(7) * 3
    model = _tiny_model(dtype)
    logits = model.decision_function(X).astype(np.float64)
    per_sample = -log_softmax(logits)[np.arange(7), y]
    history = model.fit(
        X, y, epochs=1, batch_size=7, optimizer=SGD(0.1), verbose=0, sample_weight=w
    )
    # One batch of everything: the loss is taken before the step, at the initial weights.
    expected = float(np.dot(w, per_sample) / w.sum())
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_integer_weights_equal_repeated_samples(dtype, backend, rng):
    """Plain SGD, one batch of everything: weight 2 and the sample given twice take the
    same step (the weights are normalized by their mean, the batch loss by N)."""
    X, y = _images(rng, 5, dtype)
    weighted, repeated = _tiny_model(dtype), _tiny_model(dtype)
    w = np.array([2, 1, 1, 3, 1])
    weighted.fit(X, y, 1, 5, SGD(0.5), shuffle=False, verbose=0, sample_weight=w)
    idx = np.repeat(np.arange(5), w)
    repeated.fit(X[idx], y[idx], 1, len(idx), SGD(0.5), shuffle=False, verbose=0)
    for (a, _), (b, _) in zip(weighted.parameters(), repeated.parameters(), strict=True):
        assert_allclose(a, b, **tol(dtype))
    # Zero weights leave a sample out, however many batches.
    dropped = _tiny_model(dtype)
    w0 = np.array([1, 1, 0, 1, 1])
    dropped.fit(X, y, 1, 5, SGD(0.5), shuffle=False, verbose=0, sample_weight=w0)
    keep = _tiny_model(dtype)
    keep.fit(X[w0 > 0], y[w0 > 0], 1, 4, SGD(0.5), shuffle=False, verbose=0)
    for (a, _), (b, _) in zip(dropped.parameters(), keep.parameters(), strict=True):
        assert_allclose(a, b, **tol(dtype))


def test_weights_follow_their_samples_through_shuffling_and_splits(rng):
    X, y = _images(rng, 12, np.float64)
    w = rng.random(12) + 0.5
    order = rng.permutation(12)
    models = [_tiny_model(np.float64) for _ in range(2)]
    models[0].fit(X, y, 2, 12, SGD(0.1), random_state=0, verbose=0, sample_weight=w)
    models[1].fit(
        X[order], y[order], 2, 12, SGD(0.1), random_state=0, verbose=0, sample_weight=w[order]
    )
    for (a, _), (b, _) in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert_allclose(a, b, rtol=1e-10, atol=1e-12)  # one batch: the order is immaterial
    history = _tiny_model(np.float64).fit(
        X, y, 1, 4, validation_split=0.25, random_state=0, verbose=0, sample_weight=w
    )
    assert "val_loss" in history.history


def test_fit_sample_weight_errors(rng):
    X, y = _images(rng, 4, np.float32)
    model = _tiny_model(np.float32)
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(4,\)"):
        model.fit(X, y, verbose=0, sample_weight=np.ones(3))
    with pytest.raises(ValueError, match="positive sum, got all weights zero"):
        model.fit(X, y, verbose=0, sample_weight=np.zeros(4))
