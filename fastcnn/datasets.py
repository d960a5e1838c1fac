"""Image datasets as NCHW float32 arrays in [0, 1], ready for a CNN.

:func:`load_digits` reads the copy of the UCI digits that ships inside scikit-learn, so it
works offline. :func:`load_mnist` goes through scikit-learn's OpenML fetcher and its
on-disk cache (or a Keras-style ``mnist.npz`` placed in ``data_home``). scikit-learn is
imported inside the functions: ``import fastcnn`` stays fast.
"""

from __future__ import annotations

import os
import urllib.error
from http.client import HTTPException
from typing import TYPE_CHECKING

import numpy as np

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["DatasetUnavailableError", "load_digits", "load_mnist"]

_MNIST_NPZ = "mnist.npz"
_MNIST_TRAIN = 60_000


class DatasetUnavailableError(OSError):
    """A dataset is neither cached locally nor downloadable (e.g. no network access)."""


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """Load the 1,797 8x8 handwritten digits bundled with scikit-learn (no download).

    Returns
    -------
    X : ndarray of shape (1797, 1, 8, 8), float32
        Pixel intensities scaled from 0..16 to [0, 1].
    y : ndarray of shape (1797,), int64
        Digit labels 0..9.

    Examples
    --------
    >>> from fastcnn.datasets import load_digits
    >>> X, y = load_digits()
    >>> X.shape, X.dtype, y[:5]
    ((1797, 1, 8, 8), dtype('float32'), array([0, 1, 2, 3, 4]))
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    X = (bunch.images / np.float32(16.0)).astype(np.float32).reshape(-1, 1, 8, 8)
    y = np.asarray(bunch.target, dtype=np.int64)
    return X, y


# (X_train, y_train), (X_test, y_test)
_Split = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def _mnist_from_npz(path: str) -> _Split:
    # The layout Keras downloads: x_train (60000, 28, 28) uint8, y_train, x_test, y_test.
    with np.load(path, allow_pickle=False) as data:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
        if missing:
            raise ValueError(
                f"{path!r} is not an MNIST archive: it lacks {sorted(missing)} "
                "(expected x_train, y_train, x_test, y_test as in keras.datasets.mnist)"
            )
        arrays = [data[key] for key in ("x_train", "y_train", "x_test", "y_test")]
    return _mnist_arrays(*arrays)


def _mnist_arrays(
    x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike, y_test: ArrayLike
) -> _Split:
    def images(x: ArrayLike) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[1:] not in ((784,), (28, 28), (1, 28, 28)):
            raise ValueError(f"MNIST images must be 28x28, got array of shape {x.shape}")
        x = x.reshape(-1, 1, 28, 28).astype(np.float32)
        if x.size and x.max() > 1.0:
            x /= np.float32(255.0)
        return x

    return (
        (images(x_train), np.asarray(y_train).astype(np.int64)),
        (images(x_test), np.asarray(y_test).astype(np.int64)),
    )


def load_mnist(
    data_home: str | os.PathLike[str] | None = None,
) -> _Split:
    """MNIST, 70,000 28x28 handwritten digits, in the usual 60,000/10,000 train/test split.

    Looks first for ``<data_home>/mnist.npz`` (the file ``keras.datasets.mnist`` downloads:
    ``x_train``, ``y_train``, ``x_test``, ``y_test``), then asks scikit-learn's
    ``fetch_openml('mnist_784', version=1)``, which reads its cache under ``data_home`` and
    downloads (about 15 MB) only when that is empty.

    Parameters
    ----------
    data_home : str or path-like, optional
        scikit-learn's data directory (``sklearn.datasets.get_data_home()``, by default
        ``~/scikit_learn_data`` or ``$SCIKIT_LEARN_DATA``).

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        X of shape (N, 1, 28, 28), float32 in [0, 1]; y int64 labels 0..9.
        N is 60,000 for train and 10,000 for test.

    Raises
    ------
    DatasetUnavailableError
        If the data is not cached and cannot be downloaded (no network access). The
        message says where to put the files.
    """
    from sklearn.datasets import fetch_openml, get_data_home

    home = get_data_home(data_home)
    npz = os.path.join(home, _MNIST_NPZ)
    if os.path.isfile(npz):
        return _mnist_from_npz(npz)
    try:
        X, y = fetch_openml(
            "mnist_784",
            version=1,
            as_frame=False,
            return_X_y=True,
            data_home=data_home,
            parser="liac-arff",
        )
    except (OSError, urllib.error.URLError, HTTPException, TimeoutError) as exc:
        raise DatasetUnavailableError(
            "MNIST is not in the local cache and could not be downloaded from OpenML "
            f"({type(exc).__name__}: {exc}). This machine may have no network access. "
            "To use MNIST offline, either run fastcnn.datasets.load_mnist() once on a "
            "machine with network access and copy scikit-learn's data directory "
            f"(its 'openml' folder) to {home!r} (or pass data_home=, or set "
            f"SCIKIT_LEARN_DATA), or put a Keras-style {_MNIST_NPZ!r} (arrays x_train, "
            f"y_train, x_test, y_test) at {npz!r}."
        ) from exc
    return _mnist_arrays(X[:_MNIST_TRAIN], y[:_MNIST_TRAIN], X[_MNIST_TRAIN:], y[_MNIST_TRAIN:])
