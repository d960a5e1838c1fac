"""Numerical tests of :mod:`fastcnn.functional`.

* the compiled backend against the numpy reference over many parameter combinations;
* every backward op against float64 central differences of its forward, on both backends;
* known answers computed by hand or with ``scipy.signal.correlate2d``;
* memory layouts (non-contiguous, Fortran, sliced, negative strides, read-only, broadcast),
  output properties (new, C-contiguous, input dtype) and empty batches.
"""

from __future__ import annotations

import itertools
from types import ModuleType

import numpy as np
import pytest
from conftest import tol
from scipy.signal import correlate2d

import fastcnn
import fastcnn.functional as F

COMPILED = "cython" in fastcnn.available_backends()
needs_compiled = pytest.mark.skipif(
    not COMPILED,
    reason=f"compiled extension not importable: {fastcnn.backend_import_error()}",
)


# ---------------------------------------------------------------------------------------
# Helpers


def on_both(fn, *args, **kwargs):
    """Return ``(reference result, compiled result)`` of ``fn(*args, **kwargs)``."""
    with fastcnn.use_backend("numpy"):
        ref = fn(*args, **kwargs)
    with fastcnn.use_backend("cython"):
        got = fn(*args, **kwargs)
    return ref, got


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def assert_close(got, ref, dtype, scale=None):
    """Compare with the per-dtype tolerance; ``atol`` grows with the size of the values."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    assert got.dtype == np.dtype(dtype)
    if scale is None:
        finite = np.abs(ref[np.isfinite(ref)])
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
    t = tol(dtype)
    np.testing.assert_allclose(got, ref, rtol=t["rtol"], atol=t["atol"] * scale)


@pytest.fixture
def one_thread():
    """Numerical gradients call the forward hundreds of times on tiny inputs, where an
    OpenMP team only adds start-up latency; thread counts are tested in test_backend."""
    previous = fastcnn.get_num_threads()
    fastcnn.set_num_threads(1)
    yield
    fastcnn.set_num_threads(None)
    if fastcnn.get_num_threads() != previous:
        fastcnn.set_num_threads(previous)


def numerical_grad(f, a, rel_step=1e-5):
    """Central differences of the scalar ``f()`` with respect to ``a`` (mutated in place)."""
    grad = np.zeros_like(a)
    flat = a.reshape(-1)
    assert np.shares_memory(flat, a)
    for i in range(flat.size):
        orig = flat[i]
        h = rel_step * max(1.0, abs(orig))
        flat[i] = orig + h
        f_plus = f()
        flat[i] = orig - h
        f_minus = f()
        flat[i] = orig
        grad.flat[i] = (f_plus - f_minus) / (2 * h)
    return grad


def distinct_values(rng, shape, dtype=np.float64):
    """Values at least ~0.8 apart in random order: max pooling has no near-ties."""
    size = int(np.prod(shape))
    values = rng.permutation(size) - size / 2 + rng.uniform(0, 0.2, size)
    return values.reshape(shape).astype(dtype)


def conv_out_len(size, k, s, p_total, d):
    return (size + p_total - d * (k - 1) - 1) // s + 1


def conv_expected_shape(x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1):
    s = stride if isinstance(stride, tuple) else (stride, stride)
    d = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    k = w_shape[2:]
    if isinstance(padding, str):
        padding = padding.lower()
    if padding == "same":
        return (x_shape[0], w_shape[0], x_shape[2], x_shape[3])
    if padding == "valid":
        padding = 0
    p = padding if isinstance(padding, tuple) else (padding, padding)
    h = conv_out_len(x_shape[2], k[0], s[0], 2 * p[0], d[0])
    w = conv_out_len(x_shape[3], k[1], s[1], 2 * p[1], d[1])
    return (x_shape[0], w_shape[0], h, w)


def case_id(value):
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value))
    if isinstance(value, dict):
        return "-".join(f"{k[:3]}{v}".replace(" ", "") for k, v in value.items()) or "default"
    return None


# ---------------------------------------------------------------------------------------
# Convolution cases: (x shape, weight shape, keyword arguments)

CONV_CASES = [
    ((2, 3, 7, 6), (4, 3, 3, 3), {}),
    ((1, 1, 5, 5), (1, 1, 3, 3), {"padding": 1}),
    ((2, 3, 8, 7), (4, 3, 3, 2), {"stride": 2, "padding": 1}),
    ((2, 3, 9, 10), (2, 3, 3, 3), {"stride": 3}),
    ((2, 2, 7, 8), (3, 2, 2, 3), {"stride": (1, 2), "padding": (0, 1)}),
    ((2, 2, 8, 9), (3, 2, 3, 2), {"stride": (3, 1), "padding": (2, 1)}),
    ((2, 3, 9, 8), (4, 3, 3, 3), {"dilation": 2}),
    ((2, 3, 9, 8), (4, 3, 3, 3), {"dilation": (2, 1), "padding": 2}),
    ((2, 2, 9, 9), (2, 2, 2, 3), {"dilation": (1, 2), "stride": 2, "padding": (1, 0)}),
    ((2, 4, 6, 6), (6, 2, 3, 3), {"groups": 2, "padding": 1}),
    ((2, 6, 7, 5), (6, 3, 3, 2), {"groups": 2, "stride": (2, 3), "padding": (1, 0)}),
    ((2, 4, 6, 5), (4, 1, 3, 3), {"groups": 4, "padding": 1}),  # depthwise
    ((3, 4, 6, 5), (8, 1, 3, 3), {"groups": 4, "stride": 2}),  # depthwise, multiplier 2
    ((2, 6, 7, 7), (3, 2, 3, 3), {"groups": 3, "dilation": 2, "padding": "same"}),
    ((1, 3, 6, 7), (2, 3, 3, 3), {"padding": "same"}),
    ((1, 3, 6, 7), (2, 3, 2, 2), {"padding": "same"}),  # even kernel: extra row/col at end
    ((2, 2, 5, 6), (3, 2, 4, 3), {"padding": "same"}),
    ((2, 2, 5, 6), (3, 2, 1, 4), {"padding": "same"}),
    ((1, 2, 7, 7), (2, 2, 2, 3), {"padding": "same", "dilation": (3, 1)}),  # 3*(2-1) odd
    ((2, 2, 6, 7), (2, 2, 2, 2), {"padding": "SAME", "dilation": 2}),
    ((2, 3, 5, 6), (2, 3, 3, 3), {"padding": "valid"}),
    ((2, 2, 4, 5), (3, 2, 4, 5), {}),  # kernel as large as the input
    ((2, 2, 3, 4), (3, 2, 5, 6), {"padding": 1}),  # kernel as large as the padded input
    ((1, 2, 5, 5), (2, 2, 3, 3), {"dilation": 2}),  # dilated kernel as large as the input
    ((2, 2, 5, 5), (2, 2, 3, 3), {"padding": 3}),  # padding beyond the kernel reach
    ((2, 3, 5, 5), (4, 3, 1, 1), {}),  # 1x1, no im2col
    ((2, 3, 5, 5), (4, 3, 1, 1), {"stride": 2}),
    ((2, 3, 5, 5), (4, 3, 1, 1), {"padding": 1}),
    ((3, 4, 5, 6), (4, 2, 1, 1), {"groups": 2}),  # 1x1 with groups
    ((1, 1, 1, 1), (1, 1, 1, 1), {}),
    ((1, 1, 9, 4), (1, 1, 3, 1), {"stride": (3, 1)}),
    ((5, 2, 6, 6), (3, 2, 3, 3), {"stride": 2, "padding": 2}),  # batch > threads
    ((4, 1, 11, 3), (2, 1, 5, 3), {"stride": (2, 1), "padding": (2, 1)}),
    # one output channel over 64 input planes too large for one pass of the direct
    # kernel (in chunks of channels), forward and (second case) input gradient
    ((1, 64, 32, 32), (1, 64, 3, 3), {"padding": 1}),
    ((1, 1, 32, 32), (64, 1, 3, 3), {"padding": 1}),
]


def _random_conv_cases(count, seed):
    """Valid random convolution configurations (small, cheap, reproducible)."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        groups = int(rng.choice([1, 1, 2, 3]))
        c_in = groups * int(rng.integers(1, 3))
        c_out = groups * int(rng.integers(1, 3))
        kh, kw = (int(v) for v in rng.integers(1, 5, size=2))
        dh, dw = (int(v) for v in rng.integers(1, 3, size=2))
        h, w = (int(v) for v in rng.integers(1, 10, size=2))
        n = int(rng.integers(1, 4))
        mode = rng.choice(["int", "pair", "same", "valid"])
        kwargs = {"dilation": (dh, dw), "groups": groups}
        if mode == "same":
            kwargs["padding"] = "same"
            pads = (dh * (kh - 1), dw * (kw - 1))
        else:
            kwargs["stride"] = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
            if mode == "int":
                p = int(rng.integers(0, 3))
                kwargs["padding"], pads = p, (2 * p, 2 * p)
            elif mode == "pair":
                ph, pw = (int(v) for v in rng.integers(0, 3, size=2))
                kwargs["padding"], pads = (ph, pw), (2 * ph, 2 * pw)
            else:
                kwargs["padding"], pads = "valid", (0, 0)
        if dh * (kh - 1) + 1 > h + pads[0] or dw * (kw - 1) + 1 > w + pads[1]:
            continue
        cases.append(((n, c_in, h, w), (c_out, c_in // groups, kh, kw), kwargs))
    return cases


ALL_CONV_CASES = CONV_CASES + _random_conv_cases(30, seed=2024)


def _conv_inputs(rng, x_shape, w_shape, dtype):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    return x, w, b


# ---------------------------------------------------------------------------------------
# Convolution: compiled vs reference


@needs_compiled
@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), ALL_CONV_CASES, ids=case_id)
def test_conv2d_compiled_matches_reference(x_shape, w_shape, kwargs, dtype, rng):
    x, w, b = _conv_inputs(rng, x_shape, w_shape, dtype)
    ref, got = on_both(F.conv2d, x, w, b, **kwargs)
    assert got.shape == conv_expected_shape(x_shape, w_shape, **kwargs)
    assert got.dtype == dtype
    assert_close(got, ref, dtype)
    ref_nb, got_nb = on_both(F.conv2d, x, w, None, **kwargs)
    assert_close(got_nb, ref_nb, dtype)
    # the bias is added once to every output pixel of its channel
    assert_close(got - got_nb, np.broadcast_to(b[:, None, None], got.shape), dtype, scale=10)


@needs_compiled
@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), ALL_CONV_CASES, ids=case_id)
def test_conv2d_backward_compiled_matches_reference(x_shape, w_shape, kwargs, dtype, rng):
    x, w, _ = _conv_inputs(rng, x_shape, w_shape, dtype)
    out_shape = conv_expected_shape(x_shape, w_shape, **kwargs)
    grad_out = rng.standard_normal(out_shape).astype(dtype)
    ref, got = on_both(F.conv2d_backward, grad_out, x, w, **kwargs)
    for g, r, shape in zip(got, ref, (x_shape, w_shape, (w_shape[0],)), strict=True):
        assert g.shape == shape
        assert_close(g, r, dtype)


def _path_args(x_shape, w_shape, kwargs) -> tuple[int, ...]:
    """The arguments of ``_conv._plan`` after the batch size for a conv2d call."""
    pad = kwargs.get("padding", 0)
    pad_h, pad_w = (pad, pad) if isinstance(pad, int) else pad
    dil = kwargs.get("dilation", 1)
    dil_h, dil_w = (dil, dil) if isinstance(dil, int) else dil
    c_out, _, kh, kw = w_shape
    return (x_shape[1], *x_shape[2:], c_out, kh, kw, pad_h, pad_w, dil_h, dil_w,
            kwargs.get("groups", 1))  # fmt: skip


def _expected_path(path: str | dict[str, str]) -> tuple[str, ModuleType]:
    """The kernel a path case expects on this CPU (a dict gives one per instruction set),
    and the compiled convolution module to ask; skips on a CPU without the direct
    kernels, where every path is BLAS."""
    from fastcnn._kernels import _conv

    if _conv.direct_simd() == "none":
        pytest.skip("no AVX2/AVX-512 direct kernels on this CPU: every path is BLAS")
    return (path if isinstance(path, str) else path[_conv.direct_simd()]), _conv


# Shapes that send the float32 forward pass down each of the compiled backend's kernels
# on a CPU with AVX2/AVX-512 (a CPU without them always takes BLAS). Where the two
# instruction sets choose differently, the path is given per set.
FORWARD_PATH_CASES = [
    ("lanes", (5, 6, 14, 14), (16, 6, 5, 5), {}),  # LeNet C3: rows of 10, one block each
    ("lanes", (3, 4, 8, 8), (16, 4, 3, 3), {"padding": 1}),  # rows of 8: one block
    # digits: 9 taps are too few; AVX2 takes its rows of 8 a vector at a time
    ({"avx512": "wide", "avx2": "rows"}, (3, 1, 8, 8), (16, 1, 3, 3), {"padding": 1}),
    ("lanes", (2, 4, 9, 13), (32, 2, 5, 5), {"groups": 2, "padding": (0, 2)}),  # 13 = 8+4+1
    ("lanes", (2, 4, 12, 9), (16, 4, 3, 3), {"dilation": (2, 1), "padding": 1}),  # 9 = 8+1
    ("wide", (2, 1, 12, 12), (6, 1, 5, 5), {"padding": 2}),  # 6 channels: not a vector
    # dilated along the width; the rows of 8 are one vector on AVX2
    ({"avx512": "wide", "avx2": "rows"}, (2, 3, 12, 12), (16, 3, 3, 3), {"dilation": (1, 2)}),
    # 24 channels: on AVX2 a pair of 8-channel blocks, then one; rows of 7 (4 + 3, and
    # 4 + 1 + 1 + 1 for the lone block)
    ("lanes", (2, 2, 9, 11), (24, 2, 5, 5), {}),
    ("lanes", (2, 4, 8, 18), (16, 4, 5, 5), {}),  # rows of 14: 6 + 4 + 4 on AVX2
    ("wide", (2, 4, 10, 10), (1, 4, 3, 3), {"padding": 1}),  # one output channel
    # 144 taps: on AVX-512 blocks of 8 channels x 48 positions; 77 wide positions per
    # plane are one block and part of a second
    ("wide", (2, 16, 7, 9), (24, 16, 3, 3), {"padding": 1}),
    # Output rows of whole vectors: the positions a vector at a time, straight into the
    # output planes. 20 channels: a last block with 4 real ones (of 8 or 6), which alone
    # may be stored.
    ("rows", (2, 8, 6, 32), (20, 8, 3, 3), {"padding": 1}),
    # 5 vectors a plane on AVX-512, the last repeated to fill a block of 2
    ("rows", (2, 4, 5, 16), (12, 2, 3, 3), {"padding": 1, "groups": 2}),
    # 72 channels of 34x34 (333 KB): two passes over the taps, the sums kept in the
    # output between them (on AVX2, 8 channels go across the lanes instead)
    ({"avx512": "rows", "avx2": "lanes"}, (1, 72, 32, 32), (8, 72, 3, 3), {"padding": 1}),
]


@needs_compiled
@pytest.mark.parametrize(("path", "x_shape", "w_shape", "kwargs"), FORWARD_PATH_CASES)
def test_conv2d_forward_paths(path, x_shape, w_shape, kwargs, rng):
    expected, _conv = _expected_path(path)
    plan = _conv._plan(x_shape[0], *_path_args(x_shape, w_shape, kwargs))
    assert expected == plan["forward"]
    x, w, b = _conv_inputs(rng, x_shape, w_shape, np.float32)
    with fastcnn.use_backend("numpy"):
        ref = F.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                       **kwargs)  # fmt: skip
    before = fastcnn.get_num_threads()
    try:
        for threads in (1, 2, 3):
            fastcnn.set_num_threads(threads)
            with fastcnn.use_backend("cython"):
                assert_close(F.conv2d(x, w, b, **kwargs), ref, np.float32)
    finally:
        fastcnn.set_num_threads(before)


def _backward_matches_reference(x_shape, w_shape, kwargs, rng) -> None:
    """float32 conv2d_backward on the compiled backend equals the numpy backend at 1-3
    threads (per-thread partial sums at each count), with and without the input
    gradient, which the weight and bias gradients must not depend on."""
    x, w, _ = _conv_inputs(rng, x_shape, w_shape, np.float32)
    grad_out = rng.standard_normal(conv_expected_shape(x_shape, w_shape, **kwargs))
    grad_out = grad_out.astype(np.float32)
    with fastcnn.use_backend("numpy"):
        ref = F.conv2d_backward(grad_out, x, w, **kwargs)
    before = fastcnn.get_num_threads()
    try:
        for threads, needs_x in itertools.product((1, 2, 3), (True, False)):
            fastcnn.set_num_threads(threads)
            with fastcnn.use_backend("cython"):
                got = F.conv2d_backward(grad_out, x, w, needs_input_grad=needs_x, **kwargs)
            assert (got[0] is None) == (not needs_x)
            for g, r in zip(got, ref, strict=True):
                if g is not None:
                    assert_close(g, r, np.float32)
    finally:
        fastcnn.set_num_threads(before)


# Shapes that send the float32 weight gradient down each of the compiled backend's
# kernels on a CPU with AVX2/AVX-512 (a CPU without them always takes BLAS); as above,
# a path given per instruction set where they differ.
WEIGHT_GRAD_PATH_CASES = [
    ("lanes", (5, 6, 14, 14), (16, 6, 5, 5), {}),  # LeNet C3: junk columns of wide rows
    ("lanes", (2, 3, 6, 21), (16, 3, 5, 5), {}),  # two blocks of 8 positions per row + 1
    ("lanes", (2, 4, 6, 10), (16, 4, 3, 3), {}),  # 3 taps wide: one block of 8 per row
    ("lanes", (3, 6, 9, 5), (16, 6, 3, 3), {"padding": 1}),  # rows shorter than a block
    # groups and unequal padding; 5 taps wide, so the rows of 13 (padding shared) keep 4
    # junk columns, which the lanes kernel skips
    ("lanes", (3, 6, 9, 11), (32, 3, 3, 5), {"padding": (1, 2), "groups": 2}),
    # 24 channels: on AVX2 a pair of 8-channel blocks, then one alone
    ("lanes", (2, 3, 9, 9), (24, 3, 5, 5), {}),
    ("lanes", (2, 6, 12, 12), (12, 6, 3, 3), {"dilation": (2, 3), "padding": 1}),
    # 32 channels: on AVX-512 a pair of 16-channel blocks. 64 channels in rows of 30: a
    # block of four on AVX-512, chosen there although the wide kernel's count is only 7%
    # higher; 128: two such blocks. 120 and 144 positions: more than one tile of 96.
    ("lanes", (2, 3, 9, 9), (32, 3, 5, 5), {}),
    ({"avx512": "lanes", "avx2": "wide"}, (2, 8, 4, 30), (64, 8, 3, 3), {"padding": 1}),
    ({"avx512": "lanes", "avx2": "wide"}, (2, 16, 12, 12), (128, 16, 3, 3), {"padding": 1}),
    ("wide", (3, 16, 12, 12), (6, 16, 3, 3), {"padding": 1}),  # 6 channels: under a vector
    # LeNet C1 at an odd batch: chunks of 6-7 samples (what fits L2), an equal number
    # per thread, the batch split evenly between them
    ("wide", (67, 1, 28, 28), (6, 1, 5, 5), {"padding": 2}),
    # 9 taps: too few for the wide kernel's blocks; on AVX-512 the lanes kernel takes
    # them in one block of 9 (`digits`), on AVX2 in blocks of 6 that waste a quarter
    ({"avx512": "lanes", "avx2": "blas"}, (3, 1, 12, 12), (16, 1, 3, 3), {"padding": 1}),
    ("blas", (3, 1, 12, 12), (4, 1, 3, 3), {"padding": 1}),  # 4 channels: a quarter vector
    # 25 taps on one channel and 18 on two: blocks of 9 on AVX-512 (27 and 18, not 32
    # and 24), the second on pairs of vectors (32 channels)
    ("lanes", (2, 1, 12, 12), (16, 1, 5, 5), {"padding": 2}),
    ("lanes", (2, 2, 6, 6), (32, 2, 3, 3), {"padding": 1}),
]


@needs_compiled
@pytest.mark.parametrize(("path", "x_shape", "w_shape", "kwargs"), WEIGHT_GRAD_PATH_CASES)
def test_conv2d_weight_grad_paths(path, x_shape, w_shape, kwargs, rng):
    expected, _conv = _expected_path(path)
    args = _path_args(x_shape, w_shape, kwargs)
    assert expected == _conv._plan(x_shape[0], *args, needs_input_grad=False)["weight_grad"]
    _backward_matches_reference(x_shape, w_shape, kwargs, rng)


# Shapes and batch sizes that send the float32 input gradient down each of the compiled
# backend's kernels on a CPU with AVX2/AVX-512: "batch" (blocks of 16 or 8 samples
# across the vector lanes, where it visits a quarter fewer taps than the full
# correlation), "rows" or "wide".
INPUT_GRAD_PATH_CASES = [
    ("batch", (64, 6, 14, 14), (16, 6, 5, 5), {}),  # LeNet C3 at the benchmark's batch
    ("batch", (30, 6, 14, 14), (16, 6, 5, 5), {"padding": 1}),  # a partial block of samples
    ("batch", (32, 6, 9, 10), (16, 6, 5, 5), {"padding": (1, 2)}),  # 6 + 1 + ... per row
    ("batch", (32, 8, 10, 9), (16, 4, 5, 5), {"dilation": (2, 1), "groups": 2}),
    ("batch", (30, 4, 12, 12), (8, 4, 5, 5), {"dilation": (1, 2)}),  # 4 of a 6-channel block
    ("batch", (48, 21, 6, 6), (9, 7, 5, 5), {"groups": 3}),  # 7 input channels per group
    ("batch", (32, 3, 12, 12), (6, 3, 5, 5), {}),
    ("batch", (32, 6, 10, 10), (16, 6, 7, 7), {"padding": 1}),
    ("wide", (17, 6, 14, 14), (16, 6, 5, 5), {}),  # two blocks for 17 samples: not worth it
    ({"avx512": "wide", "avx2": "batch"}, (31, 7, 8, 11), (12, 7, 4, 3), {"padding": (1, 0)}),
    # the same shape with 16 output channels goes across the lanes, but with 128 the
    # weight gradient's lanes alone would take 6.5 MB per thread
    ("batch", (16, 32, 8, 8), (16, 32, 5, 5), {}),
    ({"avx512": "wide", "avx2": "rows"}, (16, 32, 8, 8), (128, 32, 5, 5), {}),
    # input planes of whole vectors a row (see FORWARD_PATH_CASES); kernel rows that
    # read only padding are skipped per block of vectors, which spans two rows at times
    ("rows", (3, 32, 6, 16), (64, 32, 3, 3), {"padding": 1}),
    ("rows", (2, 6, 5, 32), (20, 3, 3, 3), {"padding": 1, "groups": 2}),
    ("rows", (2, 8, 32, 32), (72, 8, 3, 3), {"padding": 1}),  # two passes over the taps
]


@needs_compiled
@pytest.mark.parametrize(("path", "x_shape", "w_shape", "kwargs"), INPUT_GRAD_PATH_CASES)
def test_conv2d_input_grad_paths(path, x_shape, w_shape, kwargs, rng):
    expected, _conv = _expected_path(path)
    plan = _conv._plan(x_shape[0], *_path_args(x_shape, w_shape, kwargs))
    assert expected == plan["input_grad"]
    _backward_matches_reference(x_shape, w_shape, kwargs, rng)


# ---------------------------------------------------------------------------------------
# Convolution: gradients against central differences (float64, both backends)

CONV_GRAD_CASES = [
    ((2, 2, 4, 5), (3, 2, 3, 2), {}),
    ((1, 2, 5, 5), (2, 2, 3, 3), {"stride": 2, "padding": 1}),
    ((2, 1, 6, 5), (2, 1, 2, 3), {"stride": (2, 1), "padding": (0, 2), "dilation": (2, 1)}),
    ((1, 4, 4, 4), (4, 2, 2, 2), {"groups": 2, "padding": 1}),
    ((2, 3, 4, 4), (3, 1, 3, 3), {"groups": 3, "stride": 3, "padding": 1}),  # depthwise
    ((1, 2, 4, 5), (2, 2, 2, 2), {"padding": "same"}),  # even kernel: cropped grad_x
    ((1, 1, 5, 4), (2, 1, 2, 3), {"padding": "same", "dilation": (3, 1)}),
    ((2, 2, 3, 4), (1, 2, 5, 6), {"padding": 1}),  # kernel covers the padded input
    ((2, 3, 3, 4), (2, 3, 1, 1), {}),  # 1x1 path
    ((1, 2, 5, 5), (2, 2, 3, 3), {"dilation": 2, "stride": 2, "padding": 2}),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), CONV_GRAD_CASES, ids=case_id)
def test_conv2d_backward_matches_numerical_gradient(
    x_shape, w_shape, kwargs, backend, rng, one_thread
):
    x, w, b = _conv_inputs(rng, x_shape, w_shape, np.float64)
    r = rng.standard_normal(conv_expected_shape(x_shape, w_shape, **kwargs))

    def loss():
        return float(np.sum(F.conv2d(x, w, b, **kwargs) * r))

    grad_x, grad_w, grad_b = F.conv2d_backward(r, x, w, **kwargs)
    np.testing.assert_allclose(grad_x, numerical_grad(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad_w, numerical_grad(loss, w), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad_b, numerical_grad(loss, b), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), CONV_GRAD_CASES[:6], ids=case_id)
def test_conv2d_backward_without_input_grad(x_shape, w_shape, kwargs, backend, dtype, rng):
    x, w, _ = _conv_inputs(rng, x_shape, w_shape, dtype)
    grad_out = rng.standard_normal(conv_expected_shape(x_shape, w_shape, **kwargs))
    grad_out = grad_out.astype(dtype)
    full = F.conv2d_backward(grad_out, x, w, **kwargs)
    grad_x, grad_w, grad_b = F.conv2d_backward(grad_out, x, w, **kwargs, needs_input_grad=False)
    assert grad_x is None
    assert full[0] is not None and full[0].shape == x_shape
    np.testing.assert_array_equal(grad_w, full[1])
    np.testing.assert_array_equal(grad_b, full[2])
    assert grad_w.dtype == grad_b.dtype == dtype


# ---------------------------------------------------------------------------------------
# Convolution: known answers

EDGE_IMAGE = np.array(
    [[0, 0, 1, 1, 1]] * 5, dtype=np.float64
)  # a vertical edge between columns 1 and 2
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)


def test_edge_filter_by_hand(backend, dtype):
    x = EDGE_IMAGE.astype(dtype)[None, None]
    w = SOBEL_X.astype(dtype)[None, None]
    valid = F.conv2d(x, w)
    np.testing.assert_array_equal(valid[0, 0], [[4, 4, 0]] * 3)
    padded = F.conv2d(x, w, padding=1)
    expected = [
        [0, 3, 3, 0, -3],
        [0, 4, 4, 0, -4],
        [0, 4, 4, 0, -4],
        [0, 4, 4, 0, -4],
        [0, 3, 3, 0, -3],
    ]
    np.testing.assert_array_equal(padded[0, 0], expected)
    assert padded.dtype == dtype
    # 'same' for an odd kernel is padding=1; stride 2 picks every other output
    np.testing.assert_array_equal(F.conv2d(x, w, padding="same")[0, 0], expected)
    np.testing.assert_array_equal(
        F.conv2d(x, w, padding=1, stride=2)[0, 0], np.array(expected)[::2, ::2]
    )


def test_edge_filter_matches_scipy(backend, dtype):
    x = EDGE_IMAGE.astype(dtype)[None, None]
    w = SOBEL_X.astype(dtype)[None, None]
    for mode, padding in (("valid", 0), ("same", 1)):
        expected = correlate2d(EDGE_IMAGE, SOBEL_X, mode=mode)
        assert_close(F.conv2d(x, w, padding=padding)[0, 0], expected.astype(dtype), dtype)
    # a 'full' correlation is padding k - 1
    expected = correlate2d(EDGE_IMAGE, SOBEL_X, mode="full")
    assert_close(F.conv2d(x, w, padding=2)[0, 0], expected.astype(dtype), dtype)


def scipy_conv2d(x, w, b, stride, pads, dilation, groups):
    """Independent conv2d from scipy.signal.correlate2d: explicit (top, bottom, left, right)
    zero padding, zeros inserted between kernel taps for dilation, slicing for stride."""
    n, c_in, _, _ = x.shape
    c_out, cg, kh, kw = w.shape
    top, bottom, left, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    wd = np.zeros((c_out, cg, dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1))
    wd[:, :, :: dilation[0], :: dilation[1]] = w
    cog = c_out // groups
    planes = []
    for i in range(n):
        for co in range(c_out):
            grp = co // cog
            acc = sum(correlate2d(xp[i, grp * cg + c], wd[co, c], mode="valid") for c in range(cg))
            planes.append(acc[:: stride[0], :: stride[1]] + (0 if b is None else b[co]))
    return np.array(planes).reshape(n, c_out, *planes[0].shape)


SCIPY_CASES = [
    ((2, 3, 6, 5), (2, 3, 3, 2), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((1, 2, 7, 8), (3, 2, 3, 3), (2, 3), (1, 1, 2, 2), (1, 1), 1),
    ((1, 2, 8, 7), (2, 2, 3, 2), (1, 2), (2, 2, 1, 1), (2, 3), 1),
    ((2, 4, 5, 6), (6, 2, 2, 3), (1, 1), (1, 1, 0, 0), (1, 1), 2),
    ((1, 3, 5, 5), (3, 1, 3, 3), (2, 2), (1, 1, 1, 1), (2, 2), 3),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "pads", "dil", "groups"), SCIPY_CASES)
def test_conv2d_matches_scipy_correlate2d(
    x_shape, w_shape, stride, pads, dil, groups, backend, rng
):
    x, w, b = _conv_inputs(rng, x_shape, w_shape, np.float64)
    expected = scipy_conv2d(x, w, b, stride, pads, dil, groups)
    got = F.conv2d(x, w, b, stride=stride, padding=(pads[0], pads[2]), dilation=dil, groups=groups)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("k", "dil"), [((2, 2), (1, 1)), ((4, 3), (1, 1)), ((2, 3), (3, 1)), ((3, 2), (2, 2))]
)
def test_conv2d_same_padding_puts_extra_at_bottom_right(k, dil, backend, rng):
    x, w, b = _conv_inputs(rng, (2, 2, 5, 6), (3, 2, *k), np.float64)
    totals = [d * (kk - 1) for kk, d in zip(k, dil, strict=True)]
    pads = (totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2)
    expected = scipy_conv2d(x, w, b, (1, 1), pads, dil, 1)
    got = F.conv2d(x, w, b, padding="same", dilation=dil)
    assert got.shape == (2, 3, 5, 6)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def test_conv2d_groups_equal_block_diagonal_weight(backend, dtype, rng):
    x, w, b = _conv_inputs(rng, (2, 6, 5, 5), (4, 3, 3, 3), dtype)
    full = np.zeros((4, 6, 3, 3), dtype)
    full[:2, :3] = w[:2]
    full[2:, 3:] = w[2:]
    assert_close(F.conv2d(x, w, b, groups=2, padding=1), F.conv2d(x, full, b, padding=1), dtype)


def test_conv2d_nan_stays_in_its_receptive_field(backend, dtype):
    x = np.ones((1, 1, 5, 5), dtype)
    x[0, 0, 0, 0] = np.nan
    y = F.conv2d(x, np.ones((1, 1, 3, 3), dtype), padding=1)
    expected_nan = np.zeros((5, 5), bool)
    expected_nan[:2, :2] = True
    np.testing.assert_array_equal(np.isnan(y[0, 0]), expected_nan)
    assert np.all(np.isfinite(y[0, 0][~expected_nan]))


def test_conv2d_backward_known_answer(backend, dtype):
    # Single 3x3 image, 2x2 kernel of ones, grad_out of ones: grad_x counts how many
    # windows cover each pixel, grad_weight sums the pixels each tap sees.
    x = np.arange(9, dtype=dtype).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 2, 2), dtype)
    gx, gw, gb = F.conv2d_backward(np.ones((1, 1, 2, 2), dtype), x, w)
    np.testing.assert_array_equal(gx[0, 0], [[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    np.testing.assert_array_equal(gw[0, 0], [[0 + 1 + 3 + 4, 1 + 2 + 4 + 5], [3 + 4 + 6 + 7, 24]])
    np.testing.assert_array_equal(gb, [4])


# ---------------------------------------------------------------------------------------
# Pooling cases: (x shape, keyword arguments); dilation only for max pooling

POOL_CASES = [
    ((2, 3, 6, 6), {"kernel_size": 2}),
    ((2, 3, 7, 7), {"kernel_size": 3, "stride": 2}),
    ((2, 3, 7, 7), {"kernel_size": 3, "stride": 2, "padding": 1}),
    ((1, 2, 7, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((1, 2, 5, 5), {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((1, 2, 4, 4), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((1, 2, 6, 5), {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1)}),
    ((2, 1, 8, 8), {"kernel_size": 3, "stride": 1}),  # overlapping windows
    ((2, 2, 9, 7), {"kernel_size": 3, "stride": 3, "ceil_mode": True}),
    ((2, 2, 8, 7), {"kernel_size": 3, "stride": 3, "ceil_mode": True}),
    ((1, 1, 5, 5), {"kernel_size": 5}),  # kernel as large as the input
    ((1, 1, 3, 3), {"kernel_size": 5, "padding": 2, "stride": 1}),  # as the padded input
    ((2, 3, 7, 5), {"kernel_size": 2, "stride": 1, "padding": 1, "ceil_mode": True}),
    (
        (1, 2, 5, 7),
        {"kernel_size": (2, 4), "stride": (3, 2), "padding": (1, 2), "ceil_mode": True},
    ),
    ((2, 2, 6, 6), {"kernel_size": 1}),
    ((2, 2, 6, 6), {"kernel_size": 1, "stride": 2}),
    ((1, 1, 4, 9), {"kernel_size": (1, 3), "stride": (1, 2), "ceil_mode": True}),
    ((3, 1, 6, 6), {"kernel_size": 3, "stride": 3, "padding": 1, "ceil_mode": True}),
    ((1, 3, 10, 3), {"kernel_size": (4, 3), "stride": (3, 1), "padding": (2, 1)}),
    ((5, 2, 4, 4), {"kernel_size": 2, "stride": 2, "ceil_mode": False}),
    ((1, 1, 1, 1), {"kernel_size": 1}),
]

MAX_DILATION_CASES = [
    ((2, 2, 9, 8), {"kernel_size": 3, "stride": 2, "dilation": 2}),
    ((1, 2, 9, 8), {"kernel_size": 2, "stride": 1, "dilation": (2, 3), "padding": 1}),
    (
        (1, 2, 9, 8),
        {"kernel_size": 3, "stride": 2, "dilation": 2, "padding": 1, "ceil_mode": True},
    ),
    ((2, 1, 7, 10), {"kernel_size": (2, 3), "stride": (3, 2), "dilation": (3, 2), "padding": 1}),
]


def _pool_out_len(size, k, s, p, d, ceil_mode):
    """PyTorch's pooling_output_shape: floor division of a rounded-up span in ceil_mode,
    then drop a last window that would start in the right padding."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return max(out, 0)


def _touches_input(size, k, s, p, d, n_out):
    return all(any(0 <= o * s - p + i * d < size for i in range(k)) for o in range(n_out))


def _random_pool_cases(count, seed, max_dilation):
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        k = tuple(int(v) for v in rng.integers(1, 5, size=2))
        s = tuple(int(v) for v in rng.integers(1, 4, size=2))
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        d = tuple(int(v) for v in rng.integers(1, max_dilation + 1, size=2))
        ceil_mode = bool(rng.integers(0, 2))
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 3)), *rng.integers(1, 10, size=2))
        shape = tuple(int(v) for v in shape)
        outs = [_pool_out_len(shape[2 + a], k[a], s[a], p[a], d[a], ceil_mode) for a in range(2)]
        if min(outs) < 1 or not all(
            _touches_input(shape[2 + a], k[a], s[a], p[a], d[a], outs[a]) for a in range(2)
        ):
            continue
        kwargs = {"kernel_size": k, "stride": s, "padding": p, "ceil_mode": ceil_mode}
        if max_dilation > 1:
            kwargs["dilation"] = d
        cases.append((shape, kwargs))
    return cases


MAX_POOL_CASES = POOL_CASES + MAX_DILATION_CASES + _random_pool_cases(24, 7, max_dilation=2)
AVG_POOL_CASES = POOL_CASES + _random_pool_cases(16, 8, max_dilation=1)
AVG_OPTIONS = [
    {"count_include_pad": True},
    {"count_include_pad": False},
    {"count_include_pad": True, "divisor_override": 3},
    {"count_include_pad": False, "divisor_override": 2},
]


def pool_expected_shape(x_shape, kernel_size, stride=None, padding=0, dilation=1, **kw):
    def two(v):
        return v if isinstance(v, tuple) else (v, v)

    k, p, d = two(kernel_size), two(padding), two(dilation)
    s = k if stride is None else two(stride)
    ceil_mode = kw.get("ceil_mode", False)
    return (
        *x_shape[:2],
        *(_pool_out_len(x_shape[2 + a], k[a], s[a], p[a], d[a], ceil_mode) for a in range(2)),
    )


# ---------------------------------------------------------------------------------------
# Pooling: compiled vs reference


@needs_compiled
@pytest.mark.parametrize(("x_shape", "kwargs"), MAX_POOL_CASES, ids=case_id)
def test_max_pool2d_compiled_matches_reference(x_shape, kwargs, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    (y_ref, i_ref), (y, i) = on_both(F.max_pool2d, x, **kwargs)
    assert y.shape == i.shape == pool_expected_shape(x_shape, **kwargs)
    assert y.dtype == dtype and i.dtype == np.int64
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(i, i_ref)
    # the index points at the value
    planes = x.reshape(*x_shape[:2], -1)
    np.testing.assert_array_equal(
        np.take_along_axis(planes, i.reshape(*x_shape[:2], -1), axis=-1).reshape(y.shape), y
    )


@needs_compiled
@pytest.mark.parametrize(("x_shape", "kwargs"), MAX_POOL_CASES, ids=case_id)
def test_max_pool2d_backward_compiled_matches_reference(x_shape, kwargs, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    _, indices = F.max_pool2d(x, **kwargs)
    grad_out = rng.standard_normal(indices.shape).astype(dtype)
    ref, got = on_both(F.max_pool2d_backward, grad_out, indices, x_shape)
    assert got.shape == x_shape and got.dtype == dtype
    assert_close(got, ref, dtype)


@needs_compiled
@pytest.mark.parametrize(("x_shape", "kwargs"), AVG_POOL_CASES, ids=case_id)
def test_avg_pool2d_compiled_matches_reference(x_shape, kwargs, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    out_shape = pool_expected_shape(x_shape, **kwargs)
    grad_out = rng.standard_normal(out_shape).astype(dtype)
    for options in AVG_OPTIONS:
        ref, got = on_both(F.avg_pool2d, x, **kwargs, **options)
        assert got.shape == out_shape
        assert_close(got, ref, dtype)
        ref, got = on_both(F.avg_pool2d_backward, grad_out, x_shape, **kwargs, **options)
        assert got.shape == x_shape
        assert_close(got, ref, dtype)


# ---------------------------------------------------------------------------------------
# Pooling: gradients against central differences

POOL_GRAD_CASES = [
    ((2, 2, 4, 5), {"kernel_size": 2}),
    ((1, 2, 5, 5), {"kernel_size": 3, "stride": 1}),  # overlapping windows
    ((1, 1, 5, 6), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((1, 2, 5, 5), {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}),
    ((2, 1, 4, 4), {"kernel_size": 3, "stride": 2, "ceil_mode": True}),  # past the edge
    ((1, 1, 6, 5), {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 0)}),
]
MAX_GRAD_CASES = POOL_GRAD_CASES + [
    ((1, 2, 7, 6), {"kernel_size": 2, "stride": 1, "dilation": 2, "padding": 1}),
    ((1, 1, 7, 7), {"kernel_size": 3, "stride": 2, "dilation": (2, 1), "ceil_mode": True}),
]


@pytest.mark.parametrize(("x_shape", "kwargs"), MAX_GRAD_CASES, ids=case_id)
def test_max_pool2d_backward_matches_numerical_gradient(x_shape, kwargs, backend, rng, one_thread):
    x = distinct_values(rng, x_shape)
    y, indices = F.max_pool2d(x, **kwargs)
    r = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(F.max_pool2d(x, **kwargs)[0] * r))

    grad = F.max_pool2d_backward(r, indices, x_shape)
    np.testing.assert_allclose(grad, numerical_grad(loss, x), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("options", AVG_OPTIONS, ids=case_id)
@pytest.mark.parametrize(("x_shape", "kwargs"), POOL_GRAD_CASES, ids=case_id)
def test_avg_pool2d_backward_matches_numerical_gradient(
    x_shape, kwargs, options, backend, rng, one_thread
):
    x = rng.standard_normal(x_shape)
    r = rng.standard_normal(pool_expected_shape(x_shape, **kwargs))

    def loss():
        return float(np.sum(F.avg_pool2d(x, **kwargs, **options) * r))

    grad = F.avg_pool2d_backward(r, x_shape, **kwargs, **options)
    np.testing.assert_allclose(grad, numerical_grad(loss, x), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------------
# Pooling: known answers


def test_max_pool2d_ties_go_to_first_maximum(backend, dtype):
    x = np.ones((1, 1, 4, 4), dtype)
    y, idx = F.max_pool2d(x, 2)
    np.testing.assert_array_equal(y[0, 0], np.ones((2, 2)))
    np.testing.assert_array_equal(idx[0, 0], [[0, 2], [8, 10]])
    # a tie that is not at the window start: 3 at (0, 1) and (1, 0) -> (0, 1)
    x = np.array([[1, 3], [3, 2]], dtype)[None, None]
    y, idx = F.max_pool2d(x, 2)
    assert y[0, 0, 0, 0] == 3 and idx[0, 0, 0, 0] == 1
    # overlapping windows over a plateau: each picks its own first element
    x = np.array([[5, 5, 5], [5, 5, 5]], dtype)[None, None]
    _, idx = F.max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(idx[0, 0], [[0, 1]])


def test_max_pool2d_nan_propagates_with_last_nan_index(backend, dtype):
    # PyTorch's CPU rule, (v > max) || isnan(v): a NaN replaces anything, so the last NaN
    # of a window in row-major order wins and the gradient goes there.
    nan = np.nan
    x = np.array(
        [
            [1, nan, 7, 2],
            [nan, 5, 3, nan],
            [nan, nan, 2, 0],
            [nan, nan, 1, nan],
        ],
        dtype,
    )[None, None]
    y, idx = F.max_pool2d(x, 2)  # the 2x2, stride-2 path
    assert np.all(np.isnan(y))
    np.testing.assert_array_equal(idx[0, 0], [[4, 7], [13, 15]])
    # the general path: padding, overlapping windows, three NaNs
    x = np.array([[nan, 1, 2], [3, nan, 5], [6, 7, nan]], dtype)[None, None]
    y, idx = F.max_pool2d(x, 3, stride=1, padding=1)
    assert np.all(np.isnan(y))
    np.testing.assert_array_equal(idx[0, 0], [[4, 4, 4], [4, 8, 8], [4, 8, 8]])
    g = F.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    np.testing.assert_array_equal(g[0, 0], [[0, 0, 0], [0, 5, 0], [0, 0, 4]])
    # ceil_mode windows clipped at the edge, and dilation
    y, idx = F.max_pool2d(x, 2, ceil_mode=True)
    np.testing.assert_array_equal(idx[0, 0], [[4, 5], [7, 8]])
    x = np.arange(25, dtype=dtype).reshape(1, 1, 5, 5)
    x[0, 0, ::2, ::2] = nan  # every tap of the corner windows, none of the others
    y, idx = F.max_pool2d(x, 2, stride=1, dilation=2)
    np.testing.assert_array_equal(idx[0, 0], [[12, 13, 14], [17, 18, 19], [22, 23, 24]])


def test_max_pool2d_all_minus_inf_windows(backend, dtype):
    x = np.full((1, 2, 3, 3), -np.inf, dtype)
    y, idx = F.max_pool2d(x, 2, padding=1)
    assert np.all(y == -np.inf)
    # padding never wins: the first in-bounds element is selected
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])
    np.testing.assert_array_equal(idx[0, 1], [[0, 1], [3, 4]])
    y, idx = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [3, 4]])
    # a -inf window next to a finite one
    x = np.array([[-np.inf, -np.inf, 2.0, -np.inf]], dtype)[None, None]
    y, idx = F.max_pool2d(x, (1, 2))
    np.testing.assert_array_equal(y[0, 0], [[-np.inf, 2.0]])
    np.testing.assert_array_equal(idx[0, 0], [[0, 2]])


def test_max_pool2d_known_values_with_padding_and_ceil_mode(backend, dtype):
    x = np.arange(25, dtype=dtype).reshape(1, 1, 5, 5)
    y, idx = F.max_pool2d(x, 2, stride=2, padding=1, ceil_mode=True)
    # windows start at -1, 1, 3 along each axis (a fourth would start in the padding)
    assert y.shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(y[0, 0], [[0, 2, 4], [10, 12, 14], [20, 22, 24]])
    np.testing.assert_array_equal(idx[0, 0], y[0, 0].astype(np.int64))
    y, idx = F.max_pool2d(x, 3, stride=2, ceil_mode=True)  # last window runs past the edge
    np.testing.assert_array_equal(y[0, 0], [[12, 14], [22, 24]])
    y, idx = F.max_pool2d(x, 2, stride=3, dilation=2)  # taps at rows/cols 0, 2
    np.testing.assert_array_equal(y[0, 0], [[12]])
    assert idx[0, 0, 0, 0] == 12


def test_ceil_mode_window_longer_than_the_input(backend, dtype):
    # PyTorch (and the documented formula: ceil((1 + 0 - 1 - 1) / 2) + 1 = 1) give one
    # output row for a 2-row kernel over a 1-row input in ceil_mode: the window starts
    # inside the input and is clipped at its end.
    x = np.arange(8, dtype=dtype).reshape(1, 1, 1, 8)
    y, idx = F.max_pool2d(x, 2, ceil_mode=True)
    np.testing.assert_array_equal(y[0, 0], [[1, 3, 5, 7]])
    np.testing.assert_array_equal(idx[0, 0], [[1, 3, 5, 7]])
    g = F.max_pool2d_backward(np.ones_like(y), idx, x.shape)
    np.testing.assert_array_equal(g[0, 0], [[0, 1, 0, 1, 0, 1, 0, 1]])
    # avg: each window holds 2 input cells and is clipped to 1 row, so divisor 2
    a = F.avg_pool2d(x, 2, ceil_mode=True)
    assert_close(a[0, 0], np.array([[0.5, 2.5, 4.5, 6.5]]), dtype)
    ga = F.avg_pool2d_backward(np.ones_like(a), x.shape, 2, ceil_mode=True)
    assert_close(ga[0, 0], np.full((1, 8), 0.5), dtype)


def test_max_pool2d_backward_accumulates_overlapping_windows(backend, dtype):
    x = np.array([[1, 2, 3], [4, 9, 5], [6, 7, 8]], dtype)[None, None]
    y, idx = F.max_pool2d(x, 2, stride=1)
    np.testing.assert_array_equal(idx[0, 0], [[4, 4], [4, 4]])
    g = F.max_pool2d_backward(np.array([[1, 2], [3, 4]], dtype)[None, None], idx, x.shape)
    np.testing.assert_array_equal(g[0, 0], [[0, 0, 0], [0, 10, 0], [0, 0, 0]])
    assert g.dtype == dtype
    # hand-made indices, repeated and across channels/samples
    indices = np.array([[[[0, 0], [3, 0]]], [[[2, 2], [2, 1]]]])
    grad_out = np.arange(1, 9, dtype=dtype).reshape(2, 1, 2, 2)
    g = F.max_pool2d_backward(grad_out, indices, (2, 1, 2, 2))
    np.testing.assert_array_equal(g[0, 0], [[1 + 2 + 4, 0], [0, 3]])
    np.testing.assert_array_equal(g[1, 0], [[0, 8], [5 + 6 + 7, 0]])


def test_max_pool2d_backward_overwrites_nothing_outside_indices(backend, dtype):
    grad_out = np.full((1, 1, 1, 1), 2.5, dtype)
    g = F.max_pool2d_backward(grad_out, np.array([[[[5]]]]), (1, 1, 3, 4))
    expected = np.zeros((1, 1, 3, 4), dtype)
    expected[0, 0, 1, 1] = 2.5
    np.testing.assert_array_equal(g, expected)


def test_max_pool2d_backward_accepts_other_integer_index_dtypes(backend, dtype, rng):
    x = rng.standard_normal((2, 2, 6, 6)).astype(dtype)
    _, idx = F.max_pool2d(x, 3, stride=1)
    grad_out = rng.standard_normal(idx.shape).astype(dtype)
    expected = F.max_pool2d_backward(grad_out, idx, x.shape)
    for index_dtype in (np.int32, np.uint16, np.uint64):
        got = F.max_pool2d_backward(grad_out, idx.astype(index_dtype), x.shape)
        np.testing.assert_array_equal(got, expected)


def test_avg_pool2d_divisors_by_hand(backend, dtype):
    ones = np.ones((1, 1, 4, 4), dtype)
    kw = {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    # windows along each axis: [-1, 2) -> 2 inputs of 3, [1, 4) -> 3 of 3, [3, 5) -> 1 of 2
    # (the third window is clipped at the end of the padding, so it counts 2 cells).
    counts = np.array([2, 3, 1])
    with_pad = np.array([3, 3, 2])
    y = F.avg_pool2d(ones, **kw)
    assert y.shape == (1, 1, 3, 3)
    assert_close(y[0, 0], (np.outer(counts, counts) / np.outer(with_pad, with_pad)), dtype)
    np.testing.assert_allclose(y[0, 0, 0, 0], 4 / 9, rtol=1e-6)
    np.testing.assert_allclose(y[0, 0, 2, 2], 1 / 4, rtol=1e-6)
    y = F.avg_pool2d(ones, **kw, count_include_pad=False)
    assert_close(y[0, 0], np.ones((3, 3)), dtype)
    y = F.avg_pool2d(ones, **kw, divisor_override=2)
    assert_close(y[0, 0], np.outer(counts, counts) / 2, dtype)
    # no padding, last window runs past the input: divisor is what is left (6, then 4)
    y = F.avg_pool2d(np.arange(16, dtype=dtype).reshape(1, 1, 4, 4), 3, stride=2, ceil_mode=True)
    expected = [[(0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10) / 9, (2 + 3 + 6 + 7 + 10 + 11) / 6],
                [(8 + 9 + 10 + 12 + 13 + 14) / 6, (10 + 11 + 14 + 15) / 4]]  # fmt: skip
    assert_close(y[0, 0], np.array(expected), dtype)


def test_avg_pool2d_padding_counts_as_zero(backend, dtype):
    x = np.arange(1, 10, dtype=dtype).reshape(1, 1, 3, 3)
    y = F.avg_pool2d(x, 2, stride=2, padding=1)
    assert_close(
        y[0, 0], np.array([[1 / 4, (2 + 3) / 4], [(4 + 7) / 4, (5 + 6 + 8 + 9) / 4]]), dtype
    )
    y = F.avg_pool2d(x, 2, stride=2, padding=1, count_include_pad=False)
    assert_close(y[0, 0], np.array([[1, 2.5], [5.5, 7]]), dtype)


def test_avg_pool2d_backward_accumulates_overlapping_windows(backend, dtype):
    g = F.avg_pool2d_backward(np.ones((1, 1, 2, 2), dtype), (1, 1, 3, 3), 2, stride=1)
    assert_close(g[0, 0], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4, dtype)
    g = F.avg_pool2d_backward(
        np.ones((1, 1, 2, 2), dtype), (1, 1, 3, 3), 2, stride=1, divisor_override=1
    )
    assert_close(g[0, 0], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]), dtype)
    assert g.dtype == dtype


def test_avg_pool2d_nan_propagates(backend, dtype):
    x = np.ones((1, 1, 4, 4), dtype)
    x[0, 0, 0, 0] = np.nan
    y = F.avg_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0])
    assert np.all(y.reshape(-1)[1:] == 1)


# ---------------------------------------------------------------------------------------
# Memory layouts, outputs and empty batches

LAYOUTS = ["fortran", "transposed", "sliced", "negative", "readonly", "broadcast"]


def relayout(a, kind):
    """A view of (a variant of) ``a`` with an unusual memory layout."""
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "transposed" and a.ndim >= 2:
        return np.ascontiguousarray(np.swapaxes(a, -1, -2)).swapaxes(-1, -2)
    if kind in ("sliced", "transposed"):
        big = np.zeros(tuple(2 * s + 1 for s in a.shape), a.dtype)
        view = big[tuple(slice(1, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if kind == "negative":
        flip = (slice(None, None, -1),) * a.ndim
        return a[flip].copy()[flip]
    if kind == "readonly":
        ro = a.copy()
        ro.flags.writeable = False
        return ro
    if kind == "broadcast":  # zero strides, read-only; values repeat the first sample
        return np.broadcast_to(a[:1], a.shape)
    raise AssertionError(kind)


def _layout_problem(op, rng, dtype):
    """(function, dict of array arguments) for each op, on small inputs."""
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 2)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    conv_kw = {"stride": (2, 1), "padding": 1}
    pool_kw = {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    if op == "conv2d":
        return (lambda x, w, b: F.conv2d(x, w, b, **conv_kw)), {"x": x, "w": w, "b": b}
    if op == "conv2d_backward":
        g = rng.standard_normal(F.conv2d(x, w, **conv_kw).shape).astype(dtype)
        return (lambda g, x, w: F.conv2d_backward(g, x, w, **conv_kw)), {"g": g, "x": x, "w": w}
    if op == "max_pool2d":
        return (lambda x: F.max_pool2d(x, **pool_kw)), {"x": x}
    if op == "max_pool2d_backward":
        _, idx = F.max_pool2d(x, **pool_kw)
        g = rng.standard_normal(idx.shape).astype(dtype)
        return (lambda g, idx: F.max_pool2d_backward(g, idx, x.shape)), {"g": g, "idx": idx}
    if op == "avg_pool2d":
        return (lambda x: F.avg_pool2d(x, **pool_kw, count_include_pad=False)), {"x": x}
    if op == "avg_pool2d_backward":
        g = rng.standard_normal(F.avg_pool2d(x, **pool_kw).shape).astype(dtype)
        return (lambda g: F.avg_pool2d_backward(g, x.shape, **pool_kw)), {"g": g}
    raise AssertionError(op)


LAYOUT_ARGS = [
    ("conv2d", "x"),
    ("conv2d", "w"),
    ("conv2d", "b"),
    ("conv2d_backward", "g"),
    ("conv2d_backward", "x"),
    ("conv2d_backward", "w"),
    ("max_pool2d", "x"),
    ("max_pool2d_backward", "g"),
    ("max_pool2d_backward", "idx"),
    ("avg_pool2d", "x"),
    ("avg_pool2d_backward", "g"),
]


@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize(("op", "arg"), LAYOUT_ARGS)
def test_unusual_layouts_give_same_results(op, arg, kind, backend, rng):
    dtype = np.dtype(np.float64)
    fn, arrays = _layout_problem(op, rng, dtype)
    odd = relayout(arrays[arg], kind)
    if kind != "broadcast":
        np.testing.assert_array_equal(odd, arrays[arg])
    if kind == "readonly":
        assert not odd.flags.writeable
    elif not (kind == "fortran" and odd.ndim == 1):
        assert not odd.flags.c_contiguous
    before = odd.copy()
    got = as_tuple(fn(**{**arrays, arg: odd}))
    expected = as_tuple(fn(**{**arrays, arg: np.ascontiguousarray(odd)}))
    for g, e in zip(got, expected, strict=True):
        assert g.flags.c_contiguous
        if e.dtype.kind == "f":
            assert_close(g, e, dtype)
        else:
            np.testing.assert_array_equal(g, e)
    np.testing.assert_array_equal(odd, before)  # inputs are never written


@pytest.mark.parametrize("op", sorted({op for op, _ in LAYOUT_ARGS}))
def test_outputs_are_new_c_contiguous_arrays_of_input_dtype(op, backend, dtype, rng):
    fn, arrays = _layout_problem(op, rng, dtype)
    saved = {k: v.copy() for k, v in arrays.items()}
    outputs = as_tuple(fn(**arrays))
    dtypes = (dtype, np.int64) if op == "max_pool2d" else (dtype,) * len(outputs)
    for out, out_dtype in zip(outputs, dtypes, strict=True):
        assert isinstance(out, np.ndarray)
        assert out.flags.c_contiguous and out.flags.writeable
        assert out.dtype == out_dtype
        for a in arrays.values():
            assert not np.shares_memory(out, a)
    for a, b in itertools.combinations(outputs, 2):
        assert not np.shares_memory(a, b)
    for k, v in arrays.items():
        np.testing.assert_array_equal(v, saved[k])
    # a second call gives fresh buffers
    again = as_tuple(fn(**arrays))
    for a, b in zip(outputs, again, strict=True):
        assert not np.shares_memory(a, b)


@pytest.mark.parametrize("padding", [1, "same", "valid"])
def test_conv2d_empty_batch(padding, backend, dtype, rng):
    x = np.empty((0, 3, 5, 6), dtype)
    w = rng.standard_normal((4, 3, 2, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    y = F.conv2d(x, w, b, padding=padding)
    expected = conv_expected_shape(x.shape, w.shape, padding=padding)
    assert y.shape == expected and y.dtype == dtype and y.flags.c_contiguous
    gx, gw, gb = F.conv2d_backward(np.empty(expected, dtype), x, w, padding=padding)
    assert gx.shape == x.shape and gx.dtype == dtype
    np.testing.assert_array_equal(gw, np.zeros(w.shape))
    np.testing.assert_array_equal(gb, np.zeros(4))
    assert gw.dtype == gb.dtype == dtype
    gx, gw, _ = F.conv2d_backward(
        np.empty(expected, dtype), x, w, padding=padding, needs_input_grad=False
    )
    assert gx is None
    np.testing.assert_array_equal(gw, np.zeros(w.shape))


@pytest.mark.parametrize("shape", [(0, 2, 5, 5), (2, 0, 5, 5)])
def test_pooling_empty_batch_or_channels(shape, backend, dtype):
    x = np.empty(shape, dtype)
    y, idx = F.max_pool2d(x, 2, padding=1)
    assert y.shape == idx.shape == (*shape[:2], 3, 3)
    assert y.dtype == dtype and idx.dtype == np.int64
    g = F.max_pool2d_backward(np.empty(y.shape, dtype), idx, shape)
    assert g.shape == shape and g.dtype == dtype
    y = F.avg_pool2d(x, 3, stride=2, ceil_mode=True)
    assert y.shape == (*shape[:2], 2, 2) and y.dtype == dtype
    g = F.avg_pool2d_backward(np.empty(y.shape, dtype), shape, 3, stride=2, ceil_mode=True)
    assert g.shape == shape and g.dtype == dtype


def test_conv2d_single_sample_and_channel(backend, dtype, rng):
    # N = 1, C = 1 with a non-square kernel on a non-square image, against scipy
    x = rng.standard_normal((1, 1, 7, 4))
    w = rng.standard_normal((1, 1, 2, 3))
    got = F.conv2d(x.astype(dtype), w.astype(dtype))
    assert got.shape == (1, 1, 6, 2)
    assert_close(got[0, 0], correlate2d(x[0, 0], w[0, 0], mode="valid").astype(dtype), dtype)


def test_conv2d_with_zero_size_spatial_input_and_padding(backend, dtype):
    # an empty 0x0 image padded by 1 is a 2x2 image of zeros: the output is the bias
    x = np.empty((1, 1, 0, 0), dtype)
    w = np.ones((2, 1, 1, 1), dtype)
    b = np.array([3.0, -1.0], dtype)
    y = F.conv2d(x, w, b, padding=1)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None, None], (1, 2, 2, 2)))
    gx, gw, gb = F.conv2d_backward(np.ones((1, 2, 2, 2), dtype), x, w, padding=1)
    assert gx.shape == (1, 1, 0, 0)
    np.testing.assert_array_equal(gw, np.zeros((2, 1, 1, 1)))
    np.testing.assert_array_equal(gb, [4, 4])


def test_huge_stride_acts_like_a_stride_past_the_input(backend):
    # A stride larger than the padded input gives one window per axis, however large it is.
    x = np.arange(20.0).reshape(1, 1, 4, 5)
    w = np.ones((1, 1, 2, 2))
    expected = F.conv2d(x, w, stride=10)
    for stride in (2**40, 2**63, 2**80):
        try:
            got = F.conv2d(x, w, stride=stride)
        except ValueError as exc:  # rejecting it is fine, if the message says why
            assert "stride" in str(exc)
        else:
            np.testing.assert_array_equal(got, expected)
    expected_pool = F.max_pool2d(x, 2, stride=10)
    for stride in (2**40, 2**63, 2**80):
        try:
            got = F.max_pool2d(x, 2, stride=stride)
        except ValueError as exc:
            assert "stride" in str(exc)
        else:
            np.testing.assert_array_equal(got[0], expected_pool[0])
            np.testing.assert_array_equal(got[1], expected_pool[1])


def test_huge_divisor_override_is_divided_or_rejected(backend):
    # Any positive int is a valid divisor; one too large for the kernels must be refused
    # with a ValueError naming it, not an OverflowError from inside a backend.
    x = np.full((1, 1, 2, 2), 2.0**80)
    for divisor in (2**40, 2**63, 2**80):
        try:
            got = F.avg_pool2d(x, 2, divisor_override=divisor)
        except ValueError as exc:
            assert "divisor_override" in str(exc)
        else:
            np.testing.assert_allclose(got, [[[[4 * 2.0**80 / divisor]]]], rtol=1e-12)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (1, 2, 7, 5), (1, 1, 2, 2), (3, 1, 9, 4)])
def test_pool_2x2_stride2_fast_path_matches_reference(dtype, shape, ceil_mode):
    # The compiled kernels special-case 2x2/stride-2 unpadded pooling; odd sizes (and
    # ceil_mode's partial windows) must fall back, and ties/NaN keep the general rule.
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, shape).astype(dtype)  # many ties
    x[rng.random(shape) < 0.15] = np.nan
    grad = None
    results = {}
    for name in fastcnn.available_backends():
        with fastcnn.use_backend(name):
            y, idx = F.max_pool2d(x, 2, ceil_mode=ceil_mode)
            a = F.avg_pool2d(x, 2, ceil_mode=ceil_mode)
            if grad is None:
                grad = rng.standard_normal(a.shape).astype(dtype)
            ga = F.avg_pool2d_backward(grad, x.shape, 2, ceil_mode=ceil_mode)
            gm = F.max_pool2d_backward(grad, idx, x.shape)
            results[name] = (y, idx, a, ga, gm)
    if "cython" not in results:
        pytest.skip("compiled extension not available: nothing to compare with")
    for got, want in zip(results["cython"], results["numpy"], strict=True):
        np.testing.assert_array_equal(got, want)


# The float32 kernel on AVX-512 (src/small_gemm.c) takes blocks of 6 rows x 64 columns, the
# last columns in 1-4 vectors with the last masked: 17 and 65 columns leave one lane,
# 13 rows a partial block, 129 both.
@pytest.mark.parametrize(
    "n, n_in, n_out",
    [(1, 1, 1), (5, 7, 3), (64, 400, 120), (300, 64, 90), (7, 33, 17), (13, 50, 65),
     (6, 129, 129), (64, 84, 10)],
)  # fmt: skip
def test_linear_matches_reference_and_numpy_matmul(backend, dtype, n, n_in, n_out):
    rng = np.random.default_rng(n * 1000 + n_in)
    x = rng.standard_normal((n, n_in)).astype(dtype)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    g = rng.standard_normal((n, n_out)).astype(dtype)
    y = F.linear(x, w, b)
    gx, gw, gb = F.linear_backward(g, x, w)
    assert y.dtype == dtype and gx.dtype == dtype and gw.dtype == dtype
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    np.testing.assert_allclose(y, x64 @ w64.T + b, **tol(dtype))
    np.testing.assert_allclose(gx, g64 @ w64, **tol(dtype))
    np.testing.assert_allclose(gw, g64.T @ x64, **tol(dtype))
    np.testing.assert_allclose(gb, g64.sum(axis=0), **tol(dtype))
    assert F.linear_backward(g, x, w, needs_input_grad=False)[0] is None


@needs_compiled
@pytest.mark.parametrize(
    "n, n_in, n_out",
    [
        (64, 400, 120),  # batch < features: W's rows are sliced, as in LeNet's head
        (600, 64, 60),  # batch >= features: the batch is sliced
        (3, 700, 1001),  # a slice per thread even at 7 threads; uneven slices
        (1001, 2100, 1),  # one output feature: rows sliced, weight gradient by columns
    ],
)
@pytest.mark.parametrize("threads", [1, 2, 3, 7])
def test_linear_split_over_threads_matches_float64(dtype, n, n_in, n_out, threads):
    # Products of >= 2M multiply-adds are sliced over the OpenMP team (the backward pass
    # gives half the team to each gradient), and every slice must land in its place.
    rng = np.random.default_rng(n + n_out)
    x = rng.standard_normal((n, n_in)).astype(dtype)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    g = rng.standard_normal((n, n_out)).astype(dtype)
    x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
    previous = fastcnn.get_num_threads()
    fastcnn.set_num_threads(threads)
    try:
        with fastcnn.use_backend("cython"):
            y = F.linear(x, w, b)
            gx, gw, gb = F.linear_backward(g, x, w)
            _, gw_only, _ = F.linear_backward(g, x, w, needs_input_grad=False)
    finally:
        fastcnn.set_num_threads(previous)

    def close(got, want, terms):  # rounding grows with the number of summed terms
        t = tol(dtype)
        np.testing.assert_allclose(got, want, rtol=t["rtol"], atol=t["atol"] * terms)

    close(y, x64 @ w64.T + b, n_in)
    close(gx, g64 @ w64, n_out)
    close(gw, g64.T @ x64, n)
    close(gw_only, g64.T @ x64, n)  # the whole team's slices: other rounding than gw
    close(gb, g64.sum(axis=0), n)


def _at_offset(a: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``a`` starting ``offset`` floats past a 64-byte boundary."""
    buf = np.empty(a.size + offset + 16, a.dtype)
    start = (-buf.ctypes.data % 64) // a.itemsize + offset
    out = buf[start : start + a.size].reshape(a.shape)
    out[...] = a
    return out


# The float32 forward pass on AVX-512 reads W as it lies (src/small_gemm.c: gemm_nt) when the
# product is split over threads, else it transposes W. Either way the results may not
# depend on where x and W lie: every offset of x, against an aligned W and against one at
# the same offset, at 1 and 2 threads, gives the same bits. 400 inputs are 25 vectors, 48
# three, 45 two and a masked 13; 7 and 9 are not multiples of the 4 x 4 block.
@needs_compiled
@pytest.mark.parametrize("n, n_in, n_out", [(64, 400, 120), (9, 48, 7), (9, 45, 7)])
@pytest.mark.parametrize("offset", [0, 1, 4, 12, 15])
@pytest.mark.parametrize("w_at_x", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_linear_forward_any_alignment(n, n_in, n_out, offset, w_at_x, threads):
    rng = np.random.default_rng(n_in)
    x = rng.standard_normal((n, n_in)).astype(np.float32)
    w = rng.standard_normal((n_out, n_in)).astype(np.float32)
    b = rng.standard_normal(n_out).astype(np.float32)
    previous = fastcnn.get_num_threads()
    fastcnn.set_num_threads(threads)
    try:
        with fastcnn.use_backend("cython"):
            aligned = F.linear(_at_offset(x, 0), _at_offset(w, 0), b)
            y = F.linear(_at_offset(x, offset), _at_offset(w, offset * w_at_x), b)
    finally:
        fastcnn.set_num_threads(previous)
    np.testing.assert_array_equal(y, aligned)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    bound = np.abs(x64) @ np.abs(w64).T * n_in * np.finfo(np.float32).eps
    assert np.all(np.abs(y - (x64 @ w64.T + b)) <= bound + 1e-6)


def test_linear_gradient_matches_central_differences(backend):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 4))
    w = rng.standard_normal((2, 4))
    b = rng.standard_normal(2)
    r = rng.standard_normal((3, 2))
    gx, gw, gb = F.linear_backward(r, x, w)
    for array, grad in ((x, gx), (w, gw), (b, gb)):
        numeric = np.zeros_like(array)
        for i in np.ndindex(array.shape):
            old = array[i]
            array[i] = old + 1e-6
            up = np.sum(F.linear(x, w, b) * r)
            array[i] = old - 1e-6
            down = np.sum(F.linear(x, w, b) * r)
            array[i] = old
            numeric[i] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((np.ones((2, 3)), np.ones((4, 5))), ValueError, "in_features"),
        ((np.ones((2, 3, 1)), np.ones((4, 3))), ValueError, "x must be 2-D"),
        ((np.ones((2, 3)), np.ones((4, 3), np.float32)), TypeError, "dtype"),
        ((np.ones((2, 3), int), np.ones((4, 3))), TypeError, "float32 or float64"),
        ((np.ones((2, 3)), np.ones((4, 3)), np.ones(5)), ValueError, "bias must have shape"),
    ],
)
def test_linear_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        F.linear(*args)


def test_blas_path_for_float32_matches_when_direct_kernels_are_off():
    # float32 stride-1 convolutions normally run on the SIMD direct kernels; with
    # FASTCNN_DIRECT=0 they take im2col + BLAS. Both must agree with the reference.
    if "cython" not in fastcnn.available_backends():
        pytest.skip("compiled extension not available")
    code = """
import numpy as np, fastcnn, fastcnn.functional as F
from fastcnn._kernels import _conv
assert _conv.direct_simd() == "none", _conv.direct_simd()
rng = np.random.default_rng(0)
for shape, wshape, pad, groups in [((4, 6, 14, 14), (16, 6, 5, 5), 0, 1),
                                   ((3, 4, 9, 7), (6, 2, 3, 3), 1, 2),
                                   ((2, 3, 8, 8), (5, 3, 3, 2), 'same', 1)]:
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(wshape).astype(np.float32)
    y = F.conv2d(x, w, padding=pad, groups=groups)
    g = rng.standard_normal(y.shape).astype(np.float32)
    got = (y,) + F.conv2d_backward(g, x, w, padding=pad, groups=groups)
    with fastcnn.use_backend("numpy"):
        y0 = F.conv2d(x, w, padding=pad, groups=groups)
        want = (y0,) + F.conv2d_backward(g, x, w, padding=pad, groups=groups)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
print("ok")
"""
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTCNN_DIRECT="0")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize("c_out", [4, 6, 8, 12, 16, 20, 30])
@pytest.mark.parametrize("c_in", [1, 3, 6, 16])
def test_float32_direct_kernel_channel_blocks(backend, c_in, c_out):
    # float32 stride-1 convolutions run on register-blocked kernels whose output-channel
    # blocks (6 or 8) pad the channel count; the input gradient swaps the roles of c_in
    # and c_out. Every blocking and padding combination must match float64.
    rng = np.random.default_rng(c_in * 100 + c_out)
    x = rng.standard_normal((3, c_in, 9, 11)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in, 3, 5)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    y = F.conv2d(x, w, b, padding=(1, 2))
    g = rng.standard_normal(y.shape).astype(np.float32)
    got = (y, *F.conv2d_backward(g, x, w, padding=(1, 2)))
    with fastcnn.use_backend("numpy"):
        x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
        want = (F.conv2d(x64, w64, b.astype(np.float64), padding=(1, 2)),
                *F.conv2d_backward(g64, x64, w64, padding=(1, 2)))  # fmt: skip
    for a, e in zip(got, want, strict=True):
        np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-4 * np.abs(e).max())
