"""Both backends against ``torch.nn.functional``: forward values and autograd gradients.

PyTorch is the semantic reference the issue names (conv2d, max_pool2d with
``return_indices=True``, avg_pool2d). Inputs are random normals, plus max pooling over
small integers (ties) with NaNs at random places: PyTorch's CPU kernel picks the last
NaN of a window, and so must fastcnn.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tol

import fastcnn.functional as F

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: comparisons with torch.nn.functional skipped"
)
TF = torch.nn.functional

# PyTorch notes that 'same' with an even kernel copies the input: expected, not a problem.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")


@pytest.fixture(scope="module", autouse=True)
def torch_single_thread():
    """Tiny tensors: one torch thread is fastest and leaves the cores to fastcnn."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def assert_close(got, expected, dtype):
    expected = np.asarray(expected)
    assert got.shape == expected.shape
    assert got.dtype == dtype
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    t = tol(dtype)
    np.testing.assert_allclose(got, expected, rtol=t["rtol"], atol=t["atol"] * scale)


def tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(True)


def case_id(value):
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return "x".join(map(str, value))
    if isinstance(value, dict):
        return "-".join(f"{k[:3]}{v}".replace(" ", "") for k, v in value.items())
    return None


# ---------------------------------------------------------------------------------------
# conv2d


def _conv_cases(count, seed):
    rng = np.random.default_rng(seed)
    cases = [
        # the corners the issue names, then random ones
        ((1, 2, 6, 7), (3, 2, 2, 2), {"padding": "same"}),
        ((2, 2, 5, 6), (2, 2, 4, 3), {"padding": "same", "dilation": (1, 2)}),
        ((1, 1, 7, 5), (2, 1, 2, 3), {"padding": "same", "dilation": (3, 1)}),
        ((2, 3, 5, 6), (2, 3, 3, 3), {"padding": "valid", "stride": (1, 2)}),
        ((2, 4, 6, 5), (4, 1, 3, 3), {"groups": 4, "padding": 1, "stride": 2}),
        ((2, 4, 6, 5), (6, 2, 3, 2), {"groups": 2, "dilation": 2, "padding": (2, 1)}),
        ((1, 2, 3, 4), (2, 2, 5, 6), {"padding": 1}),
        ((3, 3, 5, 5), (4, 3, 1, 1), {}),
        ((2, 2, 9, 7), (3, 2, 3, 3), {"stride": 3, "padding": 2, "dilation": 2}),
    ]
    while len(cases) < count:
        groups = int(rng.choice([1, 1, 2, 3]))
        c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
        k = tuple(int(v) for v in rng.integers(1, 5, size=2))
        d = tuple(int(v) for v in rng.integers(1, 3, size=2))
        hw = tuple(int(v) for v in rng.integers(1, 10, size=2))
        kwargs = {"dilation": d, "groups": groups}
        if rng.random() < 0.25:
            kwargs["padding"] = "same"
            pads = tuple(dd * (kk - 1) for kk, dd in zip(k, d, strict=True))
        else:
            p = tuple(int(v) for v in rng.integers(0, 3, size=2))
            kwargs["padding"], kwargs["stride"] = p, tuple(int(v) for v in rng.integers(1, 4, 2))
            pads = (2 * p[0], 2 * p[1])
        if any(d[a] * (k[a] - 1) + 1 > hw[a] + pads[a] for a in range(2)):
            continue
        cases.append(((int(rng.integers(1, 4)), c_in, *hw), (c_out, c_in // groups, *k), kwargs))
    return cases


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), _conv_cases(40, 11), ids=case_id)
def test_conv2d_matches_torch(x_shape, w_shape, kwargs, backend, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    tx, tw, tb = tensor(x), tensor(w), tensor(b)
    ty = TF.conv2d(tx, tw, tb, **kwargs)
    y = F.conv2d(x, w, b, **kwargs)
    assert_close(y, ty.detach().numpy(), dtype)

    r = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(r))
    gx, gw, gb = F.conv2d_backward(r, x, w, **kwargs)
    assert_close(gx, tx.grad.numpy(), dtype)
    assert_close(gw, tw.grad.numpy(), dtype)
    assert_close(gb, tb.grad.numpy(), dtype)


# ---------------------------------------------------------------------------------------
# Pooling


def _pool_out(size, k, s, p, d, ceil_mode):
    """PyTorch's pooling_output_shape: floor division of a rounded-up span in ceil_mode,
    then drop a last window that would start in the right padding."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return max(out, 0)


def _pool_cases(count, seed, dilation):
    rng = np.random.default_rng(seed)
    cases = [
        ((1, 2, 5, 5), {"kernel_size": 2, "stride": 2, "padding": 1, "ceil_mode": True}),
        ((1, 2, 4, 7), {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
        ((2, 1, 4, 4), {"kernel_size": 3, "stride": 2, "ceil_mode": True}),
        ((2, 2, 6, 5), {"kernel_size": 3, "stride": 1, "padding": 1}),
        ((1, 1, 3, 3), {"kernel_size": 5, "stride": 1, "padding": 2}),
    ]
    while len(cases) < count:
        k = tuple(int(v) for v in rng.integers(1, 5, size=2))
        s = tuple(int(v) for v in rng.integers(1, 4, size=2))
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        d = tuple(int(v) for v in rng.integers(1, 3, size=2)) if dilation else (1, 1)
        ceil_mode = bool(rng.integers(0, 2))
        hw = tuple(int(v) for v in rng.integers(1, 10, size=2))
        outs = [_pool_out(hw[a], k[a], s[a], p[a], d[a], ceil_mode) for a in range(2)]
        if min(outs) < 1:
            continue
        # fastcnn rejects windows made only of padding; PyTorch returns -inf for them
        if not all(
            any(0 <= o * s[a] - p[a] + i * d[a] < hw[a] for i in range(k[a]))
            for a in range(2)
            for o in range(outs[a])
        ):
            continue
        kwargs = {"kernel_size": k, "stride": s, "padding": p, "ceil_mode": ceil_mode}
        if dilation:
            kwargs["dilation"] = d
        cases.append(((int(rng.integers(1, 3)), int(rng.integers(1, 3)), *hw), kwargs))
    return cases


@pytest.mark.parametrize(("x_shape", "kwargs"), _pool_cases(40, 12, dilation=True), ids=case_id)
def test_max_pool2d_matches_torch(x_shape, kwargs, backend, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    tx = tensor(x)
    ty, tidx = TF.max_pool2d(tx, **kwargs, return_indices=True)
    y, idx = F.max_pool2d(x, **kwargs)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    assert idx.dtype == np.int64

    r = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(r))
    assert_close(F.max_pool2d_backward(r, idx, x.shape), tx.grad.numpy(), dtype)


# The compiled kernel's 2x2 stride-2 path, then windows of every other kind.
NAN_POOL_CASES = [
    ((2, 3, 6, 8), {"kernel_size": 2}),
    ((1, 2, 7, 5), {"kernel_size": 2}),
    ((1, 2, 7, 5), {"kernel_size": 2, "ceil_mode": True}),
    *_pool_cases(40, 14, dilation=True),
]


@pytest.mark.parametrize("nan_fraction", [0.1, 0.5])
@pytest.mark.parametrize(("x_shape", "kwargs"), NAN_POOL_CASES, ids=case_id)
def test_max_pool2d_nan_and_tie_indices_match_torch(x_shape, kwargs, nan_fraction, backend, dtype):
    # Windows holding several NaNs, and ties: the same values and the same indices as
    # PyTorch, so the gradient goes to the same place.
    rng = np.random.default_rng(sum(x_shape) + int(100 * nan_fraction))
    x = rng.integers(0, 3, x_shape).astype(dtype)
    x[rng.random(x_shape) < nan_fraction] = np.nan
    tx = tensor(x)
    ty, tidx = TF.max_pool2d(tx, **kwargs, return_indices=True)
    y, idx = F.max_pool2d(x, **kwargs)
    np.testing.assert_array_equal(y, ty.detach().numpy())  # NaN where NaN
    np.testing.assert_array_equal(idx, tidx.numpy())
    r = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(r))
    assert_close(F.max_pool2d_backward(r, idx, x.shape), tx.grad.numpy(), dtype)


AVG_OPTIONS = [
    {"count_include_pad": True, "divisor_override": None},
    {"count_include_pad": False, "divisor_override": None},
    {"count_include_pad": True, "divisor_override": 5},
    {"count_include_pad": False, "divisor_override": 1},
]


@pytest.mark.parametrize(("x_shape", "kwargs"), _pool_cases(24, 13, dilation=False), ids=case_id)
def test_avg_pool2d_matches_torch(x_shape, kwargs, backend, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    for options in AVG_OPTIONS:
        tx = tensor(x)
        ty = TF.avg_pool2d(tx, **kwargs, **options)
        y = F.avg_pool2d(x, **kwargs, **options)
        assert_close(y, ty.detach().numpy(), dtype)
        r = rng.standard_normal(y.shape).astype(dtype)
        ty.backward(torch.from_numpy(r))
        assert_close(
            F.avg_pool2d_backward(r, x.shape, **kwargs, **options), tx.grad.numpy(), dtype
        )


def test_pooling_output_sizes_match_torch_over_a_grid(backend):
    """Every small (size, kernel, stride, padding, dilation, ceil_mode) combination: same
    output shape and values as PyTorch, or an error exactly where PyTorch has one (or
    where fastcnn documents refusing windows made only of padding, which PyTorch fills
    with -inf)."""
    rng = np.random.default_rng(5)
    checked = refused = 0
    mismatches = []
    for h in range(1, 8):
        w = 9 - h
        x = rng.standard_normal((1, 2, h, w))
        tx = torch.from_numpy(x)
        for k, s, d, ceil_mode in np.ndindex(4, 3, 2, 2):
            k, s, d, ceil_mode = k + 1, s + 1, d + 1, bool(ceil_mode)
            for p in range(k // 2 + 1):
                kw = {"kernel_size": k, "stride": s, "padding": p, "ceil_mode": ceil_mode}
                where = f"x {x.shape}, {kw}, dilation={d}"
                try:
                    ty, tidx = TF.max_pool2d(tx, **kw, dilation=d, return_indices=True)
                except RuntimeError:
                    ty = None
                try:
                    y, idx = F.max_pool2d(x, **kw, dilation=d)
                except ValueError as exc:
                    only_padding = "only padding" in str(exc)
                    if ty is not None and not (only_padding and np.isneginf(ty.numpy()).any()):
                        mismatches.append(f"{where}: torch {tuple(ty.shape)}, fastcnn {exc}")
                    refused += 1
                    continue
                if ty is None:
                    mismatches.append(f"{where}: torch raises, fastcnn gives {y.shape}")
                    continue
                np.testing.assert_array_equal(y, ty.numpy(), err_msg=where)
                np.testing.assert_array_equal(idx, tidx.numpy(), err_msg=where)
                if d == 1:
                    for cip in (True, False):
                        ta = TF.avg_pool2d(tx, **kw, count_include_pad=cip).numpy()
                        a = F.avg_pool2d(x, **kw, count_include_pad=cip)
                        np.testing.assert_allclose(a, ta, rtol=1e-12, atol=1e-12, err_msg=where)
                checked += 1
    assert not mismatches, f"{len(mismatches)} mismatches, e.g.\n" + "\n".join(mismatches[:8])
    assert checked > 300 and refused > 50  # the grid really exercises both outcomes
