"""Image datasets as NCHW float32 arrays in [0, 1], ready for a CNN.

:func:`load_digits` reads the copy of the UCI digits that ships inside scikit-learn, so it
works offline. :func:`load_mnist` and :func:`load_cifar10` go through scikit-learn's
OpenML fetcher and its on-disk cache (or a Keras-style ``.npz`` placed in ``data_home``).
:func:`make_shapes` draws a synthetic RGB set of coloured shapes, computed on the spot.
scikit-learn is imported inside the functions: ``import fastcnn`` stays fast.
"""

from __future__ import annotations

import numbers
import os
import urllib.error
from collections.abc import Sequence
from http.client import HTTPException
from typing import TYPE_CHECKING

import numpy as np

from fastcnn._validation import check_rng

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "CIFAR10_CLASSES",
    "SHAPES",
    "DatasetUnavailableError",
    "load_cifar10",
    "load_digits",
    "load_mnist",
    "make_shapes",
]

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


def _fetch_openml(
    name: str, label: str, data_home: str | os.PathLike[str] | None, offline: str
) -> tuple[np.ndarray, np.ndarray]:
    """Return OpenML's ``name`` through scikit-learn's cache, or say how to get it offline.

    ``offline`` is the advice the DatasetUnavailableError gives after "To use {label}
    offline, either ...".
    """
    from sklearn.datasets import fetch_openml

    try:
        X, y = fetch_openml(
            name, version=1, as_frame=False, return_X_y=True, data_home=data_home,
            parser="liac-arff",
        )  # fmt: skip
    except (OSError, urllib.error.URLError, HTTPException, TimeoutError) as exc:
        raise DatasetUnavailableError(
            f"{label} is not in the local cache and could not be downloaded from OpenML "
            f"({type(exc).__name__}: {exc}). This machine may have no network access. "
            f"To use {label} offline, either {offline}"
        ) from exc
    return X, y


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
    from sklearn.datasets import get_data_home

    home = get_data_home(data_home)
    npz = os.path.join(home, _MNIST_NPZ)
    if os.path.isfile(npz):
        return _mnist_from_npz(npz)
    X, y = _fetch_openml(
        "mnist_784",
        "MNIST",
        data_home,
        f"run fastcnn.datasets.load_mnist() once on a machine with network access and copy "
        f"scikit-learn's data directory (its 'openml' folder) to {home!r} (or pass "
        f"data_home=, or set SCIKIT_LEARN_DATA), or put a Keras-style {_MNIST_NPZ!r} "
        f"(arrays x_train, y_train, x_test, y_test) at {npz!r}.",
    )
    return _mnist_arrays(X[:_MNIST_TRAIN], y[:_MNIST_TRAIN], X[_MNIST_TRAIN:], y[_MNIST_TRAIN:])


# ---------------------------------------------------------------------------------------
# CIFAR-10

_CIFAR_NPZ = "cifar10.npz"
_CIFAR_TRAIN = 50_000
#: CIFAR-10's class names, by label.
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


def _cifar_images(x: ArrayLike) -> np.ndarray:
    """Return CIFAR images as (N, 3, 32, 32) float32 in [0, 1].

    Takes the rows OpenML stores (3072 values: the red plane, then green, then blue, each
    row-major, as in CIFAR's own files), NCHW arrays, or NHWC arrays as Keras gives them.
    """
    images = np.asarray(x)
    if images.shape[1:] == (32, 32, 3):
        images = images.transpose(0, 3, 1, 2)
    elif images.shape[1:] not in ((3072,), (3, 32, 32)):
        raise ValueError(
            "CIFAR-10 images must be rows of 3072 values or 32x32 RGB arrays, got array "
            f"of shape {images.shape}"
        )
    images = np.ascontiguousarray(images.reshape(-1, 3, 32, 32), dtype=np.float32)
    if images.size and images.max() > 1.0:
        images /= np.float32(255.0)
    return images


def _cifar_split(X: ArrayLike, y: ArrayLike, n_train: int) -> _Split:
    X, y = _cifar_images(X), np.asarray(y).astype(np.int64).reshape(-1)
    return (X[:n_train], y[:n_train]), (X[n_train:], y[n_train:])


def _cifar_from_npz(path: str) -> _Split:
    with np.load(path, allow_pickle=False) as data:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(data.files)
        if missing:
            raise ValueError(
                f"{path!r} is not a CIFAR-10 archive: it lacks {sorted(missing)} (expected "
                "x_train, y_train, x_test, y_test as keras.datasets.cifar10.load_data gives)"
            )
        x_train, y_train, x_test, y_test = (
            data[key] for key in ("x_train", "y_train", "x_test", "y_test")
        )
    train, _ = _cifar_split(x_train, y_train, len(x_train))
    test, _ = _cifar_split(x_test, y_test, len(x_test))
    return train, test


def load_cifar10(
    data_home: str | os.PathLike[str] | None = None,
) -> _Split:
    """Load CIFAR-10: 60,000 32x32 colour images of 10 classes, 50,000 train / 10,000 test.

    Looks first for ``<data_home>/cifar10.npz`` (arrays ``x_train``, ``y_train``,
    ``x_test``, ``y_test``; the images as Keras's ``cifar10.load_data()`` gives them,
    (N, 32, 32, 3) uint8, or as (N, 3, 32, 32) or (N, 3072) rows), then asks
    scikit-learn's ``fetch_openml('CIFAR_10', version=1)``, which reads its cache under
    ``data_home`` and downloads (about 180 MB of ARFF) only when that is empty. OpenML
    keeps CIFAR's own order, the five training batches then the test batch, and its own
    pixel layout, the red plane, then green, then blue: both are kept here.

    Parameters
    ----------
    data_home : str or path-like, optional
        scikit-learn's data directory (``sklearn.datasets.get_data_home()``, by default
        ``~/scikit_learn_data`` or ``$SCIKIT_LEARN_DATA``).

    Returns
    -------
    (X_train, y_train), (X_test, y_test)
        X of shape (N, 3, 32, 32), float32 in [0, 1], RGB; y int64 labels 0..9, named
        by :data:`CIFAR10_CLASSES`. N is 50,000 for train and 10,000 for test.

    Raises
    ------
    DatasetUnavailableError
        If the data is not cached and cannot be downloaded (no network access). The
        message says where to put the files.
    """
    from sklearn.datasets import get_data_home

    home = get_data_home(data_home)
    npz = os.path.join(home, _CIFAR_NPZ)
    if os.path.isfile(npz):
        return _cifar_from_npz(npz)
    X, y = _fetch_openml(
        "CIFAR_10",
        "CIFAR-10",
        data_home,
        f"run fastcnn.datasets.load_cifar10() once on a machine with network access and "
        f"copy scikit-learn's data directory (its 'openml' folder) to {home!r} (or pass "
        f"data_home=, or set SCIKIT_LEARN_DATA), or save the arrays of "
        f"keras.datasets.cifar10.load_data() (x_train, y_train, x_test, y_test) with "
        f"numpy.savez to {npz!r}.",
    )
    return _cifar_split(X, y, _CIFAR_TRAIN)


# ---------------------------------------------------------------------------------------
# A synthetic RGB set that ships as code

#: The shapes :func:`make_shapes` can draw, in their default label order.
SHAPES = ("square", "disc", "triangle", "stripes")


def _signed_distance(kind: str, u: np.ndarray, v: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Return the distance in pixels from each point (u, v) to the edge of ``kind``.

    Negative inside. ``u``, ``v`` are the points in the shape's own frame (centred,
    rotated), of shape (n, H, W); ``size`` (n, 1, 1) is the shape's half-width.
    """
    distance: np.ndarray
    square = np.maximum(np.abs(u), np.abs(v)) - size
    if kind == "disc":
        distance = np.sqrt(u * u + v * v) - size
    elif kind == "square":
        distance = square
    elif kind == "triangle":
        # Equilateral: the largest of the distances along the three edge normals, less
        # the inradius (half the circumradius, which is 1.3 * size so the areas compare).
        edges = [np.cos(a) * u + np.sin(a) * v for a in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6)]
        distance = np.maximum(np.maximum(edges[0], edges[1]), edges[2]) - 0.65 * size
    else:
        # stripes: bands across u, about four per square (never under 3 pixels a period,
        # so they stay stripes rather than a blur), clipped to the square.
        period = np.maximum(size / 2, np.float32(3.0))
        band = np.abs((u / period) % 1.0 - 0.5) * period - period / 4
        distance = np.maximum(square, band)
    return distance


def _coverage(
    kinds: tuple[str, ...],
    y: np.ndarray,
    half: np.ndarray,
    angle: np.ndarray,
    dy: np.ndarray,
    dx: np.ndarray,
) -> np.ndarray:
    """Return how much of each pixel each image's shape covers, (n, H, W) in [0, 1].

    ``dy`` (n, H, 1) and ``dx`` (n, 1, W) place the pixel centres relative to the
    shape's centre.
    """
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = cos * dx + sin * dy, cos * dy - sin * dx  # the shape's own frame
    alpha = np.empty(u.shape, dtype=np.float32)
    for label, kind in enumerate(kinds):
        rows = np.flatnonzero(y == label)
        distance = _signed_distance(kind, u[rows], v[rows], half[rows, None, None])
        alpha[rows] = np.clip(np.float32(0.5) - distance, 0.0, 1.0)  # a pixel-wide edge
    return alpha


def make_shapes(
    n: int = 1000,
    image_size: int = 32,
    *,
    classes: Sequence[str] = SHAPES,
    noise: float = 0.05,
    random_state: int | np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a seeded synthetic set of coloured shapes on coloured backgrounds.

    Each image holds one shape: a square, a disc, a triangle or a square patch of
    stripes, at a random position (the shape mostly inside the frame), half-width (0.16
    to 0.3 of the image side), tilt (up to 15 degrees either way; the stripes at any
    angle) and colour, on a background of another random colour with a faint linear
    gradient, plus Gaussian pixel noise. Every colour channel of the shape differs from
    the background's by 0.3 to 0.7, so colour never gives the class away, nor hides the
    shape. Edges are anti-aliased. The set ships as code, so RGB training runs offline;
    a small CNN learns it to over 90% accuracy in a few epochs of 2,000 images, while a
    linear model on the pixels stays near chance.

    The images are computed for the whole batch at once (coordinate grids and
    signed-distance masks), one pass per class.

    Parameters
    ----------
    n : int, default 1000
        Number of images. The classes are balanced: their counts differ by at most one.
    image_size : int, default 32
        Height and width of the images, at least 8.
    classes : sequence of str, default ('square', 'disc', 'triangle', 'stripes')
        The shapes to draw, from those four, without repeats; label ``i`` is
        ``classes[i]``.
    noise : float, default 0.05
        Standard deviation of the Gaussian pixel noise (0 for none).
    random_state : int, numpy.random.Generator or None
        Seed: the same seed gives the same images and labels.

    Returns
    -------
    X : ndarray of shape (n, 3, image_size, image_size), float32
        RGB images in [0, 1].
    y : ndarray of shape (n,), int64
        Labels ``0 .. len(classes) - 1``, in random order.

    Examples
    --------
    >>> from fastcnn.datasets import make_shapes
    >>> X, y = make_shapes(8, 16, random_state=0)
    >>> X.shape, X.dtype, y.dtype
    ((8, 3, 16, 16), dtype('float32'), dtype('int64'))
    """
    n, size, kinds, noise = _check_shapes_args(n, image_size, classes, noise)
    rng = check_rng(random_state)
    y = rng.permutation(np.arange(n, dtype=np.int64) % len(kinds))
    side = np.float32(size)
    half = rng.uniform(0.16, 0.3, n).astype(np.float32) * side
    centre = rng.uniform(0.3, 0.7, (n, 2)).astype(np.float32) * side
    # Upright give or take 15 degrees; stripes at any angle.
    angle = rng.uniform(-np.pi / 12, np.pi / 12, n).astype(np.float32)
    if "stripes" in kinds:
        stripes = y == kinds.index("stripes")
        angle[stripes] *= np.float32(12.0)
    background = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    offset = rng.uniform(0.3, 0.7, (n, 3)).astype(np.float32)
    foreground = (background + offset) % np.float32(1.0)
    gradient = rng.uniform(-0.1, 0.1, (n, 2)).astype(np.float32)

    grid = np.arange(size, dtype=np.float32) + np.float32(0.5)  # pixel centres
    dy = grid[None, :, None] - centre[:, 0, None, None]
    dx = grid[None, None, :] - centre[:, 1, None, None]
    alpha = _coverage(kinds, y, half, angle, dy, dx)
    ramp = (gradient[:, 0, None, None] * dy + gradient[:, 1, None, None] * dx) / side
    X = background[:, :, None, None] + ramp[:, None]
    X += (foreground - background)[:, :, None, None] * alpha[:, None]
    if noise:
        X += rng.normal(0.0, noise, X.shape).astype(np.float32)
    np.clip(X, 0.0, 1.0, out=X)
    return X, y


def _check_shapes_args(
    n: object, image_size: object, classes: object, noise: object
) -> tuple[int, int, tuple[str, ...], float]:
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, numbers.Integral):
        raise ValueError(f"image_size must be an int of at least 8, got {image_size!r}")
    if image_size < 8:
        raise ValueError(f"image_size must be an int of at least 8, got {image_size!r}")
    kinds = (classes,) if isinstance(classes, str) else tuple(classes)  # type: ignore[arg-type]
    unknown = [kind for kind in kinds if kind not in SHAPES]
    if not kinds or unknown or len(set(kinds)) != len(kinds):
        raise ValueError(f"classes must be distinct names from {SHAPES}, got {classes!r}")
    if isinstance(noise, bool) or not isinstance(noise, numbers.Real) or not float(noise) >= 0:
        raise ValueError(f"noise must be a non-negative float, got {noise!r}")
    return int(n), int(image_size), kinds, float(noise)
