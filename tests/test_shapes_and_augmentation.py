"""make_shapes (the synthetic RGB set) and the augmentation layers RandomCrop, RandomFlip."""

import numpy as np
import pytest

import fastcnn
from fastcnn.datasets import SHAPES, make_shapes
from fastcnn.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    ReLU,
)
from fastcnn.optim import Adam

# ---------------------------------------------------------------------------------------
# make_shapes


def test_make_shapes_types_ranges_and_balance():
    X, y = make_shapes(203, 24, random_state=0)
    assert X.shape == (203, 3, 24, 24) and X.dtype == np.float32
    assert y.shape == (203,) and y.dtype == np.int64
    assert X.min() >= 0.0 and X.max() <= 1.0
    counts = np.bincount(y, minlength=4)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 203
    assert not np.array_equal(y, np.sort(y))  # shuffled, not in blocks
    # The images differ from each other, and each holds more than a flat colour.
    assert np.std(X.reshape(203, -1), axis=1).min() > 0.02
    assert len(np.unique(X.reshape(203, -1), axis=0)) == 203


def test_make_shapes_is_deterministic_for_a_seed():
    X1, y1 = make_shapes(50, 16, random_state=3)
    X2, y2 = make_shapes(50, 16, random_state=np.random.default_rng(3))
    X3, y3 = make_shapes(50, 16, random_state=4)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


def test_make_shapes_noise_and_classes():
    X, y = make_shapes(40, 16, classes=("stripes", "disc"), noise=0.0, random_state=1)
    assert set(np.unique(y)) == {0, 1}

    # Without noise the background corners are smooth, where no shape reaches them:
    # neighbouring pixels nearly equal.
    def step(images):
        return np.abs(np.diff(images[:, :, :3, :3], axis=-1)).max(axis=(1, 2, 3))

    assert np.median(step(X)) < 0.02
    noisy, _ = make_shapes(40, 16, classes=("stripes", "disc"), noise=0.2, random_state=1)
    assert np.median(step(noisy)) > 0.2


def test_make_shapes_draws_each_class_as_named():
    # With no noise, a disc covers about pi/4 of its bounding square, a square all of it,
    # a triangle less than half: the fraction of shape-coloured pixels tells them apart.
    X, y = make_shapes(200, 32, classes=("square", "disc", "triangle"), noise=0.0,
                       random_state=2)  # fmt: skip
    # The pixel most unlike the corner's colour is in the shape; count the pixels near it.
    background = X[:, :, 0, 0][:, :, None, None]
    distance = np.abs(X - background).sum(axis=1)
    inside = distance > distance.reshape(200, -1).max(axis=1)[:, None, None] / 2
    area = inside.reshape(200, -1).mean(axis=1)
    means = [area[y == k].mean() for k in range(3)]
    assert means[0] > means[1] > means[2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n": 0}, "n must be"),
        ({"image_size": 4}, "image_size"),
        ({"classes": ("square", "hexagon")}, "classes must be"),
        ({"classes": ("disc", "disc")}, "classes must be"),
        ({"classes": ()}, "classes must be"),
        ({"noise": -0.1}, "noise"),
    ],
)
def test_make_shapes_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_shapes(**{"n": 10, **kwargs})


def test_shapes_are_learnable():
    # A few epochs of a small CNN on 1,200 images beat chance (0.25) by far (0.78
    # measured); a linear model of the pixels does not (the colours are random).
    X, y = make_shapes(1200, 16, random_state=0)
    X_test, y_test = make_shapes(200, 16, random_state=1)
    model = fastcnn.Sequential(
        Conv2D(3, 16, 3, padding=1, rng=0), BatchNorm2D(16), ReLU(), MaxPool2D(2),
        Conv2D(16, 32, 3, padding=1, rng=1), BatchNorm2D(32), ReLU(), MaxPool2D(2),
        Flatten(), Dense(32 * 4 * 4, len(SHAPES), rng=2),
    )  # fmt: skip
    model.fit(X, y, epochs=8, batch_size=32, optimizer=Adam(3e-3), random_state=0, verbose=0)
    assert model.evaluate(X_test, y_test)["accuracy"] > 0.6
