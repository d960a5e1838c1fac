"""make_shapes (the synthetic RGB set) and the augmentation layers RandomCrop, RandomFlip."""

import numpy as np
import pytest
from conftest import tol

import fastcnn
from fastcnn.datasets import SHAPES, make_shapes
from fastcnn.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    RandomCrop,
    RandomFlip,
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


# ---------------------------------------------------------------------------------------
# RandomCrop and RandomFlip


def _batch(dtype, shape=(5, 2, 6, 7)):
    return np.random.default_rng(0).random(shape).astype(dtype)


@pytest.mark.parametrize(
    "layer",
    [RandomCrop((6, 7), padding=2), RandomCrop((4, 5), padding=(1, 0)), RandomFlip(),
     RandomFlip("horizontal_and_vertical")],
    ids=repr,
)  # fmt: skip
def test_eval_mode_is_deterministic(layer, dtype):
    x = _batch(dtype)
    out = layer.forward(x, training=False)
    assert out.dtype == dtype and out.shape == (5, *layer.output_shape(x.shape[1:]))
    np.testing.assert_array_equal(layer.forward(x, training=False), out)
    grad = np.random.default_rng(1).random(out.shape).astype(dtype)
    grad_in = layer.backward(grad)
    if out.shape == x.shape:  # the identity: the input itself, the gradient itself
        assert out is x and grad_in is grad
    else:  # the centre window
        np.testing.assert_array_equal(out, x[:, :, 1:5, 1:6])
        np.testing.assert_array_equal(grad_in[:, :, 1:5, 1:6], grad)
        assert grad_in.sum() == pytest.approx(grad.sum(), rel=1e-6)


def _reference_crop(x, top, left, size, padding):
    # One image at a time: the independent, obvious version of the vectorized layer.
    padded = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    return np.stack([p[:, t : t + size[0], j : j + size[1]]
                     for p, t, j in zip(padded, top, left, strict=True)])  # fmt: skip


@pytest.mark.parametrize("size, padding", [((6, 7), (2, 2)), ((3, 5), (0, 1)), ((8, 8), (1, 1))])
def test_random_crop_matches_a_loop_and_its_gradient(size, padding, dtype):
    x = _batch(dtype)
    layer = RandomCrop(size, padding=padding, rng=0)
    out = layer.forward(x, training=True)
    assert out.shape == (5, 2, *size) and out.dtype == dtype
    # The windows it drew, replayed from the same seed.
    replay = np.random.default_rng(0)
    top = replay.integers(0, 6 + 2 * padding[0] - size[0] + 1, 5)
    left = replay.integers(0, 7 + 2 * padding[1] - size[1] + 1, 5)
    np.testing.assert_array_equal(out, _reference_crop(x, top, left, size, padding))
    # backward is the transpose of the crop: <crop(x), g> == <x, crop^T(g)> for every x.
    grad = np.random.default_rng(2).random(out.shape).astype(dtype)
    grad_in = layer.backward(grad)
    assert grad_in.shape == x.shape and grad_in.dtype == dtype
    probe = np.random.default_rng(3).random(x.shape)
    lhs = (_reference_crop(probe, top, left, size, padding) * grad).sum()
    np.testing.assert_allclose((probe * grad_in).sum(), lhs, **tol(dtype))


def test_random_crop_draws_every_window():
    # Each pixel holds its column number (from 1), so the output tells the offset drawn.
    x = np.broadcast_to(np.arange(1.0, 9.0), (64, 1, 8, 8)).copy()
    out = RandomCrop(8, padding=2, rng=0).forward(x, training=True)
    left = out[:, 0, 4, 4] - 3  # column 4 of a window from `left` shows left - 2 + 4 + 1
    assert set(left.astype(int)) == {0, 1, 2, 3, 4}


@pytest.mark.parametrize("mode", ["horizontal", "vertical", "horizontal_and_vertical"])
def test_random_flip_matches_its_coins_and_gradient(mode, dtype):
    x = _batch(dtype, (40, 2, 3, 4))
    layer = RandomFlip(mode, rng=5)
    out = layer.forward(x, training=True)
    replay = np.random.default_rng(5)
    axes = {"horizontal": [3], "vertical": [2], "horizontal_and_vertical": [3, 2]}[mode]
    expected = x.copy()
    for axis in axes:
        coins = replay.random(40) < 0.5
        assert 5 < coins.sum() < 35
        expected[coins] = np.flip(expected[coins], axis=axis)
    np.testing.assert_array_equal(out, expected)
    grad = np.random.default_rng(2).random(out.shape).astype(dtype)
    grad_in = layer.backward(grad)
    probe = np.random.default_rng(3).random(x.shape).astype(dtype)
    layer.forward(probe, training=True)  # another draw: use the replayed transform
    replay = np.random.default_rng(5)
    flipped = probe.copy()
    for axis in axes:
        coins = replay.random(40) < 0.5
        flipped[coins] = np.flip(flipped[coins], axis=axis)
    np.testing.assert_allclose((flipped * grad).sum(), (probe * grad_in).sum(), **tol(dtype))


def test_gradient_through_a_model_with_augmentation(backend):
    # Central differences in float64 through crop -> flip -> conv, with the same draws.
    x = np.random.default_rng(0).random((3, 2, 5, 5))
    model = fastcnn.Sequential(
        RandomCrop(4, padding=1, rng=0), RandomFlip("horizontal_and_vertical", rng=1),
        Conv2D(2, 3, 3, dtype=np.float64, rng=2), Flatten(),
    )  # fmt: skip
    weights = np.random.default_rng(4).random((3, 12))

    def loss():
        model.layers[0].rng = np.random.default_rng(0)
        model.layers[1].rng = np.random.default_rng(1)
        return float((model.forward(x, training=True) * weights).sum())

    loss()
    grad = model.backward(weights)
    from conftest import numerical_grad

    np.testing.assert_allclose(grad, numerical_grad(loss, x), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: RandomCrop(0), "size must be"),
        (lambda: RandomCrop(4, padding=-1), "padding must be"),
        (lambda: RandomCrop((4, 4, 4)), "size must be"),
        (lambda: RandomFlip("diagonal"), "mode must be one of"),
    ],
)
def test_augmentation_argument_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_augmentation_shape_errors():
    with pytest.raises(ValueError, match="larger than the padded input"):
        RandomCrop(9, padding=1).output_shape((3, 6, 6))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, C, H, W\)"):
        RandomFlip().forward(np.zeros((2, 3, 4)), training=True)


# ---------------------------------------------------------------------------------------
# Seeding through fit, saving


def _augmented_model(seed):
    return fastcnn.Sequential(
        RandomCrop(8, padding=2), RandomFlip("horizontal_and_vertical"),
        Conv2D(3, 4, 3, padding=1, rng=seed), ReLU(), Flatten(), Dropout(0.2),
        Dense(4 * 8 * 8, 4, rng=seed + 1),
    )  # fmt: skip


def test_fit_random_state_reseeds_augmentation_and_dropout():
    X, y = make_shapes(64, 8, random_state=0)
    runs = []
    for _ in range(2):
        model = _augmented_model(0)
        history = model.fit(X, y, epochs=2, batch_size=16, random_state=7, verbose=0)
        runs.append((history.history["loss"], model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for key in runs[0][1]:
        np.testing.assert_array_equal(runs[0][1][key], runs[1][1][key])
    # Another seed, other crops and flips (the same initial weights): another run.
    other = _augmented_model(0)
    assert other.fit(X, y, epochs=2, batch_size=16, random_state=8,
                     verbose=0).history["loss"] != runs[0][0]  # fmt: skip


def test_reseed_layers_reaches_every_random_layer():
    from fastcnn.training import reseed_layers

    model = _augmented_model(0)
    before = [getattr(layer, "rng", None) for layer in model.layers]
    reseed_layers(model, np.random.default_rng(0))
    changed = [
        getattr(layer, "rng", None) is not old
        for layer, old in zip(model.layers, before, strict=True)
    ]
    # RandomCrop, RandomFlip and Dropout get generators; Conv2D and Dense keep theirs.
    assert changed == [True, True, False, False, False, True, False]


def test_augmentation_layers_save_and_load(tmp_path):
    model = fastcnn.Sequential(
        RandomCrop((6, 5), padding=(1, 2)), RandomFlip("vertical"), Flatten(),
    )  # fmt: skip
    model.save(tmp_path / "aug.npz")
    loaded = fastcnn.load(tmp_path / "aug.npz")
    assert repr(loaded.layers[0]) == repr(model.layers[0])
    assert loaded.layers[0].size == (6, 5) and loaded.layers[0].padding == (1, 2)
    assert loaded.layers[1].mode == "vertical"
    x = _batch(np.float32, (2, 3, 6, 5))
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


class _StopAfter:
    """A callback that raises at the end of epoch ``epoch``, before its checkpoint."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("power cut")


def _checkpointed_model():
    return fastcnn.Sequential(
        RandomFlip("horizontal", rng=0), RandomCrop(6, padding=0, rng=1),
        Conv2D(3, 4, 3, padding=1, rng=2), ReLU(), Flatten(), Dropout(0.3, rng=3),
        Dense(4 * 6 * 6, 4, rng=4),
    )  # fmt: skip


def test_resumed_training_draws_the_same_augmentations(tmp_path):
    # The checkpoint keeps the augmentation layers' generators, as it keeps Dropout's: a
    # run resumed after a crash equals the uninterrupted one, bit for bit.
    X, y = make_shapes(64, image_size=8, random_state=0)
    fit = dict(epochs=3, batch_size=16, random_state=5, verbose=0, optimizer="sgd")
    reference = _checkpointed_model()
    reference.fit(X, y, **fit)
    path = tmp_path / "ckpt.npz"
    crashed = _checkpointed_model()
    with pytest.raises(RuntimeError, match="power cut"):
        crashed.fit(X, y, checkpoint=path, callbacks=[_StopAfter(1)], **fit)
    assert path.exists()  # epoch 0 was saved; the run resumes at epoch 1
    resumed = _checkpointed_model()
    resumed.fit(X, y, checkpoint=path, **fit)
    for (p, _), (q, _) in zip(resumed.parameters(), reference.parameters(), strict=True):
        np.testing.assert_array_equal(p, q)
