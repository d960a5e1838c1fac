"""NaN and infinity propagate as in PyTorch; huge logits stay exact; divergence is loud.

Where a NaN or an infinity enters an op or a layer, the outputs (and gradients) that are
NaN, +inf or -inf must be exactly those PyTorch gives: nothing hidden (a NaN turned into
a number) and nothing invented. Training whose loss or weights stop being finite raises
FloatingPointError naming the epoch and the learning rate instead of returning a model
that predicts NaN.
"""

import itertools
import math
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
import fastcnn.functional as F
from fastcnn.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from fastcnn.losses import log_softmax, mse, softmax, softmax_cross_entropy
from fastcnn.model import Sequential
from fastcnn.optim import SGD, Adam

torch = pytest.importorskip("torch", reason="torch is the reference for NaN/inf semantics")
TF = torch.nn.functional

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow is the point


def _special(shape, dtype, rng, n=(2, 2, 2)):
    """Random nonzero values with a few NaN, +inf and -inf, far apart."""
    x = rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)
    flat = x.reshape(-1)
    spots = rng.choice(flat.size, sum(n), replace=False)
    flat[spots[: n[0]]] = np.nan
    flat[spots[n[0] : n[0] + n[1]]] = np.inf
    flat[spots[n[0] + n[1] :]] = -np.inf
    return x.astype(dtype)


def assert_same_specials(got, expected, what=""):
    """Same NaN, +inf and -inf positions; finite values close."""
    expected = expected.detach().numpy() if hasattr(expected, "detach") else expected
    assert got.shape == expected.shape, what
    assert_array_equal(np.isnan(got), np.isnan(expected), err_msg=f"NaN positions {what}")
    assert_array_equal(np.isposinf(got), np.isposinf(expected), err_msg=f"+inf {what}")
    assert_array_equal(np.isneginf(got), np.isneginf(expected), err_msg=f"-inf {what}")
    finite = np.isfinite(expected)
    rtol = 1e-4 if got.dtype == np.float32 else 1e-9
    assert_allclose(got[finite], expected[finite], rtol=rtol, atol=rtol, err_msg=what)


def t(a, grad=False):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(grad)


# ---------------------------------------------------------------------------------------
# Ops


CONV_CASES = [
    ((2, 3, 9, 8), (4, 3, 3, 3), {"padding": 1}),
    ((2, 4, 9, 8), (4, 2, 2, 3), {"stride": 2, "padding": (1, 0), "groups": 2}),
    ((1, 2, 10, 10), (3, 2, 3, 2), {"dilation": 2, "padding": "same"}),
    ((1, 2, 7, 7), (2, 2, 1, 1), {}),
    # float32: the input gradient with the samples across the vector lanes
    ((32, 6, 9, 10), (16, 6, 5, 5), {"padding": (1, 2)}),
]


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_nan_inf_as_in_pytorch(case, backend, dtype, rng):
    x_shape, w_shape, kwargs = CONV_CASES[case]
    x = _special(x_shape, dtype, rng)
    w = (rng.uniform(0.5, 1.5, w_shape) * rng.choice([-1, 1], w_shape)).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    y = F.conv2d(x, w, b, **kwargs)
    assert np.isnan(y).any() and np.isinf(y).any()  # the case exercises both
    assert_same_specials(y, TF.conv2d(t(x), t(w), t(b), **kwargs), "conv2d")


@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv2d_backward_nan_inf_as_in_pytorch(case, backend, dtype, rng):
    """Compared with PyTorch in float64 for both dtypes: like ours, its float64 path sums
    products with the zero padding, so an infinite gradient at the border makes NaN
    weight gradients (0 * inf); its float32 oneDNN path skips padded taps instead, which
    makes PyTorch's own two dtypes disagree there."""
    x_shape, w_shape, kwargs = CONV_CASES[case]
    x = _special(x_shape, dtype, rng, n=(1, 1, 0))
    w = rng.uniform(0.5, 1.5, w_shape).astype(dtype)
    grad = _special(F.conv2d(x, w, **kwargs).shape, dtype, rng, n=(1, 1, 1))
    gx, gw, gb = F.conv2d_backward(grad, x, w, **kwargs)
    tx, tw = t(x.astype(np.float64), True), t(w.astype(np.float64), True)
    tb = t(np.zeros(w_shape[0]), True)
    TF.conv2d(tx, tw, tb, **kwargs).backward(t(grad.astype(np.float64)))
    assert_same_specials(gx, tx.grad.numpy().astype(dtype), "grad_x")
    assert_same_specials(gw, tw.grad.numpy().astype(dtype), "grad_weight")
    assert_same_specials(gb, tb.grad.numpy().astype(dtype), "grad_bias")


# Special values against the numpy backend on every kernel the compiled backend may
# choose. The rule (fastcnn/_kernels/_conv.pyx, "Special values"): a product reaches an
# output exactly when the numpy backend forms it. The forward pass and the weight
# gradient multiply the zero padding of x (0 * inf is NaN there too, as in PyTorch's
# float64 path); the input gradient sums only the (output, tap) pairs that read x; and
# the junk columns and padded channels, taps and samples of the compiled kernels' own
# layouts never reach an output. The paths named are those of a float32 call on an
# AVX-512 CPU (test_functional.py checks the planner); float64 takes im2col + BLAS, in
# the wide layout at stride 1. (shapes, kwargs, forward/weight-gradient/input-gradient path)
SPECIAL_PATH_CASES = [
    ((1, 8, 6, 6), (8, 8, 3, 3), {"padding": 1}, "wide/wide/wide"),
    ((1, 16, 7, 9), (24, 16, 3, 3), {"padding": 1}, "wide/wide/wide"),
    ((2, 8, 6, 6), (8, 8, 3, 3), {}, "wide/wide/wide"),
    ((2, 8, 7, 7), (8, 8, 5, 5), {"padding": 2}, "wide/wide/wide"),
    ((2, 8, 7, 7), (8, 4, 3, 3), {"padding": 1, "groups": 2}, "wide/wide/wide"),
    ((3, 6, 9, 5), (16, 6, 3, 3), {"padding": 1}, "lanes/lanes/wide"),
    ((2, 8, 6, 16), (16, 8, 3, 3), {"padding": 1}, "rows/lanes/rows"),
    ((2, 6, 5, 32), (20, 3, 3, 3), {"padding": 1, "groups": 2}, "rows/wide/rows"),
    ((2, 4, 5, 16), (12, 2, 3, 3), {"padding": 1, "groups": 2}, "rows/blas/blas"),
    ((2, 6, 12, 12), (12, 6, 3, 3), {"padding": 1, "dilation": (2, 3)}, "wide/lanes/wide"),
    ((3, 1, 12, 12), (4, 1, 3, 3), {"padding": 1}, "wide/blas/wide"),
    ((17, 3, 6, 6), (6, 3, 5, 5), {"padding": 1}, "wide/wide/batch"),
    ((2, 3, 9, 8), (4, 3, 3, 3), {"stride": 2, "padding": 1}, "blas/blas/blas"),
    ((2, 3, 6, 6), (4, 3, 1, 1), {}, "blas/blas/blas"),
]
SPECIAL_VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "denormal": "denormal"}


def _special_spots(shape):
    """Where a special value goes in an (N, C, H, W) operand: a corner, the middle of
    the right edge (the column a wide row wraps into) and the interior."""
    n, c, h, w = shape
    return {
        "corner": (n - 1, 0, 0, 0),
        "edge": (n - 1, c - 1, h // 2, w - 1),
        "interior": (0, c // 2, h // 2, w // 2),
    }


def _conv_outputs(x, w, b, grad, kwargs):
    """conv2d and all three gradients on the active backend."""
    return (F.conv2d(x, w, b, **kwargs), *F.conv2d_backward(grad, x, w, **kwargs))


def _special_mismatches(case, operand, dtype, rng):
    """(value, spot, output) triples where the compiled backend's specials or finite
    values differ from the numpy backend's, one special value at a time."""
    x_shape, w_shape, kwargs, _ = SPECIAL_PATH_CASES[case]
    x = rng.uniform(0.5, 1.5, x_shape).astype(dtype)
    w = rng.uniform(0.5, 1.5, w_shape).astype(dtype)
    b = rng.uniform(0.5, 1.5, w_shape[0]).astype(dtype)
    grad = rng.uniform(0.5, 1.5, F.conv2d(x, w, **kwargs).shape).astype(dtype)
    arrays = {"x": x, "weight": w, "grad_out": grad}
    target = arrays[operand]
    bad = []
    for (vname, value), (spot, idx) in itertools.product(
        SPECIAL_VALUES.items(), _special_spots(target.shape).items()
    ):
        saved = target[idx]
        target[idx] = np.finfo(dtype).smallest_normal / 8 if value == "denormal" else value
        with fastcnn.use_backend("numpy"):
            want = _conv_outputs(x, w, b, grad, kwargs)
        with fastcnn.use_backend("cython"):
            got = _conv_outputs(x, w, b, grad, kwargs)
        target[idx] = saved
        for name, g, e in zip(("y", "grad_x", "grad_weight", "grad_bias"), got, want, strict=True):
            try:
                assert_same_specials(g, e)
            except AssertionError:
                bad.append((vname, spot, name))
    return bad


@pytest.mark.skipif(
    "cython" not in fastcnn.available_backends(), reason="compiled backend not built"
)
@pytest.mark.parametrize("operand", ["x", "weight", "grad_out"])
@pytest.mark.parametrize(
    "case", range(len(SPECIAL_PATH_CASES)), ids=lambda i: SPECIAL_PATH_CASES[i][3]
)
def test_conv2d_special_values_match_the_numpy_backend_on_every_path(case, operand, dtype, rng):
    """NaN, +-inf and a denormal at a corner, an edge and the interior of each operand:
    every output of the compiled backend has the numpy backend's NaN and infinities,
    and finite values within tolerance."""
    assert _special_mismatches(case, operand, dtype, rng) == []


def test_special_path_cases_cover_every_float32_kernel():
    """The cases above reach each kernel the planner can choose on this CPU."""
    _conv = pytest.importorskip("fastcnn._kernels._conv", reason="compiled backend not built")
    if _conv.direct_simd() != "avx512":
        pytest.skip("the paths are listed for AVX-512; elsewhere some are not taken")
    seen = set()
    for x_shape, w_shape, kwargs, expected in SPECIAL_PATH_CASES:
        if kwargs.get("stride", 1) != 1:
            assert expected == "blas/blas/blas"
            continue
        pad = kwargs.get("padding", 0)
        dil = kwargs.get("dilation", 1)
        args = (*x_shape[1:], w_shape[0], *w_shape[2:], *np.broadcast_to(pad, 2),
                *np.broadcast_to(dil, 2), kwargs.get("groups", 1))  # fmt: skip
        args = tuple(int(a) for a in args)
        plan = _conv._plan(x_shape[0], *args)
        paths = (
            plan["forward"],
            _conv._plan(x_shape[0], *args, needs_input_grad=False)["weight_grad"],
            plan["input_grad"],
        )
        assert "/".join(paths) == expected, (x_shape, w_shape, kwargs)
        seen.update(
            f"{kind}:{p}" for kind, p in zip(("fwd", "wgrad", "igrad"), paths, strict=True)
        )
    assert seen >= {
        "fwd:lanes", "fwd:rows", "fwd:wide", "fwd:blas", "wgrad:lanes", "wgrad:wide",
        "wgrad:blas", "igrad:batch", "igrad:rows", "igrad:wide", "igrad:blas",
    }  # fmt: skip


@pytest.mark.skipif(
    "cython" not in fastcnn.available_backends(), reason="compiled backend not built"
)
@pytest.mark.parametrize("operand", ["x", "weight", "grad_out"])
@pytest.mark.parametrize(
    "case", range(len(SPECIAL_PATH_CASES)), ids=lambda i: SPECIAL_PATH_CASES[i][3]
)
def test_conv2d_denormals_are_not_flushed(case, operand, dtype):
    """One denormal in an operand of zeros, the others ones: every sum is exact, so
    both backends give the same bits, and the denormal survives the products (no
    flush-to-zero or denormals-are-zero mode in the compiled kernels)."""
    x_shape, w_shape, kwargs, _ = SPECIAL_PATH_CASES[case]
    tiny = np.finfo(dtype).smallest_normal / 8
    x, w = np.ones(x_shape, dtype), np.ones(w_shape, dtype)
    grad = np.ones(F.conv2d(x, w, **kwargs).shape, dtype)
    target = {"x": x, "weight": w, "grad_out": grad}[operand]
    target[...] = 0
    target[_special_spots(target.shape)["interior"]] = tiny
    with fastcnn.use_backend("numpy"):
        want = _conv_outputs(x, w, None, grad, kwargs)
    with fastcnn.use_backend("cython"):
        got = _conv_outputs(x, w, None, grad, kwargs)
    for g, e in zip(got, want, strict=True):
        assert_array_equal(g, e)
    assert any(np.any((g != 0) & (np.abs(g) < 2 * tiny)) for g in got)


def test_conv2d_backward_input_grad_ignores_padding_times_infinite_weight(backend, dtype):
    """Issue 20, defect 9: grad_x[0, 0, 5, 0] sums the taps (1..2, 0..1) of 8 output
    channels, 32 ones; the infinite tap (0, 0) only reaches it from an output row past
    the last, which does not exist (PyTorch: 32.0)."""
    x = np.ones((1, 8, 6, 6), dtype)
    w = np.ones((8, 8, 3, 3), dtype)
    w[0, 0, 0, 0] = np.inf
    gx, _, _ = F.conv2d_backward(np.ones((1, 8, 6, 6), dtype), x, w, padding=1)
    assert gx[0, 0, 5, 0] == 32.0
    assert np.isinf(gx[0, 0, 0, 0]) and gx[0, 0, 0, 0] > 0


def test_conv2d_backward_weight_grad_ignores_junk_times_nan_input(backend, dtype):
    """Issue 20, defect 9: grad_weight[0, 0, 0, 2] pairs output (oh, ow) with input
    (oh - 1, ow + 1): 6 rows x 8 columns of ones, 48; the NaN at column 0 is never read
    by that tap (PyTorch: 48.0)."""
    x = np.ones((1, 16, 7, 9), dtype)
    x[0, 0, 3, 0] = np.nan
    grad = np.ones((1, 24, 7, 9), dtype)
    _, gw, _ = F.conv2d_backward(grad, x, np.ones((24, 16, 3, 3), dtype), padding=1)
    assert gw[0, 0, 0, 2] == 48.0
    assert np.isnan(gw[0, 0, 1, 1])


POOL_CASES = [
    ((2, 3, 8, 9), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((1, 2, 9, 9), {"kernel_size": (2, 3), "stride": 1}),
    ((1, 2, 6, 7), {"kernel_size": 2}),
]


@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_max_pool2d_nan_inf_as_in_pytorch(case, backend, dtype, rng):
    shape, kwargs = POOL_CASES[case]
    x = _special(shape, dtype, rng, n=(2, 2, 2))
    y, idx = F.max_pool2d(x, **kwargs)
    ty, tidx = TF.max_pool2d(t(x), **kwargs, return_indices=True)
    assert_same_specials(y, ty, "max_pool2d")
    # Indices agree everywhere, NaN included: the last NaN of a window, PyTorch's rule.
    assert_array_equal(idx, tidx.numpy())
    grad = _special(y.shape, dtype, rng, n=(1, 1, 1))
    tx = t(x, True)
    TF.max_pool2d(tx, **kwargs).backward(t(grad))
    assert_same_specials(F.max_pool2d_backward(grad, idx, x.shape), tx.grad, "backward")


def test_max_pool2d_all_infinite_windows(backend, dtype):
    x = np.full((1, 1, 4, 4), -np.inf, dtype)
    x[0, 0, 3, 3] = np.inf
    y, idx = F.max_pool2d(x, 2)
    ty, tidx = TF.max_pool2d(t(x), 2, return_indices=True)
    assert_same_specials(y, ty)
    assert_array_equal(idx, tidx.numpy())  # the first -inf of each window, as PyTorch


@pytest.mark.parametrize("case", range(len(POOL_CASES)))
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_nan_inf_as_in_pytorch(case, count_include_pad, backend, dtype, rng):
    shape, kwargs = POOL_CASES[case]
    x = _special(shape, dtype, rng, n=(1, 2, 2))
    y = F.avg_pool2d(x, **kwargs, count_include_pad=count_include_pad)
    ty = TF.avg_pool2d(t(x), **kwargs, count_include_pad=count_include_pad)
    assert_same_specials(y, ty, "avg_pool2d")
    grad = _special(y.shape, dtype, rng, n=(1, 1, 1))
    tx = t(x, True)
    TF.avg_pool2d(tx, **kwargs, count_include_pad=count_include_pad).backward(t(grad))
    got = F.avg_pool2d_backward(grad, x.shape, **kwargs, count_include_pad=count_include_pad)
    assert_same_specials(got, tx.grad, "avg_pool2d_backward")


# ---------------------------------------------------------------------------------------
# Layers: forward and backward against the equivalent torch module


def _torch_twin(layer):
    """The torch module computing what ``layer`` computes, with the same weights."""
    nn = torch.nn
    if isinstance(layer, Conv2D):
        m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                      layer.padding, layer.dilation, layer.groups, layer.use_bias)  # fmt: skip
    elif isinstance(layer, Dense):
        m = nn.Linear(layer.in_features, layer.out_features, layer.use_bias)
    elif isinstance(layer, BatchNorm2D):
        m = nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum)
        m.weight.data = t(layer.gamma).clone()
        m.bias.data = t(layer.beta).clone()
        return m.to(t(layer.gamma).dtype)
    elif isinstance(layer, MaxPool2D):
        return nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                            ceil_mode=layer.ceil_mode)  # fmt: skip
    elif isinstance(layer, AvgPool2D):
        return nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                            layer.count_include_pad)  # fmt: skip
    else:
        simple = {ReLU: nn.ReLU(), Tanh: nn.Tanh(), Sigmoid: nn.Sigmoid(), Flatten: nn.Flatten()}
        if isinstance(layer, LeakyReLU):
            return nn.LeakyReLU(layer.negative_slope)
        return simple[type(layer)]
    m = m.to(t(layer.weight).dtype)
    m.weight.data = t(layer.weight).clone()
    if layer.bias is not None:
        m.bias.data = t(layer.bias).clone()
    return m


LAYERS = {
    "relu": (lambda dt: ReLU(), (4, 3, 5, 5)),
    "leaky_relu": (lambda dt: LeakyReLU(0.1), (4, 3, 5, 5)),
    "tanh": (lambda dt: Tanh(), (4, 3, 5, 5)),
    "sigmoid": (lambda dt: Sigmoid(), (4, 3, 5, 5)),
    "flatten": (lambda dt: Flatten(), (4, 3, 5, 5)),
    "conv": (lambda dt: Conv2D(3, 4, 3, padding=1, dtype=dt, rng=0), (4, 3, 5, 5)),
    "dense": (lambda dt: Dense(12, 5, dtype=dt, rng=0), (6, 12)),
    "batchnorm": (lambda dt: BatchNorm2D(3, dtype=dt), (4, 3, 5, 5)),
    "max_pool": (lambda dt: MaxPool2D(2, ceil_mode=True), (4, 3, 5, 5)),
    "avg_pool": (lambda dt: AvgPool2D(3, 2, 1), (4, 3, 5, 5)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_layers_propagate_nan_inf_as_in_pytorch(name, training, backend, dtype, rng):
    make, shape = LAYERS[name]
    layer = make(dtype)
    x = _special(shape, dtype, rng, n=(1, 1, 1))
    twin = _torch_twin(layer).train(training)
    tx = t(x, True)
    ty = twin(tx)
    y = layer.forward(x, training)
    assert_same_specials(y, ty, f"{name} forward")
    grad = _special(y.shape, dtype, rng, n=(1, 1, 1))
    ty.backward(t(grad))
    assert_same_specials(layer.backward(grad), tx.grad, f"{name} backward")


def test_relu_backward_at_nan_inputs_and_gradients_as_in_pytorch(dtype):
    x = np.array([[np.nan, -1.0, 2.0, 0.0, -np.inf, np.inf]], dtype)
    grad = np.array([[5.0, np.nan, np.nan, 7.0, np.inf, 3.0]], dtype)
    layer = ReLU()
    layer.forward(x, True)
    tx = t(x, True)
    torch.relu(tx).backward(t(grad))
    # PyTorch passes the gradient where the output is NaN and drops it (even NaN) where
    # the unit is off: [5, 0, nan, 0, 0, 3].
    assert_same_specials(layer.backward(grad), tx.grad)


def test_dropout_keeps_nan_in_dropped_positions(dtype):
    x = np.full((2, 50), np.nan, dtype)
    y = Dropout(0.5, rng=0).forward(x, training=True)
    assert np.isnan(y).all()  # NaN * 0 is NaN, as torch's x * mask
    assert np.isnan(TF.dropout(t(x), 0.5, training=True)).all()


# ---------------------------------------------------------------------------------------
# Softmax and cross-entropy at logits of magnitude 1e4


@pytest.mark.parametrize("scale", [1e4, -1e4, 3e4])
def test_cross_entropy_matches_torch_for_huge_logits(dtype, scale, rng):
    logits = (rng.standard_normal((16, 7)) * scale).astype(dtype)
    logits[3] = scale  # a row of ties
    y = rng.integers(0, 7, 16)
    loss, grad = softmax_cross_entropy(logits, y)
    tl = t(logits, True)
    ref = TF.cross_entropy(tl, torch.from_numpy(y))
    ref.backward()
    assert math.isfinite(loss) and np.isfinite(grad).all()
    assert loss == pytest.approx(ref.item(), rel=1e-6 if dtype == np.float32 else 1e-12)
    assert_allclose(grad, tl.grad.numpy(), atol=1e-7)
    p = softmax(logits, axis=1)
    assert_allclose(p, TF.softmax(t(logits), 1).numpy(), atol=1e-7)
    assert_allclose(log_softmax(logits, axis=1), TF.log_softmax(t(logits), 1).numpy(),
                    rtol=1e-6)  # fmt: skip


def test_cross_entropy_nan_and_inf_logits_as_in_pytorch(backend):
    logits = np.array([[np.nan, 1.0, 2.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0],
                       [0.0, -np.inf, 1.0]])  # fmt: skip
    for rows, y in (([0], [1]), ([1], [1]), ([2], [1]), ([2], [0]), ([3], [0])):
        loss, _ = softmax_cross_entropy(logits[rows], np.array(y))
        ref = TF.cross_entropy(t(logits[rows]), torch.tensor(y)).item()
        assert (math.isnan(loss) and math.isnan(ref)) or loss == pytest.approx(ref), (rows, y)


def test_model_with_logits_of_1e4_trains_and_predicts_finite_probabilities(dtype, rng):
    X = rng.standard_normal((32, 8)).astype(dtype)
    y = rng.integers(0, 3, 32)
    model = Sequential(Dense(8, 3, dtype=dtype, rng=0))
    model[0].weight[...] *= 1e4 / np.abs(X @ model[0].weight.T).max()
    logits = model.decision_function(X)
    assert np.abs(logits).max() == pytest.approx(1e4, rel=1e-3)
    expected = TF.cross_entropy(t(logits), torch.from_numpy(y)).item()
    assert model.evaluate(X, y)["loss"] == pytest.approx(expected, rel=1e-5)
    proba = model.predict_proba(X)
    assert proba.dtype == dtype and np.isfinite(proba).all()
    assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    history = model.fit(X, y, epochs=2, batch_size=8, optimizer=SGD(1e-3), verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])


# ---------------------------------------------------------------------------------------
# Divergence


def _problem(rng, scale=10.0):
    X = rng.standard_normal((64, 20)).astype(np.float32) * scale
    return X, rng.integers(0, 3, 64)


def _net():
    return Sequential(Dense(20, 50, rng=0), ReLU(), Dense(50, 3, rng=0))


@pytest.mark.parametrize(
    ("optimizer", "lr_text"),
    [(lambda: SGD(lr=1e8), "100000000.0"), (lambda: Adam(lr=1e30), "1e+30")],
)
def test_divergence_stops_with_epoch_and_learning_rate(optimizer, lr_text, rng):
    X, y = _problem(rng)
    with pytest.raises(
        FloatingPointError, match=rf"epoch 1/5.* learning rate {re.escape(lr_text)}\."
    ):
        _net().fit(X, y, epochs=5, batch_size=8, optimizer=optimizer(), verbose=0)


def test_divergence_in_a_later_epoch_names_that_epoch_and_its_learning_rate(rng):
    X, y = _problem(rng, scale=1.0)
    optimizer = SGD(lr=0.01)

    class Boost:  # a schedule gone wrong: the learning rate explodes after epoch 2
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                optimizer.lr = 1e12

    model = _net()
    with pytest.raises(FloatingPointError, match=r"epoch 3/6.*learning rate 1000000000000\.0"):
        model.fit(X, y, epochs=6, batch_size=8, optimizer=optimizer, callbacks=[Boost()],
                  verbose=0)  # fmt: skip
    assert model.history.epoch == [0, 1]  # the completed epochs are on record
    assert all(math.isfinite(v) for v in model.history.history["loss"])


def test_divergence_in_the_very_last_step_is_not_returned_silently(rng):
    """The loss of every batch is finite, but the last update makes the weights infinite:
    without a check, fit would return a model predicting only NaN probabilities."""
    X = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    model = Sequential(Dense(4, 3, rng=0))
    with pytest.raises(FloatingPointError, match=r"parameters became NaN or infinite in "
                       r"epoch 1/1, with learning rate 1e\+39"):  # fmt: skip
        model.fit(X, y, epochs=1, batch_size=8, optimizer=SGD(1e39), verbose=0)


def test_divergence_with_mse_loss(rng):
    X = rng.standard_normal((32, 3)).astype(np.float32)
    target = X @ np.array([[1.0], [2.0], [-1.0]], np.float32) * 100
    model = Sequential(Dense(3, 1, rng=0))
    with pytest.raises(FloatingPointError, match=r"training diverged.*epoch \d+/20"):
        model.fit(X, target, epochs=20, batch_size=4, loss="mse", optimizer=SGD(10.0),
                  verbose=0)  # fmt: skip


def test_no_false_alarm_for_large_but_finite_training(rng):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing overflows on the way
        X = rng.standard_normal((64, 20)).astype(np.float32) * 1e3
        y = rng.integers(0, 3, 64)
        history = _net().fit(X, y, epochs=3, batch_size=16, optimizer=SGD(1e-7), verbose=0)
    assert len(history.epoch) == 3


def test_mse_of_infinite_predictions_is_infinite_not_hidden():
    loss, grad = mse(np.array([[np.inf]]), np.array([[1.0]]))
    ref = TF.mse_loss(t(np.array([[np.inf]])), t(np.array([[1.0]])))
    assert loss == ref.item() == math.inf
    assert np.isinf(grad).all()
