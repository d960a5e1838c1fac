"""Shared fixtures: every numeric test runs on both backends and both float dtypes."""

import numpy as np
import pytest

import fastcnn

# Per-dtype tolerances for comparing the compiled backend with the numpy reference.
TOLERANCES = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}


def _compiled_available() -> bool:
    return "cython" in fastcnn.available_backends()


@pytest.fixture(params=[np.float32, np.float64], ids=["f32", "f64"])
def dtype(request):
    """Both float dtypes the library supports."""
    return np.dtype(request.param)


@pytest.fixture(params=["numpy", "cython"])
def backend(request):
    """Run the test with each backend active; restores the previous one afterwards."""
    if request.param == "cython" and not _compiled_available():
        pytest.skip(f"compiled extension not importable: {fastcnn.backend_import_error()}")
    with fastcnn.use_backend(request.param):
        yield request.param


@pytest.fixture
def rng():
    """A seeded generator so every test is reproducible."""
    return np.random.default_rng(12345)


def numerical_grad(f, array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar ``f()`` w.r.t. every element of ``array`` (float64),
    perturbing ``array`` in place and restoring it."""
    grad = np.zeros(array.shape)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        f_plus = f()
        flat[i] = old - eps
        f_minus = f()
        flat[i] = old
        out[i] = (f_plus - f_minus) / (2 * eps)
    return grad


def tol(dtype) -> dict:
    """Tolerance keyword arguments for ``np.testing.assert_allclose``."""
    return TOLERANCES[np.dtype(dtype)]


@pytest.fixture(autouse=True)
def _run_in_scratch_dir(tmp_path, monkeypatch):
    """Run every test in its own empty directory.

    Files a test writes by relative path land there, and a subprocess it starts
    (``python -c ...``) imports the installed fastcnn rather than the source tree of a
    non-editable checkout, whose kernels are not compiled in place.
    """
    monkeypatch.chdir(tmp_path)
