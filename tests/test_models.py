"""Ready-made architectures: shapes, parameter counts, seeding, training on both backends."""

import numpy as np
import pytest
from conftest import tol

import fastcnn
from fastcnn.layers import AvgPool2D, BatchNorm2D, Conv2D, MaxPool2D, ReLU, Tanh
from fastcnn.models import digits_cnn, lenet5, vgg_small


def _conv_params(c_in, c_out, k):
    return c_out * c_in * k * k + c_out


def _dense_params(n_in, n_out):
    return n_out * n_in + n_out


# The classic LeNet-5 count, by hand: C1 1->6 5x5, C3 6->16 5x5 (fully connected to S2),
# F5 16*5*5 -> 120, F6 120 -> 84, output 84 -> 10; subsampling layers have no parameters.
LENET5_PARAMS = (
    _conv_params(1, 6, 5)  # 156
    + _conv_params(6, 16, 5)  # 2,416
    + _dense_params(16 * 5 * 5, 120)  # 48,120
    + _dense_params(120, 84)  # 10,164
    + _dense_params(84, 10)  # 850
)


def test_lenet5_param_count_is_the_classic_one():
    assert LENET5_PARAMS == 61_706
    assert lenet5().num_params == LENET5_PARAMS
    assert lenet5(input_size=32).num_params == LENET5_PARAMS


@pytest.mark.parametrize("size, padding", [(28, (2, 2)), (32, (0, 0))])
def test_lenet5_shapes(size, padding):
    model = lenet5(input_size=size, random_state=0)
    conv1 = model.layers[0]
    assert isinstance(conv1, Conv2D) and conv1.padding == padding
    # C1 gives 28x28 maps either way; S2 14x14; C3 10x10; S4 5x5.
    assert model[:1].output_shape((1, size, size)) == (6, 28, 28)
    assert model[:6].output_shape((1, size, size)) == (16, 5, 5)
    x = np.random.default_rng(0).random((3, 1, size, size), dtype=np.float32)
    out = model.forward(x)
    assert out.shape == (3, 10) and out.dtype == np.float32


def test_lenet5_options():
    model = lenet5(num_classes=5, in_channels=3, activation="relu", pooling="max")
    expected = LENET5_PARAMS - _conv_params(1, 6, 5) + _conv_params(3, 6, 5)
    expected += _dense_params(84, 5) - _dense_params(84, 10)
    assert model.num_params == expected
    assert model.output_shape((3, 28, 28)) == (5,)
    assert sum(isinstance(layer, ReLU) for layer in model) == 4
    assert sum(isinstance(layer, MaxPool2D) for layer in model) == 2
    classic = lenet5()
    assert sum(isinstance(layer, Tanh) for layer in classic) == 4
    assert sum(isinstance(layer, AvgPool2D) for layer in classic) == 2
    # Rectangular input works; the dense layer follows the feature map size.
    assert lenet5(input_size=(28, 36)).output_shape((1, 28, 36)) == (10,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"activation": "gelu"}, "activation must be one of"),
        ({"pooling": "sum"}, "pooling must be one of"),
        ({"input_size": 8}, "at least 16x16"),
        ({"num_classes": 0}, "num_classes must be a positive int"),
        ({"in_channels": 1.5}, "in_channels must be a positive int"),
    ],
)
def test_lenet5_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lenet5(**kwargs)


def test_digits_cnn_shapes_and_params():
    model = digits_cnn(random_state=0)
    expected = (
        _conv_params(1, 32, 3)
        + 2 * 32  # BatchNorm gamma, beta
        + _conv_params(32, 64, 3)
        + 2 * 64
        + _dense_params(64 * 2 * 2, 128)
        + _dense_params(128, 10)
    )
    assert model.num_params == expected == 53_194
    assert sum(isinstance(layer, BatchNorm2D) for layer in model) == 2
    assert model.output_shape((1, 8, 8)) == (10,)
    out = model.forward(np.zeros((2, 1, 8, 8), np.float32))
    assert out.shape == (2, 10)


@pytest.mark.parametrize(
    "shape", [(1, 8, 8), (3, 8, 8), (1, 28, 28), (1, 1, 5), (1, 1, 1), (2, 3, 7)]
)
def test_digits_cnn_adapts_to_the_input_size(shape):
    model = digits_cnn(4, shape[0], input_size=shape[1:], random_state=0)
    assert model.output_shape(shape) == (4,)
    x = np.random.default_rng(0).random((6, *shape), dtype=np.float32)
    assert model.forward(x, training=True).shape == (6, 4)


@pytest.mark.parametrize("builder", [lenet5, digits_cnn])
def test_seeded_init_is_reproducible_and_dtype_independent(builder):
    a = builder(random_state=7).state_dict()
    b = builder(random_state=7).state_dict()
    c = builder(random_state=8).state_dict()
    d = builder(random_state=7, dtype=np.float64).state_dict()
    assert a.keys() == b.keys() == c.keys() == d.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert d[name].dtype == np.float64
        np.testing.assert_array_equal(a[name], d[name].astype(np.float32))
    assert any(not np.array_equal(a[name], c[name]) for name in a)


@pytest.mark.parametrize("builder", [lenet5, digits_cnn])
def test_seeded_init_is_backend_independent(builder):
    states = []
    for name in fastcnn.available_backends():
        with fastcnn.use_backend(name):
            states.append(builder(random_state=3).state_dict())
    for state in states[1:]:
        for key in state:
            np.testing.assert_array_equal(state[key], states[0][key])


@pytest.mark.parametrize(
    "builder, shape", [(lenet5, (1, 28, 28)), (digits_cnn, (1, 8, 8))], ids=["lenet5", "digits"]
)
def test_forward_and_gradients_agree_across_backends(builder, shape, dtype):
    if "cython" not in fastcnn.available_backends():
        pytest.skip("compiled backend not available")
    x = np.random.default_rng(0).random((4, *shape)).astype(dtype)
    results = []
    for name in ("numpy", "cython"):
        with fastcnn.use_backend(name):
            model = builder(random_state=0, dtype=dtype)
            out = model.forward(x, training=False)
            model.backward(np.ones_like(out))
            results.append((out, [g.copy() for _, g in model.parameters()]))
    (out_np, grads_np), (out_cy, grads_cy) = results
    np.testing.assert_allclose(out_cy, out_np, **tol(dtype))
    for g_cy, g_np in zip(grads_cy, grads_np, strict=True):
        np.testing.assert_allclose(g_cy, g_np, rtol=tol(dtype)["rtol"] * 10, atol=1e-4)


def test_models_train(backend):
    rng = np.random.default_rng(0)
    # Two classes a CNN separates at once: a bright top half or a bright bottom half.
    X = rng.random((64, 1, 8, 8), dtype=np.float32) * 0.2
    y = np.arange(64) % 2
    X[y == 0, :, :4] += 0.8
    X[y == 1, :, 4:] += 0.8
    model = digits_cnn(2, random_state=0)
    history = model.fit(X, y, epochs=3, batch_size=16, random_state=0, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert (model.predict(X) == y).mean() == 1.0


def test_models_save_and_load(tmp_path):
    for model, shape in ((lenet5(random_state=0), (1, 28, 28)), (digits_cnn(), (1, 8, 8))):
        path = tmp_path / "model.npz"
        model.save(path)
        loaded = fastcnn.load(path)
        x = np.random.default_rng(1).random((3, *shape), dtype=np.float32)
        np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


# ---------------------------------------------------------------------------------------
# vgg_small


def _torch_vgg_small(num_classes):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4096, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )  # fmt: skip


def test_vgg_small_matches_its_pytorch_twin():
    torch = pytest.importorskip("torch")
    model = vgg_small(random_state=0, dtype=np.float64)
    twin = _torch_vgg_small(10).double()
    assert model.num_params == sum(p.numel() for p in twin.parameters()) == 591_274
    assert model.output_shape((3, 32, 32)) == (10,)
    # The same weights give the same logits: the layers are the twin's, in its order.
    with torch.no_grad():
        for (param, _), theirs in zip(model.parameters(), twin.parameters(), strict=True):
            assert param.shape == tuple(theirs.shape)
            theirs.copy_(torch.from_numpy(param))
        x = np.random.default_rng(0).random((2, 3, 32, 32))
        expected = twin(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-10, atol=1e-12)


def test_vgg_small_options_and_errors():
    model = vgg_small(4, in_channels=1, input_size=(16, 12), random_state=0)
    assert model.output_shape((1, 16, 12)) == (4,)
    assert model.forward(np.zeros((2, 1, 16, 12), np.float32)).shape == (2, 4)
    with pytest.raises(ValueError, match="at least 4x4"):
        vgg_small(input_size=3)
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        vgg_small(0)
    a, b = vgg_small(random_state=5).state_dict(), vgg_small(random_state=5).state_dict()
    assert all(np.array_equal(a[key], b[key]) for key in a)


def test_vgg_small_save_and_load(tmp_path):
    model = vgg_small(3, random_state=0)
    model.save(tmp_path / "vgg.npz")
    loaded = fastcnn.load(tmp_path / "vgg.npz")
    x = np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))


def test_vgg_small_backends_agree(dtype):
    if "cython" not in fastcnn.available_backends():
        pytest.skip("compiled backend not available")
    x = np.random.default_rng(0).random((3, 3, 32, 32)).astype(dtype)
    model = vgg_small(random_state=0, dtype=dtype)
    outputs = []
    for name in ("numpy", "cython"):
        with fastcnn.use_backend(name):
            outputs.append(model.forward(x))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=tol(dtype)["rtol"] * 10, atol=1e-5)
