"""Datasets: shapes, dtypes and ranges; MNIST from a local file, a mocked fetch, or offline."""

import subprocess
import sys
import urllib.error

import numpy as np
import pytest

from fastcnn import datasets
from fastcnn.datasets import DatasetUnavailableError, load_digits, load_mnist


def test_load_digits():
    X, y = load_digits()
    assert X.shape == (1797, 1, 8, 8) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    from sklearn.datasets import load_digits as sk_load_digits

    reference = sk_load_digits()
    np.testing.assert_allclose(X.reshape(1797, 64), reference.data / 16, rtol=1e-6)
    np.testing.assert_array_equal(y, reference.target)


def _check_mnist(result, n_train, n_test):
    (X_train, y_train), (X_test, y_test) = result
    assert X_train.shape == (n_train, 1, 28, 28) and X_test.shape == (n_test, 1, 28, 28)
    assert X_train.dtype == X_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int64
    assert y_train.shape == (n_train,) and y_test.shape == (n_test,)
    for X in (X_train, X_test):
        assert 0.0 <= X.min() and X.max() <= 1.0
    return result


def test_load_mnist_from_keras_npz(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "y_train": np.arange(6, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "y_test": np.arange(4, dtype=np.uint8),
    }
    np.savez(tmp_path / "mnist.npz", **arrays)
    (X_train, y_train), _ = _check_mnist(load_mnist(tmp_path), 6, 4)
    np.testing.assert_allclose(X_train[:, 0] * 255, arrays["x_train"], rtol=1e-6)
    np.testing.assert_array_equal(y_train, np.arange(6))


def test_load_mnist_rejects_a_foreign_npz(tmp_path):
    np.savez(tmp_path / "mnist.npz", images=np.zeros((2, 28, 28)))
    with pytest.raises(ValueError, match="not an MNIST archive"):
        load_mnist(tmp_path)


def test_load_mnist_through_fetch_openml(monkeypatch, tmp_path):
    # fetch_openml returns flat rows with string labels; the first 60,000 rows are train.
    calls = {}

    def fake_fetch_openml(name, **kwargs):
        calls.update(kwargs, name=name)
        X = np.arange(10 * 784, dtype=np.float64).reshape(10, 784) % 256
        return X, np.array([str(i % 10) for i in range(10)], dtype=object)

    import sklearn.datasets

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch_openml)
    monkeypatch.setattr(datasets, "_MNIST_TRAIN", 7)
    (X_train, y_train), (X_test, y_test) = _check_mnist(load_mnist(tmp_path), 7, 3)
    assert calls["name"] == "mnist_784" and calls["as_frame"] is False
    assert calls["data_home"] == tmp_path
    np.testing.assert_array_equal(y_test, [7, 8, 9])
    assert X_train.max() == 1.0


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError("[Errno -2] Name or service not known"),
        ConnectionResetError("connection reset"),
        TimeoutError("timed out"),
    ],
)
def test_load_mnist_offline_raises_a_clear_error(monkeypatch, tmp_path, error):
    def offline(*args, **kwargs):
        raise error

    import sklearn.datasets

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(DatasetUnavailableError) as info:
        load_mnist(tmp_path)
    message = str(info.value)
    assert "could not be downloaded" in message and "network" in message
    assert str(tmp_path) in message and "mnist.npz" in message
    assert isinstance(info.value, OSError) and info.value.__cause__ is error


def test_importing_fastcnn_does_not_import_sklearn():
    code = (
        "import sys, fastcnn, fastcnn.models, fastcnn.datasets, fastcnn.cli; "
        "print('sklearn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
