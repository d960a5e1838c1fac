"""pad2d: PyTorch, the numpy oracle, central differences."""

import numpy as np
import pytest
from conftest import numerical_grad, tol
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
import fastcnn.functional as F

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: comparisons with torch.nn.functional skipped"
)
TF = torch.nn.functional
MODES = ["zeros", "reflect", "replicate", "circular"]
TORCH_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
              "circular": "circular"}  # fmt: skip


def assert_close(got, expected, dtype):
    expected = np.asarray(expected)
    assert got.shape == expected.shape
    assert got.dtype == dtype
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    t = tol(dtype)
    assert_allclose(got, expected, rtol=t["rtol"], atol=t["atol"] * scale)


def tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(True)


# (x shape, pads): odd sizes, asymmetric pads, pads as large as each mode allows.
PAD_CASES = [
    ((2, 3, 5, 4), (0, 0, 0, 0)),
    ((1, 2, 5, 4), (1, 2, 3, 0)),
    ((2, 1, 3, 3), (2, 2, 2, 2)),
    ((1, 2, 6, 4), (3, 1, 0, 5)),
    ((3, 1, 2, 7), (0, 6, 1, 1)),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("x_shape", "pads"), PAD_CASES)
def test_pad2d_matches_torch(x_shape, pads, mode, backend, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    tx = tensor(x)
    ty = TF.pad(tx, pads, TORCH_MODE[mode])
    y = F.pad2d(x, pads, mode)
    assert_array_equal(y, ty.detach().numpy(), strict=True)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g))
    assert_close(F.pad2d_backward(g, x.shape, pads, mode), tx.grad.numpy(), dtype)


@pytest.mark.parametrize("mode", MODES)
def test_pad2d_compiled_matches_the_numpy_reference(mode, dtype, rng):
    if "cython" not in fastcnn.available_backends():
        pytest.skip(f"compiled extension not importable: {fastcnn.backend_import_error()}")
    x = rng.standard_normal((4, 5, 9, 8)).astype(dtype)
    pads = (3, 7, 8, 2)
    out = {}
    for name in ("numpy", "cython"):
        with fastcnn.use_backend(name):
            y = F.pad2d(x, pads, mode)
            g = np.linspace(-1, 1, y.size, dtype=dtype).reshape(y.shape)
            out[name] = (y, F.pad2d_backward(g, x.shape, pads, mode))
    assert_array_equal(out["cython"][0], out["numpy"][0], strict=True)
    assert_close(out["cython"][1], out["numpy"][1], dtype)


@pytest.mark.parametrize("mode", MODES)
def test_pad2d_backward_matches_central_differences(mode, backend, rng):
    x = rng.standard_normal((1, 2, 3, 4))
    pads = (3, 1, 2, 2)
    weights = rng.standard_normal(F.pad2d(x, pads, mode).shape)
    grad = F.pad2d_backward(weights, x.shape, pads, mode)
    numeric = numerical_grad(lambda: float((F.pad2d(x, pads, mode) * weights).sum()), x)
    assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def test_pad2d_empty_batches(backend, dtype):
    x = np.zeros((0, 2, 3, 3), dtype)
    assert F.pad2d(x, (1, 1, 2, 2), "reflect").shape == (0, 2, 7, 5)
    assert F.pad2d_backward(np.zeros((0, 2, 7, 5), dtype), x.shape, (1, 1, 2, 2),
                            "reflect").shape == (0, 2, 3, 3)  # fmt: skip


@pytest.mark.parametrize(
    ("pads", "mode", "error", "match"),
    [
        ((3, 0, 0, 0), "reflect", ValueError, "smaller than the input width 3"),
        ((0, 0, 0, 4), "reflect", ValueError, "smaller than the input height 4"),
        ((4, 0, 0, 0), "circular", ValueError, "at most the input width 3"),
        ((-1, 0, 0, 0), "zeros", ValueError, "non-negative"),
        ((1, 1), "zeros", TypeError, "4 ints"),
        ((1, 1, 1, 1), "constant", ValueError, "padding mode must be one of"),
    ],
)
def test_pad2d_errors(pads, mode, error, match):
    with pytest.raises(error, match=match):
        F.pad2d(np.zeros((1, 1, 4, 3)), pads, mode)


def test_pad2d_backward_errors():
    with pytest.raises(ValueError, match=r"grad_out must have shape \(1, 1, 6, 5\)"):
        F.pad2d_backward(np.zeros((1, 1, 6, 6)), (1, 1, 4, 3), (1, 1, 1, 1), "replicate")
    with pytest.raises(TypeError, match="input_shape"):
        F.pad2d_backward(np.zeros((1, 1, 6, 5)), np.zeros((1, 1, 4, 3)), (1, 1, 1, 1))
