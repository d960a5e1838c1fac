"""Adaptive pooling, interpolation and their layers (global/adaptive pools, Upsample2D).

Each op runs on both backends and both float dtypes: against PyTorch (values, indices,
input gradients), compiled against the numpy reference, float64 gradients against
central differences; then the documented errors, and each layer's forward/backward,
output_shape and save/load round trip.
"""

import numpy as np
import pytest
from conftest import numerical_grad, tol
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
import fastcnn.functional as F
from fastcnn import layers as L

torch = pytest.importorskip("torch")
TF = torch.nn.functional

COMPILED = "cython" in fastcnn.available_backends()
needs_compiled = pytest.mark.skipif(not COMPILED, reason="compiled extension not built")

# (input H, W, output size): odd sizes, bins that do not divide, outputs larger than the
# input, a whole-plane (global) bin and a None that keeps the input's width.
ADAPTIVE_CASES = [
    (6, 6, (3, 3)),
    (7, 5, (3, 2)),
    (5, 5, (4, 4)),
    (10, 13, (4, 5)),
    (3, 4, (7, 9)),
    (9, 11, (1, 1)),
    (1, 1, (2, 3)),
    (8, 6, (3, None)),
]

# (input H, W, keyword arguments of interpolate)
INTERPOLATE_CASES = [
    (5, 7, {"scale_factor": 2}),
    (4, 3, {"scale_factor": 3}),
    (5, 7, {"scale_factor": (1.7, 0.5)}),
    (9, 10, {"scale_factor": 1 / 3}),
    (6, 6, {"scale_factor": 2.5}),
    (5, 7, {"scale_factor": 1.1}),  # the size stays: PyTorch copies that axis
    (5, 7, {"size": (11, 4)}),
    (7, 3, {"size": (2, 13)}),
    (1, 1, {"size": (3, 2)}),
    (8, 8, {"size": 5}),
]
MODES = [("nearest", None), ("bilinear", False), ("bilinear", True)]


def on(name, fn, *args, **kwargs):
    with fastcnn.use_backend(name):
        return fn(*args, **kwargs)


def t(a, grad=False):
    return torch.from_numpy(np.array(a)).requires_grad_(grad)


# ---------------------------------------------------------------------------------------
# Adaptive pooling against PyTorch


@pytest.mark.parametrize("h, w, output_size", ADAPTIVE_CASES)
def test_adaptive_avg_pool2d_matches_torch(backend, dtype, rng, h, w, output_size):
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    y = F.adaptive_avg_pool2d(x, output_size)
    tx = t(x, grad=True)
    ty = TF.adaptive_avg_pool2d(tx, output_size)
    assert y.dtype == dtype and y.shape == tuple(ty.shape)
    assert_allclose(y, ty.detach().numpy(), **tol(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(t(g))
    grad_x = F.adaptive_avg_pool2d_backward(g, x.shape, output_size)
    assert grad_x.dtype == dtype
    assert_allclose(grad_x, tx.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("h, w, output_size", ADAPTIVE_CASES)
def test_adaptive_max_pool2d_matches_torch_with_indices(backend, dtype, rng, h, w, output_size):
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    y, indices = F.adaptive_max_pool2d(x, output_size)
    tx = t(x, grad=True)
    ty, tind = TF.adaptive_max_pool2d(tx, output_size, return_indices=True)
    assert y.dtype == dtype and indices.dtype == np.int64
    assert_array_equal(y, ty.detach().numpy())
    assert_array_equal(indices, tind.numpy())
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(t(g))
    grad_x = F.adaptive_max_pool2d_backward(g, indices, x.shape)
    assert_allclose(grad_x, tx.grad.numpy(), **tol(dtype))


def test_adaptive_max_pool2d_ties_nan_and_infinities_as_torch(backend, dtype, rng):
    # Few distinct values give ties in most bins; NaN and -inf go in some of them.
    x = rng.integers(0, 3, size=(2, 2, 7, 5)).astype(dtype)
    x[0, 0, 1, 1] = np.nan
    x[0, 0, 2, 3] = np.nan
    x[1, 1] = -np.inf
    x[1, 0, 0, 0] = np.inf
    for output_size in [(3, 2), (4, 4), (1, 1), (9, 6)]:
        y, indices = F.adaptive_max_pool2d(x, output_size)
        ty, tind = TF.adaptive_max_pool2d(t(x), output_size, return_indices=True)
        assert_array_equal(y, ty.numpy())  # NaN in the same places
        assert_array_equal(indices, tind.numpy())


def test_overlapping_bins_accumulate_in_backward(backend, dtype):
    # 5 rows into 4 bins: [0,2) [1,3) [2,4) [3,5); a peak in row 2 wins two bins.
    x = np.zeros((1, 1, 5, 1), dtype=dtype)
    x[0, 0, 2, 0] = 1
    y, indices = F.adaptive_max_pool2d(x, (4, 1))
    assert_array_equal(indices.ravel(), [0, 2, 2, 3])
    grad = F.adaptive_max_pool2d_backward(np.ones_like(y), indices, x.shape)
    assert_array_equal(grad.ravel(), [1, 0, 2, 1, 0])
    grad = F.adaptive_avg_pool2d_backward(np.ones((1, 1, 4, 1), dtype), x.shape, (4, 1))
    assert_allclose(grad.ravel(), [0.5, 1, 1, 1, 0.5])


# ---------------------------------------------------------------------------------------
# Interpolation against PyTorch


@pytest.mark.parametrize("mode, align_corners", MODES)
@pytest.mark.parametrize("h, w, kwargs", INTERPOLATE_CASES)
def test_interpolate_matches_torch(backend, dtype, rng, h, w, kwargs, mode, align_corners):
    x = rng.standard_normal((2, 3, h, w)).astype(dtype)
    y = F.interpolate(x, mode=mode, align_corners=align_corners, **kwargs)
    tx = t(x, grad=True)
    ty = TF.interpolate(tx, mode=mode, align_corners=align_corners, **kwargs)
    assert y.dtype == dtype and y.shape == tuple(ty.shape)
    if mode == "nearest":
        assert_array_equal(y, ty.detach().numpy())  # the same source indices
    else:
        assert_allclose(y, ty.detach().numpy(), **tol(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(t(g))
    grad_x = F.interpolate_backward(g, x.shape, mode=mode, align_corners=align_corners, **kwargs)
    assert grad_x.dtype == dtype
    assert_allclose(grad_x, tx.grad.numpy(), rtol=tol(dtype)["rtol"], atol=10 * tol(dtype)["atol"])


def test_nearest_indices_match_torch_over_many_sizes(backend):
    # The float32 source-index rule decides which pixel is copied: sweep sizes and
    # scale factors where a double-precision rule would pick another one.
    x = np.arange(37 * 23, dtype=np.float32).reshape(1, 1, 37, 23)
    for size in [(1, 1), (5, 3), (36, 22), (38, 24), (74, 46), (111, 69), (100, 7)]:
        assert_array_equal(
            F.interpolate(x, size=size), TF.interpolate(t(x), size=size).numpy(), err_msg=str(size)
        )
    for scale in [0.3, 0.7, 1.3, 1.9, 2.0, 2.01, 3.3, 4.7]:
        assert_array_equal(
            F.interpolate(x, scale_factor=scale),
            TF.interpolate(t(x), scale_factor=scale).numpy(),
            err_msg=str(scale),
        )


# ---------------------------------------------------------------------------------------
# Compiled against the reference


@needs_compiled
@pytest.mark.parametrize("h, w, output_size", ADAPTIVE_CASES)
def test_adaptive_pools_compiled_match_reference(dtype, rng, h, w, output_size):
    x = rng.standard_normal((3, 4, h, w)).astype(dtype)
    x[0, 0, 0, 0] = np.nan
    for fn in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        ref = on("numpy", fn, x, output_size)
        got = on("cython", fn, x, output_size)
        for a, b in zip(np.atleast_1d(got), np.atleast_1d(ref), strict=False):
            assert_allclose(a, b, **tol(dtype))
    y, indices = on("numpy", F.adaptive_max_pool2d, x, output_size)
    g = rng.standard_normal(y.shape).astype(dtype)
    for fn, args in [
        (F.adaptive_avg_pool2d_backward, (g, x.shape, output_size)),
        (F.adaptive_max_pool2d_backward, (g, indices, x.shape)),
    ]:
        assert_allclose(on("cython", fn, *args), on("numpy", fn, *args), **tol(dtype))


@needs_compiled
@pytest.mark.parametrize("mode, align_corners", MODES)
@pytest.mark.parametrize("h, w, kwargs", INTERPOLATE_CASES)
def test_interpolate_compiled_matches_reference(dtype, rng, h, w, kwargs, mode, align_corners):
    x = rng.standard_normal((3, 4, h, w)).astype(dtype)
    args = {"mode": mode, "align_corners": align_corners, **kwargs}
    ref = on("numpy", F.interpolate, x, **args)
    # The same tables and the same order of operations: the same bits.
    assert_array_equal(on("cython", F.interpolate, x, **args), ref)
    g = rng.standard_normal(ref.shape).astype(dtype)
    assert_allclose(
        on("cython", F.interpolate_backward, g, x.shape, **args),
        on("numpy", F.interpolate_backward, g, x.shape, **args),
        **tol(dtype),
    )


@needs_compiled
def test_compiled_results_do_not_depend_on_threads(rng):
    x = rng.standard_normal((4, 16, 33, 35)).astype(np.float32)
    previous = fastcnn.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            fastcnn.set_num_threads(threads)
            with fastcnn.use_backend("cython"):
                results.append(
                    [
                        F.adaptive_avg_pool2d(x, (5, 7)),
                        F.adaptive_max_pool2d(x, (5, 7))[1],
                        F.interpolate(x, scale_factor=2, mode="bilinear"),
                        F.interpolate_backward(x, (4, 16, 16, 17), size=(33, 35), mode="bilinear"),
                    ]
                )
    finally:
        fastcnn.set_num_threads(previous)
    for a, b in zip(*results, strict=True):
        assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------
# Gradients against central differences (float64)


def _check_grad(forward, backward, x, rng):
    y = forward(x)
    r = rng.standard_normal(y.shape)
    expected = numerical_grad(lambda: float(np.sum(forward(x) * r)), x)
    assert_allclose(backward(r), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("output_size", [(3, 2), (4, 5), (1, 1)])
def test_adaptive_pool_gradients_central_differences(backend, rng, output_size):
    x = rng.standard_normal((2, 2, 5, 4))
    _check_grad(
        lambda a: F.adaptive_avg_pool2d(a, output_size),
        lambda g: F.adaptive_avg_pool2d_backward(g, x.shape, output_size),
        x,
        rng,
    )
    _, indices = F.adaptive_max_pool2d(x, output_size)  # distinct values: no ties
    _check_grad(
        lambda a: F.adaptive_max_pool2d(a, output_size)[0],
        lambda g: F.adaptive_max_pool2d_backward(g, indices, x.shape),
        x,
        rng,
    )


@pytest.mark.parametrize("mode, align_corners", MODES)
@pytest.mark.parametrize("kwargs", [{"scale_factor": 2}, {"size": (4, 9)}, {"scale_factor": 0.6}])
def test_interpolate_gradients_central_differences(backend, rng, mode, align_corners, kwargs):
    x = rng.standard_normal((2, 2, 5, 4))
    args = {"mode": mode, "align_corners": align_corners, **kwargs}
    _check_grad(
        lambda a: F.interpolate(a, **args),
        lambda g: F.interpolate_backward(g, x.shape, **args),
        x,
        rng,
    )


# ---------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "output_size, error, match",
    [
        (0, ValueError, "output_size must be in"),
        ((2, -1), ValueError, "output_size must be in"),
        ((2, 2, 2), TypeError, "output_size must be an int, None or a pair"),
        (2.5, TypeError, "output_size must be an int, None or a pair"),
        ("2", TypeError, "output_size must be an int, None or a pair"),
    ],
)
def test_adaptive_pool_errors(output_size, error, match):
    x = np.zeros((1, 1, 4, 4), np.float32)
    for fn in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        with pytest.raises(error, match=match):
            fn(x, output_size)


def test_adaptive_pool_input_errors():
    with pytest.raises(ValueError, match="non-zero H and W"):
        F.adaptive_avg_pool2d(np.zeros((1, 1, 0, 4), np.float32), 2)
    with pytest.raises(ValueError, match="4"):
        F.adaptive_max_pool2d(np.zeros((4, 4), np.float32), 2)
    with pytest.raises(ValueError, match=r"output shape \(1, 1, 2, 2\)"):
        F.adaptive_avg_pool2d_backward(np.zeros((1, 1, 3, 3), np.float32), (1, 1, 4, 4), 2)
    y, indices = F.adaptive_max_pool2d(np.zeros((1, 1, 4, 4), np.float32), 2)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H\*W\)"):
        F.adaptive_max_pool2d_backward(y, indices + 100, (1, 1, 4, 4))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({}, ValueError, "exactly one of size and scale_factor"),
        ({"size": 4, "scale_factor": 2}, ValueError, "exactly one of size and scale_factor"),
        ({"size": 0}, ValueError, "size must be >= 1"),
        ({"scale_factor": 0}, ValueError, "finite and > 0"),
        ({"scale_factor": float("nan")}, ValueError, "finite and > 0"),
        ({"scale_factor": "2"}, TypeError, "scale_factor must be a number"),
        ({"scale_factor": (2, 2, 2)}, TypeError, "scale_factor must be a number"),
        ({"scale_factor": 0.1}, ValueError, "gives an output of 0x0"),
        ({"scale_factor": 2, "mode": "bicubic"}, ValueError, "mode must be one of"),
        ({"scale_factor": 2, "align_corners": True}, ValueError, "needs mode='bilinear'"),
        ({"scale_factor": 2, "mode": "bilinear", "align_corners": 1}, TypeError, "bool"),
    ],
)
def test_interpolate_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        F.interpolate(np.zeros((1, 1, 4, 4), np.float32), **kwargs)


def test_interpolate_backward_checks_grad_shape():
    with pytest.raises(ValueError, match=r"interpolate output shape \(1, 1, 8, 8\)"):
        F.interpolate_backward(np.zeros((1, 1, 8, 7), np.float32), (1, 1, 4, 4), scale_factor=2)


def test_ops_return_new_arrays_and_keep_empty_batches():
    x = np.zeros((0, 3, 4, 4), np.float32)
    assert F.adaptive_avg_pool2d(x, 2).shape == (0, 3, 2, 2)
    assert F.interpolate(x, scale_factor=2).shape == (0, 3, 8, 8)
    g = np.ones((0, 3, 8, 8), np.float32)
    assert F.interpolate_backward(g, x.shape, scale_factor=2).shape == x.shape
    x = np.ones((1, 1, 2, 2))
    assert F.interpolate(x, size=(2, 2)) is not x


# ---------------------------------------------------------------------------------------
# Layers


def _layers():
    return [
        L.GlobalAvgPool2D(),
        L.GlobalMaxPool2D(),
        L.AdaptiveAvgPool2D((3, None)),
        L.AdaptiveMaxPool2D(2),
        L.Upsample2D(),
        L.Upsample2D(size=(4, 9), mode="bilinear"),
        L.Upsample2D(1.5, mode="bilinear", align_corners=True),
    ]


def _torch_layer(layer):
    nn = torch.nn
    if isinstance(layer, L.GlobalAvgPool2D):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    if isinstance(layer, L.GlobalMaxPool2D):
        return nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
    if isinstance(layer, L.AdaptiveAvgPool2D):
        return nn.AdaptiveAvgPool2d(layer.output_size)
    if isinstance(layer, L.AdaptiveMaxPool2D):
        return nn.AdaptiveMaxPool2d(layer.output_size)
    corners = layer.align_corners if layer.mode == "bilinear" else None
    return nn.Upsample(layer.size, layer.scale_factor, layer.mode, corners)


@pytest.mark.parametrize("layer", _layers(), ids=repr)
def test_layers_match_torch_modules(backend, dtype, rng, layer):
    x = rng.standard_normal((2, 3, 5, 7)).astype(dtype)
    y = layer.forward(x, training=True)
    assert y.shape == (2, *layer.output_shape((3, 5, 7)))
    tx = t(x, grad=True)
    ty = _torch_layer(layer)(tx)
    assert_allclose(y, ty.detach().numpy(), **tol(dtype))
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(t(g))
    assert_allclose(layer.backward(g), tx.grad.numpy(), **tol(dtype))


@pytest.mark.parametrize("layer", _layers(), ids=repr)
def test_layer_gradients_central_differences(backend, rng, layer):
    x = rng.standard_normal((2, 2, 4, 5))
    _check_grad(lambda a: layer.forward(a), layer.backward, x, rng)


def test_layer_save_load_round_trip(rng, tmp_path):
    model = fastcnn.Sequential(
        [
            L.Conv2D(3, 4, 3, padding=1),
            L.Upsample2D(mode="bilinear"),
            L.AdaptiveMaxPool2D((6, None)),
            L.Upsample2D(size=(5, 9)),
            L.AdaptiveAvgPool2D(3),
            L.Upsample2D((2, 1.5), align_corners=False),
            L.GlobalMaxPool2D(),
            L.Dense(4, 4),
        ]
    )
    x = rng.standard_normal((2, 3, 6, 7)).astype(np.float32)
    model.save(tmp_path / "m.npz")
    loaded = fastcnn.load(tmp_path / "m.npz")
    assert [repr(a) for a in loaded.layers] == [repr(b) for b in model.layers]
    assert_array_equal(loaded.forward(x), model.forward(x))
    head = fastcnn.Sequential([L.GlobalAvgPool2D(), L.Dense(3, 2)])
    head.save(tmp_path / "h.npz")
    assert_array_equal(fastcnn.load(tmp_path / "h.npz").forward(x), head.forward(x))


@pytest.mark.parametrize("layer", _layers(), ids=repr)
def test_layer_config_rebuilds_the_layer(layer):
    clone = type(layer)(**layer.get_config())
    assert repr(clone) == repr(layer)
    assert clone.output_shape((3, 5, 7)) == layer.output_shape((3, 5, 7))


def test_layer_errors():
    with pytest.raises(ValueError, match=r"expected input of shape \(C, H, W\)"):
        L.GlobalAvgPool2D().output_shape((3, 4))
    with pytest.raises(ValueError, match="non-zero H and W"):
        L.AdaptiveMaxPool2D(2).output_shape((3, 0, 4))
    with pytest.raises(ValueError, match="output_size must be in"):
        L.AdaptiveAvgPool2D(0)
    with pytest.raises(ValueError, match="either size or scale_factor"):
        L.Upsample2D(2, size=4)
    with pytest.raises(ValueError, match="mode must be one of"):
        L.Upsample2D(mode="area")
    with pytest.raises(ValueError, match="needs mode='bilinear'"):
        L.Upsample2D(align_corners=True)
    with pytest.raises(ValueError, match="gives an output of 0x0"):
        L.Upsample2D(0.2).output_shape((3, 4, 4))
    layer = L.GlobalMaxPool2D()
    layer.forward(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 3\)"):
        layer.backward(np.ones((2, 4), np.float32))
