"""Bad input to :mod:`fastcnn.functional`: a clear ``ValueError``/``TypeError`` that names
the argument (and the shapes involved), never a crash, on both backends."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastcnn
import fastcnn.functional as F


def esc(value) -> str:
    """``re.escape(str(value))``: shapes and reprs as they appear in messages."""
    return re.escape(str(value))


@pytest.fixture
def f64():
    rng = np.random.default_rng(0)
    return {
        "x": rng.standard_normal((2, 3, 6, 5)),
        "w": rng.standard_normal((4, 3, 3, 3)),
        "b": rng.standard_normal(4),
    }


# ---------------------------------------------------------------------------------------
# conv2d


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "pattern"),
    [
        ((3, 6, 5), (4, 3, 3, 3), r"x must be 4-D \(N, C, H, W\), got shape \(3, 6, 5\)"),
        ((1, 2, 3, 6, 5), (4, 3, 3, 3), r"x must be 4-D .*\(1, 2, 3, 6, 5\)"),
        ((2, 3, 6, 5), (3, 3, 3), r"weight must be 4-D .*got shape \(3, 3, 3\)"),
        ((2, 3, 6, 5), (4, 3, 3, 3, 1), r"weight must be 4-D .*\(4, 3, 3, 3, 1\)"),
    ],
)
def test_conv2d_wrong_ndim(x_shape, w_shape, pattern, backend):
    with pytest.raises(ValueError, match=pattern):
        F.conv2d(np.zeros(x_shape), np.zeros(w_shape))
    grad_out = np.zeros((2, 4, 4, 3))
    with pytest.raises(ValueError, match=pattern):
        F.conv2d_backward(grad_out, np.zeros(x_shape), np.zeros(w_shape))


def test_conv2d_scalar_and_empty_rank_inputs(backend):
    with pytest.raises(ValueError, match=r"x must be 4-D .*got shape \(\)"):
        F.conv2d(np.float64(1.0), np.zeros((1, 1, 1, 1)))
    with pytest.raises(ValueError, match=r"bias must be 1-D .*got shape \(\)"):
        F.conv2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 1, 1)), np.float64(0.0))


def test_conv2d_channel_mismatch(backend):
    x, w = np.zeros((1, 3, 5, 5)), np.zeros((2, 2, 3, 3))
    with pytest.raises(ValueError, match=rf"weight {esc((2, 2, 3, 3))}.*x {esc((1, 3, 5, 5))}"):
        F.conv2d(x, w)
    with pytest.raises(ValueError, match=r"expects 2 input channels"):
        F.conv2d_backward(np.zeros((1, 2, 3, 3)), x, w)
    # with groups: weight (4, 2, ...) and groups=2 expects 4 channels, x has 6
    with pytest.raises(ValueError, match=rf"expects 4 input channels.*x {esc((1, 6, 5, 5))}"):
        F.conv2d(np.zeros((1, 6, 5, 5)), np.zeros((4, 2, 3, 3)), groups=2)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "extent", "padded"),
    [
        ((1, 1, 3, 3), (1, 1, 4, 4), {}, (4, 4), (3, 3)),
        ((1, 1, 5, 3), (1, 1, 3, 4), {}, (3, 4), (5, 3)),
        ((1, 1, 3, 3), (1, 1, 6, 6), {"padding": 1}, (6, 6), (5, 5)),
        ((1, 1, 4, 4), (1, 1, 3, 3), {"dilation": 2}, (5, 5), (4, 4)),
        ((1, 1, 4, 4), (1, 1, 3, 2), {"dilation": (1, 4)}, (3, 5), (4, 4)),
        ((1, 1, 2, 2), (1, 1, 3, 3), {"padding": "valid"}, (3, 3), (2, 2)),
    ],
)
def test_conv2d_kernel_larger_than_padded_input(x_shape, w_shape, kwargs, extent, padded, backend):
    pattern = rf"kernel of extent {esc(extent)}.*weight {esc(w_shape)}.*padded input {esc(padded)}.*x {esc(x_shape)}"  # noqa: E501
    with pytest.raises(ValueError, match=pattern):
        F.conv2d(np.zeros(x_shape), np.zeros(w_shape), **kwargs)
    with pytest.raises(ValueError, match=pattern):
        F.conv2d_backward(np.zeros((1, 1, 1, 1)), np.zeros(x_shape), np.zeros(w_shape), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"stride": 0}, ValueError, r"stride must be >= 1, got 0"),
        ({"stride": -1}, ValueError, r"stride must be >= 1, got -1"),
        ({"stride": (1, 0)}, ValueError, r"stride must be >= 1, got \(1, 0\)"),
        ({"stride": 1.5}, TypeError, r"stride must be an int or a pair of ints, got 1\.5"),
        ({"stride": (1, 2, 3)}, TypeError, r"stride must be an int or a pair"),
        ({"stride": True}, TypeError, r"stride must be an int"),
        ({"stride": None}, TypeError, r"stride must be an int"),
        ({"padding": -1}, ValueError, r"padding must be >= 0, got -1"),
        ({"padding": (0, -2)}, ValueError, r"padding must be >= 0, got \(0, -2\)"),
        ({"padding": 1.0}, TypeError, r"padding must be an int or a pair"),
        ({"padding": "full"}, ValueError, r"padding must be 'valid', 'same'.*'full'"),
        ({"padding": ""}, ValueError, r"padding must be 'valid', 'same'"),
        ({"padding": "same", "stride": 2}, ValueError, r"padding='same' requires stride 1"),
        ({"padding": "same", "stride": (1, 2)}, ValueError, r"'same' requires stride 1.*\(1, 2\)"),
        ({"dilation": 0}, ValueError, r"dilation must be >= 1, got 0"),
        ({"dilation": (1, -1)}, ValueError, r"dilation must be >= 1"),
        ({"dilation": "2"}, TypeError, r"dilation must be an int or a pair"),
        ({"groups": 0}, ValueError, r"groups must be a positive int, got 0"),
        ({"groups": -3}, ValueError, r"groups must be a positive int, got -3"),
        ({"groups": 2}, ValueError, r"groups=2 must divide.*\(3, x \(2, 3, 6, 5\)\)"),
        ({"groups": 3}, ValueError, r"groups=3 must divide.*\(4, weight \(4, 3, 3, 3\)\)"),
    ],
)
def test_conv2d_bad_parameters(kwargs, error, pattern, f64, backend):
    with pytest.raises(error, match=pattern):
        F.conv2d(f64["x"], f64["w"], **kwargs)
    with pytest.raises(error, match=pattern):
        F.conv2d_backward(np.zeros((2, 4, 4, 3)), f64["x"], f64["w"], **kwargs)


@pytest.mark.parametrize("groups", [1.0, 2.5, "1", True, None])
def test_conv2d_groups_must_be_an_int(groups, f64, backend):
    with pytest.raises(
        (TypeError, ValueError), match=rf"groups must be a positive int.*{esc(repr(groups))}"
    ):
        F.conv2d(f64["x"], f64["w"], groups=groups)


def test_conv2d_empty_channels_or_kernel(backend):
    with pytest.raises(ValueError, match=r"x \(1, 0, 4, 4\) and weight \(2, 0, 3, 3\)"):
        F.conv2d(np.zeros((1, 0, 4, 4)), np.zeros((2, 0, 3, 3)))
    with pytest.raises(ValueError, match=r"weight \(0, 1, 3, 3\)"):
        F.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((0, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"non-empty kernel"):
        F.conv2d(np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 0, 3)))


@pytest.mark.parametrize(
    ("x_dtype", "w_dtype", "b_dtype", "pattern"),
    [
        (np.float32, np.float64, None, r"weight has dtype float64 but x has dtype float32"),
        (np.float64, np.float32, None, r"weight has dtype float32 but x has dtype float64"),
        (np.float32, np.float32, np.float64, r"bias has dtype float64 but x has dtype float32"),
        (np.float64, np.float64, np.float32, r"bias has dtype float32 but x has dtype float64"),
    ],
)
def test_conv2d_mismatched_dtypes(x_dtype, w_dtype, b_dtype, pattern, f64, backend):
    x = f64["x"].astype(x_dtype)
    w = f64["w"].astype(w_dtype)
    b = None if b_dtype is None else f64["b"].astype(b_dtype)
    with pytest.raises(TypeError, match=pattern):
        F.conv2d(x, w, b)


@pytest.mark.parametrize(
    ("x_dtype", "g_dtype"), [(np.float32, np.float64), (np.float64, np.float32)]
)
def test_conv2d_backward_mismatched_grad_out_dtype(x_dtype, g_dtype, f64, backend):
    x, w = f64["x"].astype(x_dtype), f64["w"].astype(x_dtype)
    grad_out = np.zeros((2, 4, 4, 3), g_dtype)
    pattern = rf"grad_out has dtype {np.dtype(g_dtype)} but x has dtype {np.dtype(x_dtype)}"
    with pytest.raises(TypeError, match=pattern):
        F.conv2d_backward(grad_out, x, w)


BAD_DTYPES = [np.int64, np.int32, np.uint8, np.bool_, np.complex128, np.complex64, np.float16]
BAD_DTYPES += [np.longdouble] if np.dtype(np.longdouble) != np.dtype(np.float64) else []


@pytest.mark.parametrize("bad", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
def test_non_float_arrays_are_type_errors(bad, f64, backend):
    name = np.dtype(bad).name
    x, w, b = f64["x"], f64["w"], f64["b"]
    got = rf"got dtype {name}"
    with pytest.raises(TypeError, match=rf"x must be a float32 or float64 array, {got}"):
        F.conv2d(x.astype(bad), w)
    with pytest.raises(TypeError, match=rf"weight must be a float32 or float64 array, {got}"):
        F.conv2d(x, w.astype(bad))
    with pytest.raises(TypeError, match=rf"bias must be a float32 or float64 array, {got}"):
        F.conv2d(x, w, b.astype(bad))
    with pytest.raises(TypeError, match=rf"grad_out must be a float32 or float64 array, {got}"):
        F.conv2d_backward(np.zeros((2, 4, 4, 3), bad), x, w)
    with pytest.raises(TypeError, match=rf"x must be a float32 or float64 array, {got}"):
        F.max_pool2d(x.astype(bad), 2)
    with pytest.raises(TypeError, match=rf"x must be a float32 or float64 array, {got}"):
        F.avg_pool2d(x.astype(bad), 2)
    with pytest.raises(TypeError, match=rf"grad_out must be a float32 or float64 array, {got}"):
        F.max_pool2d_backward(np.zeros((2, 3, 3, 2), bad), np.zeros((2, 3, 3, 2), int), x.shape)
    with pytest.raises(TypeError, match=rf"grad_out must be a float32 or float64 array, {got}"):
        F.avg_pool2d_backward(np.zeros((2, 3, 3, 2), bad), x.shape, 2)


def test_integer_images_get_a_conversion_hint(backend):
    with pytest.raises(TypeError, match=r"uint8.*astype\(np\.float32\)"):
        F.max_pool2d(np.zeros((1, 1, 4, 4), np.uint8), 2)


def test_object_and_string_arrays_are_type_errors(backend):
    with pytest.raises(TypeError, match=r"x must be a float32 or float64 array, got dtype object"):
        F.avg_pool2d(np.empty((1, 1, 2, 2), dtype=object), 2)
    with pytest.raises(TypeError, match=r"x must be a float32 or float64 array, got dtype <U"):
        F.max_pool2d(np.full((1, 1, 2, 2), "a"), 2)


@pytest.mark.parametrize("b_shape", [(3,), (5,), (1,), (0,)])
def test_conv2d_bias_wrong_shape(b_shape, f64, backend):
    pattern = (
        rf"bias must have shape \(4,\) to match weight {esc((4, 3, 3, 3))}, got {esc(b_shape)}"
    )
    with pytest.raises(ValueError, match=pattern):
        F.conv2d(f64["x"], f64["w"], np.zeros(b_shape))


def test_conv2d_bias_wrong_ndim(f64, backend):
    with pytest.raises(ValueError, match=r"bias must be 1-D \(C_out,\), got shape \(4, 1\)"):
        F.conv2d(f64["x"], f64["w"], np.zeros((4, 1)))


@pytest.mark.parametrize(
    "g_shape", [(2, 4, 4, 4), (2, 4, 3, 3), (1, 4, 4, 3), (2, 3, 4, 3), (2, 4, 3, 4)]
)
def test_conv2d_backward_grad_out_wrong_shape(g_shape, f64, backend):
    pattern = (
        rf"grad_out must have the conv2d output shape {esc((2, 4, 4, 3))} for x "
        rf"{esc((2, 3, 6, 5))} and weight {esc((4, 3, 3, 3))}, got {esc(g_shape)}"
    )
    with pytest.raises(ValueError, match=pattern):
        F.conv2d_backward(np.zeros(g_shape), f64["x"], f64["w"])


def test_conv2d_backward_grad_out_wrong_ndim(f64, backend):
    with pytest.raises(ValueError, match=r"grad_out must be 4-D .*got shape \(4, 4, 3\)"):
        F.conv2d_backward(np.zeros((4, 4, 3)), f64["x"], f64["w"])


# ---------------------------------------------------------------------------------------
# Pooling


POOLS = ["max", "avg"]


def pool(kind, x, *args, **kwargs):
    return (F.max_pool2d if kind == "max" else F.avg_pool2d)(x, *args, **kwargs)


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize("shape", [(4, 4), (1, 4, 4), (1, 1, 1, 4, 4)])
def test_pool_wrong_ndim(kind, shape, backend):
    with pytest.raises(ValueError, match=rf"x must be 4-D \(N, C, H, W\), got shape {esc(shape)}"):
        pool(kind, np.zeros(shape), 2)


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"kernel_size": 0}, ValueError, r"kernel_size must be >= 1, got 0"),
        ({"kernel_size": (2, -1)}, ValueError, r"kernel_size must be >= 1, got \(2, -1\)"),
        ({"kernel_size": 2.0}, TypeError, r"kernel_size must be an int or a pair"),
        ({"kernel_size": None}, TypeError, r"kernel_size must be an int or a pair"),
        ({"kernel_size": 2, "stride": 0}, ValueError, r"stride must be >= 1, got 0"),
        ({"kernel_size": 2, "stride": (-1, 1)}, ValueError, r"stride must be >= 1"),
        ({"kernel_size": 2, "stride": "1"}, TypeError, r"stride must be an int or a pair"),
        ({"kernel_size": 2, "padding": -1}, ValueError, r"padding must be >= 0, got -1"),
        ({"kernel_size": 2, "padding": "same"}, TypeError, r"padding must be an int or a pair"),
        ({"kernel_size": 2, "ceil_mode": 1}, TypeError, r"ceil_mode must be a bool, got 1"),
        ({"kernel_size": 2, "ceil_mode": "yes"}, TypeError, r"ceil_mode must be a bool"),
    ],
)
def test_pool_bad_parameters(kind, kwargs, error, pattern, backend):
    x = np.zeros((1, 2, 6, 6))
    with pytest.raises(error, match=pattern):
        pool(kind, x, **kwargs)
    if kind == "avg":
        with pytest.raises(error, match=pattern):
            F.avg_pool2d_backward(np.zeros((1, 2, 3, 3)), x.shape, **kwargs)


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize(
    ("kernel", "padding"), [(3, 2), (2, 2), (1, 1), ((4, 3), (1, 2)), ((2, 5), (2, 1))]
)
def test_pool_padding_more_than_half_the_kernel(kind, kernel, padding, backend):
    k = kernel if isinstance(kernel, tuple) else (kernel, kernel)
    pattern = rf"padding {esc(padding)} must be at most half the kernel size {esc(k)}"
    with pytest.raises(ValueError, match=pattern):
        pool(kind, np.zeros((1, 1, 8, 8)), kernel, padding=padding)


@pytest.mark.parametrize("kind", POOLS)
@pytest.mark.parametrize(
    ("shape", "kwargs", "out"),
    [
        ((1, 1, 2, 2), {"kernel_size": 3}, "0x0"),
        ((1, 1, 5, 2), {"kernel_size": 3}, "1x0"),
        ((1, 1, 2, 5), {"kernel_size": (3, 1)}, "0x5"),
        ((1, 1, 0, 4), {"kernel_size": 1}, "0x4"),
    ],
)
def test_pool_input_too_small(kind, shape, kwargs, out, backend):
    name = f"{kind}_pool2d"
    pattern = rf"{name}: input of shape {esc(shape)} is too small.*output would be {out}"
    with pytest.raises(ValueError, match=pattern):
        pool(kind, np.zeros(shape), **kwargs)


def test_max_pool_dilation_too_large_for_input(backend):
    with pytest.raises(ValueError, match=r"too small for kernel_size \(3, 3\), dilation \(3, 3\)"):
        F.max_pool2d(np.zeros((1, 1, 6, 6)), 3, dilation=3)


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((1, 1, 2, 2), {"kernel_size": 2, "stride": 1, "padding": 1, "dilation": 3}),
        ((1, 1, 4, 2), {"kernel_size": (1, 2), "padding": (0, 1), "dilation": (1, 3)}),
    ],
)
def test_max_pool_windows_made_only_of_padding(shape, kwargs, backend):
    pattern = rf"dilation .* padding .*input of shape {esc(shape)} contain only padding"
    with pytest.raises(ValueError, match=pattern):
        F.max_pool2d(np.zeros(shape), **kwargs)


@pytest.mark.parametrize(
    ("value", "error", "pattern"),
    [
        (0, ValueError, r"divisor_override must be a positive int or None, got 0"),
        (-2, ValueError, r"divisor_override must be a positive int or None, got -2"),
        (2.0, TypeError, r"divisor_override must be a positive int or None, got 2\.0"),
        (True, TypeError, r"divisor_override must be a positive int or None, got True"),
        ("3", TypeError, r"divisor_override must be a positive int or None, got '3'"),
    ],
)
def test_avg_pool_bad_divisor_override(value, error, pattern, backend):
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(error, match=pattern):
        F.avg_pool2d(x, 2, divisor_override=value)
    with pytest.raises(error, match=pattern):
        F.avg_pool2d_backward(np.zeros((1, 1, 2, 2)), x.shape, 2, divisor_override=value)


@pytest.mark.parametrize("g_shape", [(1, 2, 3, 3), (1, 2, 2, 2), (2, 2, 3, 2), (1, 3, 3, 2)])
def test_avg_pool_backward_grad_out_wrong_shape(g_shape, backend):
    pattern = (
        rf"grad_out must have the avg_pool2d output shape {esc((1, 2, 3, 2))} for "
        rf"input_shape {esc((1, 2, 6, 5))}, got {esc(g_shape)}"
    )
    with pytest.raises(ValueError, match=pattern):
        F.avg_pool2d_backward(np.zeros(g_shape), (1, 2, 6, 5), 2)


@pytest.mark.parametrize(
    ("input_shape", "error", "pattern"),
    [
        ((1, 2, 6), ValueError, r"input_shape must be 4 non-negative sizes .*got \(1, 2, 6\)"),
        ((1, 2, 6, 5, 1), ValueError, r"input_shape must be 4 non-negative sizes"),
        ((1, 2, -6, 5), ValueError, r"input_shape must be 4 non-negative sizes.*-6"),
        (None, TypeError, r"input_shape must be a tuple \(N, C, H, W\), got None"),
        (4, TypeError, r"input_shape must be a tuple \(N, C, H, W\), got 4"),
        ((1, 2, None, 5), TypeError, r"input_shape"),
        ((1, 2, 6.5, 5), (TypeError, ValueError), r"input_shape"),
        ("1265", (TypeError, ValueError), r"input_shape"),
    ],
)
def test_bad_input_shape(input_shape, error, pattern, backend):
    grad_out = np.zeros((1, 2, 3, 2))
    with pytest.raises(error, match=pattern):
        F.avg_pool2d_backward(grad_out, input_shape, 2)
    with pytest.raises(error, match=pattern):
        F.max_pool2d_backward(grad_out, np.zeros((1, 2, 3, 2), np.int64), input_shape)


def test_an_array_passed_for_a_size_is_named_by_shape_not_printed(backend):
    """Passing the input itself where its shape (or a size) belongs is an easy slip; the
    message names the array by shape and dtype instead of printing all its values."""
    x = np.zeros((64, 6, 28, 28), np.float32)
    grad_out = np.zeros((64, 6, 14, 14), np.float32)
    pattern = r"got an array of shape \(64, 6, 28, 28\) and dtype float32.*x\.shape, not x"
    with pytest.raises(TypeError, match=pattern) as info:
        F.avg_pool2d_backward(grad_out, x, 2)
    assert len(str(info.value)) < 200
    with pytest.raises(TypeError, match=r"stride must be .*got an array of shape") as info:
        F.conv2d(x, np.zeros((2, 6, 3, 3), np.float32), stride=x)
    assert len(str(info.value)) < 200


def test_input_shape_accepts_numpy_integers_and_arrays(backend):
    grad_out = np.ones((1, 2, 3, 2))
    expected = F.avg_pool2d_backward(grad_out, (1, 2, 6, 5), 2)
    for shape in (np.array([1, 2, 6, 5]), tuple(np.int64(s) for s in (1, 2, 6, 5)), [1, 2, 6, 5]):
        np.testing.assert_array_equal(F.avg_pool2d_backward(grad_out, shape, 2), expected)


# ---------------------------------------------------------------------------------------
# max_pool2d_backward indices


def _max_problem():
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 5))
    y, idx = F.max_pool2d(x, 2)
    return x, y, idx


@pytest.mark.parametrize("i_shape", [(2, 3, 3), (2, 3, 3, 3), (1, 3, 3, 2), (2, 3, 2, 3)])
def test_max_pool_backward_indices_wrong_shape(i_shape, backend):
    x, y, _ = _max_problem()
    pattern = rf"indices must have the shape of grad_out {esc(y.shape)}, got {esc(i_shape)}"
    with pytest.raises(ValueError, match=pattern):
        F.max_pool2d_backward(y, np.zeros(i_shape, np.int64), x.shape)


@pytest.mark.parametrize("bad", [np.float64, np.float32, np.bool_, np.complex128, object])
def test_max_pool_backward_indices_wrong_dtype(bad, backend):
    x, y, idx = _max_problem()
    name = re.escape(np.dtype(bad).name)
    with pytest.raises(TypeError, match=rf"indices must be an integer array, got dtype {name}"):
        F.max_pool2d_backward(y, idx.astype(bad), x.shape)


@pytest.mark.parametrize(
    ("position", "value", "low", "high"),
    [(0, 30, 0, 30), (5, -1, -1, None), (-1, 2**40, 0, 2**40)],
)
def test_max_pool_backward_indices_out_of_range(position, value, low, high, backend):
    x, y, idx = _max_problem()
    idx = idx.copy()
    idx.flat[position] = value
    high = idx.max() if high is None else high
    pattern = (
        rf"indices must lie in \[0, H\*W\) = \[0, 30\) for input_shape {esc(x.shape)}, "
        rf"got values in \[{low}, {high}\]"
    )
    with pytest.raises(ValueError, match=pattern):
        F.max_pool2d_backward(y, idx, x.shape)


def test_max_pool_backward_unsigned_indices_out_of_range(backend):
    x, y, idx = _max_problem()
    idx = idx.astype(np.uint64)
    idx.flat[3] = np.iinfo(np.uint64).max
    with pytest.raises(ValueError, match=r"indices must lie in \[0, H\*W\)"):
        F.max_pool2d_backward(y, idx, x.shape)


def test_max_pool_backward_shape_disagreement(backend):
    x, y, idx = _max_problem()
    with pytest.raises(
        ValueError, match=r"grad_out \(2, 3, 3, 2\) and input_shape \(2, 4, 6, 5\)"
    ):
        F.max_pool2d_backward(y, idx, (2, 4, 6, 5))
    with pytest.raises(
        ValueError, match=r"grad_out \(2, 3, 3, 2\) and input_shape \(1, 3, 6, 5\)"
    ):
        F.max_pool2d_backward(y, idx, (1, 3, 6, 5))
    # indices that are valid for a larger plane are out of range for a smaller one
    with pytest.raises(ValueError, match=r"\[0, 4\) for input_shape \(2, 3, 2, 2\)"):
        F.max_pool2d_backward(y, idx, (2, 3, 2, 2))


def test_max_pool_backward_wrong_ndim(backend):
    x, y, idx = _max_problem()
    with pytest.raises(ValueError, match=r"grad_out must be 4-D .*got shape \(3, 3, 2\)"):
        F.max_pool2d_backward(y[0], idx[0], x.shape)


def _pool_kernels(name):
    """The module whose max_pool2d_backward a backend runs, or a skip."""
    if name == "numpy":
        from fastcnn import _reference

        return _reference
    if name not in fastcnn.available_backends():
        pytest.skip(f"compiled extension not importable: {fastcnn.backend_import_error()}")
    from fastcnn._kernels import _pool

    return _pool


@pytest.mark.parametrize("name", ["numpy", "cython"])
def test_max_pool_backward_kernel_checks_every_index_itself(name, dtype):
    # functional validates the indices first, but another thread may change the caller's
    # array after that (issue 20, defect 2): the kernel must skip and count an index
    # outside [0, H*W) rather than write there. Called directly, past the validation,
    # into a grad_x with guard cells either side, where an unchecked write would land.
    pool = _pool_kernels(name)
    shape, guard = (2, 3, 4, 5), 64
    memory = np.full(int(np.prod(shape)) + 2 * guard, 7.0, dtype)
    grad_x = memory[guard:-guard].reshape(shape)
    indices = np.arange(2 * 3 * 2 * 2, dtype=np.int64).reshape(2, 3, 2, 2) % 20
    grad_out = np.ones(indices.shape, dtype)
    bad = [(0, 0, 0, 0, -1), (0, 0, 1, 1, -guard), (1, 2, 0, 1, 20), (1, 2, 1, 0, 20 + guard - 1)]
    for n, c, h, w, value in bad:
        indices[n, c, h, w] = value
    expected = np.zeros(shape, dtype)
    for n, c in np.ndindex(2, 3):
        for i in indices[n, c].reshape(-1):
            if 0 <= i < 20:
                expected[n, c].flat[i] += 1
    assert pool.max_pool2d_backward(grad_out, indices, grad_x, 2) == len(bad)
    np.testing.assert_array_equal(grad_x, expected)
    np.testing.assert_array_equal(memory[:guard], 7.0)
    np.testing.assert_array_equal(memory[-guard:], 7.0)
    # one more, far outside any mapping, and both int64 extremes (negatives wrap to huge)
    for value in (2**40, -(2**40), np.iinfo(np.int64).max, np.iinfo(np.int64).min):
        indices[0, 1, 0, 0] = value
        assert pool.max_pool2d_backward(grad_out, indices, grad_x, 2) == len(bad) + 1
    # and valid indices report nothing
    assert pool.max_pool2d_backward(grad_out, indices % 20, grad_x, 2) == 0


def test_max_pool_backward_indices_changed_during_the_call(backend, monkeypatch):
    # The kernel's count surfaces as the validation's ValueError, which also says so when
    # the indices lie in range again by the time it is raised.
    x, y, idx = _max_problem()
    idx = idx.copy()
    kernels = fastcnn._backend.current()
    real = kernels.max_pool2d_backward

    def changing(grad_out, indices, grad_x, n_threads):
        saved = indices[0, 0, 0, 0]
        indices[0, 0, 0, 0] = 30  # H*W, in the caller's own array: nothing copied it
        try:
            return real(grad_out, indices, grad_x, n_threads)
        finally:
            indices[0, 0, 0, 0] = saved

    monkeypatch.setattr(kernels, "max_pool2d_backward", changing)
    pattern = (
        rf"indices must lie in \[0, H\*W\) = \[0, 30\) for input_shape {esc(x.shape)}, "
        r"but 1 of them lay outside it during the call \(changed by another thread\?\)"
    )
    with pytest.raises(ValueError, match=pattern):
        F.max_pool2d_backward(y, idx, x.shape)


# ---------------------------------------------------------------------------------------
# Nothing crashes the interpreter

CRASH_SCRIPT = r"""
import sys
import numpy as np
import fastcnn
import fastcnn.functional as F

fastcnn.set_backend(sys.argv[1])
x = np.random.default_rng(0).standard_normal((2, 3, 6, 5))
y, idx = F.max_pool2d(x, 2)
huge = np.iinfo(np.int64).max
cases = {
    "indices_huge": lambda: F.max_pool2d_backward(y, np.full(y.shape, huge), x.shape),
    "indices_min": lambda: F.max_pool2d_backward(y, np.full(y.shape, -huge - 1), x.shape),
    "indices_uint_max": lambda: F.max_pool2d_backward(
        y, np.full(y.shape, np.iinfo(np.uint64).max, np.uint64), x.shape),
    "indices_plane_too_small": lambda: F.max_pool2d_backward(y, idx, (2, 3, 1, 1)),
    "indices_empty_plane": lambda: F.max_pool2d_backward(y, idx, (2, 3, 0, 0)),
    "grad_out_bigger_than_input": lambda: F.max_pool2d_backward(
        np.ones((2, 3, 50, 50)), np.zeros((2, 3, 50, 50), np.int64), x.shape),
    "avg_backward_wrong_grad": lambda: F.avg_pool2d_backward(np.ones((2, 3, 9, 9)), x.shape, 2),
    "conv_backward_wrong_grad": lambda: F.conv2d_backward(
        np.ones((2, 4, 90, 90)), x, np.ones((4, 3, 3, 3))),
    "conv_huge_stride": lambda: F.conv2d(x, np.ones((1, 3, 2, 2)), stride=2**64),
    "pool_huge_stride": lambda: F.max_pool2d(x, 2, stride=2**64),
    "avg_huge_stride": lambda: F.avg_pool2d(x, 2, stride=2**63),
    "conv_huge_padding": lambda: F.conv2d(x, np.ones((1, 3, 1, 1)), padding=2**62),
    "conv_huge_dilation": lambda: F.conv2d(x, np.ones((1, 3, 2, 2)), dilation=2**70),
    "pool_huge_kernel": lambda: F.max_pool2d(x, 2**63),
    "pool_huge_dilation": lambda: F.max_pool2d(x, 2, dilation=2**63),
    "avg_huge_divisor": lambda: F.avg_pool2d(x, 2, divisor_override=2**70),
    "conv_zero_spatial": lambda: F.conv2d(
        np.zeros((1, 1, 0, 0)), np.ones((1, 1, 1, 1)), padding=1),
    "conv_weight_zero_out": lambda: F.conv2d(x, np.ones((0, 3, 3, 3))),
    "conv_all_nan_inf": lambda: F.conv2d_backward(
        np.full((2, 2, 4, 3), np.inf), np.full(x.shape, np.nan), np.full((2, 3, 3, 3), -np.inf)),
    "pool_all_nan": lambda: F.max_pool2d(np.full(x.shape, np.nan), 3, 1, 1, ceil_mode=True),
    "big_endian": lambda: F.conv2d(x.astype(">f8"), np.ones((1, 3, 2, 2), ">f8")),
    "zero_strides": lambda: F.conv2d_backward(
        np.broadcast_to(1.0, (2, 1, 5, 4)), np.broadcast_to(2.0, x.shape),
        np.broadcast_to(3.0, (1, 3, 2, 2))),
    "nested_lists": lambda: F.avg_pool2d([[[[1.0, 2.0], [3.0, 4.0]]]], 2),
    "ragged": lambda: F.max_pool2d([[[[1.0, 2.0], [3.0]]]], 1),
    "structured": lambda: F.max_pool2d(np.zeros((1, 1, 2, 2), dtype=[("a", "f8")]), 1),
    "memoryview_input": lambda: F.avg_pool2d(memoryview(np.ones((1, 1, 2, 2))), 2),
}
for name, case in cases.items():
    try:
        case()
    except Exception as exc:
        print(name, "raised", type(exc).__name__, flush=True)
    else:
        print(name, "ok", flush=True)
print("DONE")
"""


@pytest.mark.parametrize("backend_name", ["numpy", "cython"])
def test_nasty_inputs_do_not_crash_the_interpreter(backend_name, tmp_path):
    if backend_name not in fastcnn.available_backends():
        pytest.skip("compiled extension not importable")
    script = tmp_path / "nasty.py"
    script.write_text(textwrap.dedent(CRASH_SCRIPT))
    proc = subprocess.run(
        [sys.executable, str(script), backend_name],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    lines = proc.stdout.splitlines()
    assert lines[-1] == "DONE", proc.stdout + proc.stderr
    results = dict(line.split(" ", 1) for line in lines[:-1])
    assert len(results) == CRASH_SCRIPT.count('":')
    # the ones that must be rejected are rejected with a documented error type
    for name in ("indices_huge", "indices_min", "indices_uint_max", "indices_plane_too_small",
                 "indices_empty_plane", "avg_backward_wrong_grad", "conv_backward_wrong_grad",
                 "conv_huge_dilation", "pool_huge_kernel", "conv_weight_zero_out"):  # fmt: skip
        assert results[name] in ("raised ValueError", "raised TypeError"), (name, results[name])
    for name in ("conv_zero_spatial", "conv_all_nan_inf", "pool_all_nan", "zero_strides"):
        assert results[name] == "ok", (name, results[name])


# A race in a subprocess (argv: backend, iterations): a writer thread flips one element
# of an array out of range and back between two statements (a thread switch at the
# loop's end leaves it valid, so a check before the kernel would usually pass) while the
# main thread calls an op on it; the op must return the right result or raise ValueError.
RACE_SCRIPT = r"""
import sys
import threading
import numpy as np
import fastcnn
import fastcnn.functional as F
from fastcnn.losses import softmax_cross_entropy

fastcnn.set_backend(sys.argv[1])
sys.setswitchinterval(1e-5)
{setup}
k = target.size // 2
valid = int(target[k])
stop = threading.Event()


def flip():
    while not stop.is_set():
        target[k] = 2**40
        target[k] = valid


writer = threading.Thread(target=flip)
writer.start()
outcomes = {{"ok": 0, "refused": 0}}
try:
    for _ in range(int(sys.argv[2])):
        try:
            got = {call}
        except ValueError as exc:
            assert {refusal!r} in str(exc), exc
            outcomes["refused"] += 1
        else:
            np.testing.assert_array_equal(got, expected)
            outcomes["ok"] += 1
finally:
    stop.set()
    writer.join()
print(outcomes)
print("DONE")
"""

STRESS_SCRIPT = RACE_SCRIPT.format(
    setup="""x = np.random.default_rng(0).standard_normal((16, 32, 32, 32))
y, idx = F.max_pool2d(x, 2)
expected = F.max_pool2d_backward(y, idx, x.shape)
target = idx.reshape(-1)""",
    call="F.max_pool2d_backward(y, idx, x.shape)",
    refusal="indices must lie in",
)


@pytest.mark.parametrize("backend_name", ["numpy", "cython"])
def test_indices_changed_by_another_thread_never_crash(backend_name):
    # Issue 20, defect 2: a thread writing the indices while max_pool2d_backward runs. In
    # a subprocess, so that a crash fails this test instead of killing pytest.
    run_stress_script(STRESS_SCRIPT, backend_name, 300 if backend_name == "cython" else 30)


def run_stress_script(code: str, backend_name: str, iterations: int) -> None:
    """Run a race script (argv: backend, iterations) in a subprocess, so that a crash fails
    the calling test instead of killing pytest; it must finish by printing DONE."""
    if backend_name not in fastcnn.available_backends():
        pytest.skip("compiled extension not importable")
    proc = subprocess.run(
        [sys.executable, "-c", code, backend_name, str(iterations)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"exit code {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.stdout.splitlines()[-1] == "DONE", proc.stdout + proc.stderr


LOSS_STRESS_SCRIPT = RACE_SCRIPT.format(
    setup="""logits = np.random.default_rng(0).standard_normal((4096, 10))
target = np.arange(4096, dtype=np.intp) % 10  # int64 labels: the loss reads them in place
expected = softmax_cross_entropy(logits, target)[1]""",
    call="softmax_cross_entropy(logits, target)[1]",
    refusal="class indices in [0, 10)",
)


@pytest.mark.parametrize("backend_name", ["cython", "numpy"])
def test_labels_changed_by_another_thread_never_crash_the_loss(backend_name):
    # The compiled loss checked the labels with the GIL held, then read them again
    # without it: a label changed in between was used as an index (a write far outside
    # the gradient). In a subprocess, so that a crash fails this test instead of pytest.
    run_stress_script(LOSS_STRESS_SCRIPT, backend_name, 2000 if backend_name == "cython" else 200)
