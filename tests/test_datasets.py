"""Datasets: shapes, dtypes and ranges; MNIST from a local file, a mocked fetch, or offline."""

import os
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


# ---------------------------------------------------------------------------------------
# CIFAR-10


def _fake_cifar_rows(n):
    """Rows as OpenML stores CIFAR-10: 3072 values per image, the R, G, B planes in turn,
    each row-major; labels as strings. Pixel (c, i, j) of image k is k + 10c + i + j."""
    k, c, i, j = np.meshgrid(np.arange(n), np.arange(3), np.arange(32), np.arange(32),
                             indexing="ij")  # fmt: skip
    return (k + 10 * c + i + j).reshape(n, 3072).astype(np.float64), np.array(
        [str(v % 10) for v in range(n)], dtype=object
    )


def test_load_cifar10_through_fetch_openml(monkeypatch, tmp_path):
    calls = {}

    def fake_fetch_openml(name, **kwargs):
        calls.update(kwargs, name=name)
        return _fake_cifar_rows(7)

    import sklearn.datasets

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch_openml)
    monkeypatch.setattr(datasets, "_CIFAR_TRAIN", 5)
    (X_train, y_train), (X_test, y_test) = datasets.load_cifar10(tmp_path)
    assert calls["name"] == "CIFAR_10" and calls["as_frame"] is False
    assert calls["data_home"] == tmp_path
    assert X_train.shape == (5, 3, 32, 32) and X_test.shape == (2, 3, 32, 32)
    assert X_train.dtype == X_test.dtype == np.float32
    assert y_train.dtype == np.int64 and y_train.tolist() == [0, 1, 2, 3, 4]
    assert y_test.tolist() == [5, 6]
    # Channel-major rows: channel c of image k at (i, j) holds k + 10c + i + j, over 255.
    k, c, i, j = 6, 2, 3, 17
    assert X_test[k - 5, c, i, j] * 255 == pytest.approx(k + 10 * c + i + j)
    assert 0.0 <= X_train.min() and X_train.max() <= 1.0


def test_load_cifar10_from_keras_npz(tmp_path):
    # keras.datasets.cifar10.load_data(): NHWC uint8 images, labels of shape (N, 1).
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    np.savez(tmp_path / "cifar10.npz", x_train=x_train, y_train=np.arange(4)[:, None],
             x_test=x_test, y_test=np.array([[9], [8]]))  # fmt: skip
    (X_train, y_train), (X_test, y_test) = datasets.load_cifar10(tmp_path)
    assert X_train.shape == (4, 3, 32, 32) and X_train.dtype == np.float32
    np.testing.assert_allclose(X_train * 255, x_train.transpose(0, 3, 1, 2), rtol=1e-6)
    assert y_train.tolist() == [0, 1, 2, 3] and y_test.tolist() == [9, 8]
    assert y_test.dtype == np.int64 and X_test.flags.c_contiguous


def test_load_cifar10_rejects_foreign_arrays(tmp_path):
    np.savez(tmp_path / "cifar10.npz", images=np.zeros((2, 32, 32, 3)))
    with pytest.raises(ValueError, match="not a CIFAR-10 archive"):
        datasets.load_cifar10(tmp_path)
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((2, 28, 28)), y_train=[0, 1],
             x_test=np.zeros((1, 28, 28)), y_test=[0])  # fmt: skip
    with pytest.raises(ValueError, match="32x32 RGB"):
        datasets.load_cifar10(tmp_path)


def test_load_cifar10_offline_raises_a_clear_error(monkeypatch, tmp_path):
    error = urllib.error.URLError("[Errno -2] Name or service not known")

    def offline(*args, **kwargs):
        raise error

    import sklearn.datasets

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(DatasetUnavailableError) as info:
        datasets.load_cifar10(tmp_path)
    message = str(info.value)
    assert "CIFAR-10" in message and "could not be downloaded" in message
    assert str(tmp_path) in message and "cifar10.npz" in message
    assert info.value.__cause__ is error


def test_load_cifar10_without_network(tmp_path):
    # The real fetcher, through a proxy that refuses connections: offline on any machine.
    proxy = "http://127.0.0.1:9"
    code = (
        "import sys\n"
        "from fastcnn.datasets import DatasetUnavailableError, load_cifar10\n"
        "try:\n"
        "    load_cifar10(sys.argv[1])\n"
        "except DatasetUnavailableError as exc:\n"
        "    print('unavailable:', exc)\n"
    )
    env = {**os.environ, "https_proxy": proxy, "HTTPS_PROXY": proxy,
           "http_proxy": proxy, "HTTP_PROXY": proxy, "no_proxy": "", "NO_PROXY": "",
           "PYTHONPATH": os.pathsep.join(sys.path)}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "empty")], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.stdout.startswith("unavailable: CIFAR-10 is not in the local cache"), out.stderr
