"""Layers: gradients against float64 central differences, shapes, dtypes, configs, errors."""

import json
import math
import pickle

import numpy as np
import pytest
from conftest import numerical_grad
from numpy.testing import assert_allclose, assert_array_equal

from fastcnn.layers import (
    LAYER_REGISTRY,
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
    layer_from_config,
    register_layer,
)

# ---------------------------------------------------------------------------------------
# Gradient checking helpers


def grad_tol(dtype) -> tuple[float, float]:
    """(rtol, atol relative to the gradient's scale) of analytic vs float64 numeric."""
    return (1e-6, 1e-7) if np.dtype(dtype) == np.float64 else (2e-3, 2e-3)


def float64_twin(layer: Layer) -> Layer:
    """The same layer rebuilt in float64 with the same parameters and buffers."""
    config = layer.get_config()
    if "dtype" in config:
        config["dtype"] = "float64"
    twin = type(layer)(**config)
    for name, value in (*layer.params.items(), *layer.buffers.items()):
        target = twin.params.get(name, twin.buffers.get(name))
        target[...] = value
    return twin


def run_forward(layer: Layer, x: np.ndarray, training: bool) -> np.ndarray:
    if isinstance(layer, Dropout):  # the same mask on every call, so differences make sense
        layer.rng = np.random.default_rng(7)
    return layer.forward(x, training)


def check_layer_gradients(layer: Layer, x: np.ndarray, training: bool) -> None:
    rng = np.random.default_rng(0)
    y = run_forward(layer, x, training)
    weights = rng.standard_normal(y.shape)  # loss = sum(weights * y)
    grad_x = layer.backward(weights.astype(x.dtype))
    analytic = {"x": grad_x, **{k: g.copy() for k, g in layer.grads.items()}}
    for name, value in analytic.items():
        assert value.dtype == x.dtype, f"gradient of {name} has dtype {value.dtype}"

    twin = float64_twin(layer)
    x64 = x.astype(np.float64)

    def loss() -> float:
        return float(np.vdot(run_forward(twin, x64, training), weights))

    numeric = {"x": numerical_grad(loss, x64)}
    numeric.update({name: numerical_grad(loss, p) for name, p in twin.params.items()})
    rtol, atol = grad_tol(x.dtype)
    for name in analytic:
        scale = max(1.0, float(np.abs(numeric[name]).max()))
        assert_allclose(
            analytic[name], numeric[name], rtol=rtol, atol=atol * scale, err_msg=f"d/d{name}"
        )


# Each case: layer factory (dtype -> layer), input shape, training mode.
LAYER_CASES = {
    "conv": (lambda dt: Conv2D(2, 3, 3, dtype=dt, rng=0), (2, 2, 5, 5), True),
    "conv_nonsquare_strided": (
        lambda dt: Conv2D(2, 4, (3, 2), stride=(2, 1), padding=(1, 0), dtype=dt, rng=1),
        (2, 2, 6, 5),
        True,
    ),
    "conv_dilated": (
        lambda dt: Conv2D(1, 2, 3, padding=1, dilation=2, dtype=dt, rng=2),
        (2, 1, 7, 6),
        True,
    ),
    "conv_groups_same_nobias": (
        lambda dt: Conv2D(4, 4, 3, padding="same", groups=2, bias=False, dtype=dt, rng=3),
        (2, 4, 5, 5),
        True,
    ),
    "conv_same_even_kernel": (
        lambda dt: Conv2D(2, 2, 2, padding="same", dtype=dt, rng=4),
        (1, 2, 4, 4),
        True,
    ),
    "dense": (lambda dt: Dense(6, 4, dtype=dt, rng=0), (3, 6), True),
    "dense_nobias": (lambda dt: Dense(5, 2, bias=False, dtype=dt, rng=0), (2, 5), True),
    "maxpool": (lambda dt: MaxPool2D(2), (2, 2, 4, 4), True),
    "maxpool_overlap_pad": (lambda dt: MaxPool2D(3, stride=2, padding=1), (2, 2, 5, 5), True),
    "maxpool_ceil": (lambda dt: MaxPool2D(2, ceil_mode=True), (1, 2, 5, 5), True),
    "avgpool": (lambda dt: AvgPool2D(2), (2, 2, 4, 4), True),
    "avgpool_pad_ceil": (
        lambda dt: AvgPool2D(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        (2, 2, 6, 6),
        True,
    ),
    "relu": (lambda dt: ReLU(), (2, 3, 4), True),
    "leaky_relu": (lambda dt: LeakyReLU(0.1), (2, 3, 4), True),
    "tanh": (lambda dt: Tanh(), (2, 3, 4), True),
    "sigmoid": (lambda dt: Sigmoid(), (2, 3, 4), True),
    "flatten": (lambda dt: Flatten(), (2, 2, 3, 3), True),
    "dropout_train": (lambda dt: Dropout(0.4), (3, 10), True),
    "dropout_eval": (lambda dt: Dropout(0.4), (3, 10), False),
    "batchnorm_train": (lambda dt: BatchNorm2D(3, dtype=dt), (4, 3, 3, 3), True),
    "batchnorm_eval": (lambda dt: BatchNorm2D(3, dtype=dt), (4, 3, 3, 3), False),
}


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_layer_gradients_match_numerical(case, backend, dtype, rng):
    make, shape, training = LAYER_CASES[case]
    layer = make(dtype)
    # Non-trivial parameters and statistics (zero biases and unit gammas hide bugs).
    for p in layer.params.values():
        p[...] = rng.uniform(0.5, 1.5, p.shape) * rng.choice([-1, 1], p.shape)
    if isinstance(layer, BatchNorm2D):
        layer.running_mean[...] = rng.standard_normal(3)
        layer.running_var[...] = rng.uniform(0.5, 2.0, 3)
    x = rng.standard_normal(shape).astype(dtype)
    check_layer_gradients(layer, x, training)


# ---------------------------------------------------------------------------------------
# Shapes, dtypes and the documented output-shape formulas


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_output_shape_and_dtype(case, dtype, rng):
    make, shape, training = LAYER_CASES[case]
    layer = make(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x, training)
    assert y.shape == (shape[0], *layer.output_shape(shape[1:]))
    assert y.dtype == dtype
    for name, p in layer.params.items():
        assert p.dtype == dtype and layer.grads[name].dtype == dtype
        assert layer.grads[name].shape == p.shape
    assert layer.backward(np.ones_like(y)).shape == x.shape


@pytest.mark.parametrize(
    ("layer", "sample", "expected"),
    [
        (Conv2D(3, 8, 5), (3, 32, 32), (8, 28, 28)),
        (Conv2D(3, 8, 3, stride=2, padding=1), (3, 7, 7), (8, 4, 4)),
        (Conv2D(1, 2, (3, 1), padding="same"), (1, 5, 6), (2, 5, 6)),
        (Conv2D(1, 2, 4, padding="same"), (1, 5, 6), (2, 5, 6)),
        (Conv2D(1, 2, 3, dilation=2), (1, 9, 9), (2, 5, 5)),
        (MaxPool2D(2), (6, 28, 28), (6, 14, 14)),
        (MaxPool2D(3, stride=2, ceil_mode=True), (1, 6, 6), (1, 3, 3)),
        (AvgPool2D(2, padding=1), (4, 5, 5), (4, 3, 3)),
        (Flatten(), (16, 5, 5), (400,)),
        (Dense(400, 120), (400,), (120,)),
        (BatchNorm2D(6), (6, 3, 3), (6, 3, 3)),
        (ReLU(), (7,), (7,)),
    ],
    ids=repr,
)
def test_output_shape_formula(layer, sample, expected):
    assert layer.output_shape(sample) == expected


def test_float32_layers_keep_float32_end_to_end(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    layers = [
        Conv2D(3, 4, 3, padding=1, rng=0), BatchNorm2D(4), LeakyReLU(), Sigmoid(), Tanh(),
        AvgPool2D(2), MaxPool2D(1), Dropout(0.3, rng=0), Flatten(), Dense(36, 5, rng=0),
    ]  # fmt: skip
    for layer in layers:
        x = layer.forward(x, training=True)
        assert x.dtype == np.float32, repr(layer)
    g = np.ones_like(x)
    for layer in reversed(layers):
        g = layer.backward(g)
        assert g.dtype == np.float32, repr(layer)


# ---------------------------------------------------------------------------------------
# Initialization and parameters


def test_conv_he_uniform_init_is_seeded_and_dtype_independent():
    a = Conv2D(4, 16, 3, rng=0)
    b = Conv2D(4, 16, 3, rng=0, dtype=np.float64)
    assert_array_equal(a.weight, b.weight.astype(np.float32))
    assert not np.array_equal(a.weight, Conv2D(4, 16, 3, rng=1).weight)
    bound = math.sqrt(6 / (4 * 3 * 3))
    assert np.abs(a.weight).max() <= bound
    assert np.abs(a.weight).max() > 0.9 * bound  # uniform on the full range, not smaller
    assert np.abs(a.weight.std() - bound / math.sqrt(3)) < 0.1 * bound
    assert_array_equal(a.bias, 0)


def test_dense_glorot_init():
    layer = Dense(300, 100, rng=0)
    limit = math.sqrt(6 / 400)
    assert layer.weight.shape == (100, 300)
    assert np.abs(layer.weight).max() <= limit
    assert abs(layer.weight.std() - limit / math.sqrt(3)) < 0.05 * limit


def test_reset_parameters_is_in_place():
    layer = Conv2D(2, 3, 3, rng=0)
    weight = layer.weight
    before = weight.copy()
    layer.bias[...] = 5
    layer.reset_parameters(rng=123)
    assert layer.params["weight"] is weight  # an optimizer bound to it stays valid
    assert not np.array_equal(weight, before)
    assert_array_equal(layer.bias, 0)


def test_conv_first_layer_skips_input_gradient(backend, rng):
    layer = Conv2D(1, 2, 3, rng=0)
    x = rng.standard_normal((2, 1, 5, 5)).astype(np.float32)
    g = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    layer.forward(x, training=True)
    full = layer.backward(g)
    weight_grad = layer.grads["weight"].copy()
    layer.needs_input_grad = False
    assert layer.backward(g) is None
    assert_array_equal(layer.grads["weight"], weight_grad)
    assert full.shape == x.shape


def test_dense_skips_input_gradient(rng):
    layer = Dense(3, 2, rng=0)
    layer.forward(rng.standard_normal((4, 3)).astype(np.float32))
    layer.needs_input_grad = False
    assert layer.backward(np.ones((4, 2), np.float32)) is None
    assert_allclose(layer.grads["bias"], [4, 4])


# ---------------------------------------------------------------------------------------
# BatchNorm and Dropout semantics


def test_batchnorm_running_statistics(rng):
    layer = BatchNorm2D(2, momentum=0.25, dtype=np.float64)
    x = rng.standard_normal((3, 2, 4, 4)) * 2 + 1
    y = layer.forward(x, training=True)
    mean = x.mean(axis=(0, 2, 3))
    assert_allclose(layer.running_mean, 0.25 * mean)
    assert_allclose(layer.running_var, 0.75 + 0.25 * x.var(axis=(0, 2, 3), ddof=1))
    assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    assert_allclose(y.var(axis=(0, 2, 3)), 1, rtol=1e-4)  # eps=1e-5 shrinks it slightly
    # Eval mode uses the running statistics and leaves them alone.
    stats = layer.running_mean.copy()
    y_eval = layer.forward(x, training=False)
    assert_array_equal(layer.running_mean, stats)
    expected = (x - stats[None, :, None, None]) / np.sqrt(
        layer.running_var[None, :, None, None] + 1e-5
    )
    assert_allclose(y_eval, expected)


def test_batchnorm_matches_torch(dtype, rng):
    torch = pytest.importorskip("torch", reason="torch is optional: the reference for BatchNorm")
    layer = BatchNorm2D(3, momentum=0.2, dtype=dtype)
    layer.gamma[...] = rng.uniform(0.5, 1.5, 3)
    layer.beta[...] = rng.standard_normal(3)
    x = rng.standard_normal((4, 3, 5, 5)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    y = layer.forward(x, training=True)
    gx = layer.backward(g)

    ref = torch.nn.BatchNorm2d(3, momentum=0.2, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.gamma.astype(np.float64)))
        ref.bias.copy_(torch.from_numpy(layer.beta.astype(np.float64)))
    xt = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(g.astype(np.float64)))
    t = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-10}
    assert_allclose(y, yt.detach().numpy(), **t)
    assert_allclose(gx, xt.grad.numpy(), **t)
    assert_allclose(layer.grads["gamma"], ref.weight.grad.numpy(), **t)
    assert_allclose(layer.grads["beta"], ref.bias.grad.numpy(), **t)
    assert_allclose(layer.running_mean, ref.running_mean.numpy(), **t)
    assert_allclose(layer.running_var, ref.running_var.numpy(), **t)


def test_batchnorm_refuses_single_value_per_channel():
    with pytest.raises(ValueError, match="more than one value per channel"):
        BatchNorm2D(2).forward(np.ones((1, 2, 1, 1), np.float32), training=True)


def test_dropout_semantics(dtype):
    x = np.ones((200, 50), dtype)
    layer = Dropout(0.3, rng=0)
    assert layer.forward(x, training=False) is x  # identity in eval mode, no copy
    y = layer.forward(x, training=True)
    assert y.dtype == dtype
    kept = y != 0
    assert abs(1 - kept.mean() - 0.3) < 0.02
    assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    assert_array_equal(layer.backward(np.full_like(x, 2)), 2 * y)
    # Same seed -> same mask, for either dtype.
    again = Dropout(0.3, rng=0).forward(x.astype(np.float64), training=True)
    assert_array_equal(again != 0, kept)
    assert_array_equal(Dropout(1.0).forward(x, training=True), 0)
    assert_array_equal(Dropout(0.0).forward(x, training=True), x)


# ---------------------------------------------------------------------------------------
# Configs, repr, registry, pickling


ALL_LAYERS = [
    Conv2D(3, 6, (5, 3), stride=2, padding=1, dilation=(1, 2), groups=3,
           bias=False, dtype=np.float64),
    Conv2D(1, 4, 3, padding="same"),
    Dense(10, 3, bias=False),
    BatchNorm2D(4, eps=1e-3, momentum=0.2),
    MaxPool2D(3, stride=2, padding=1, dilation=1, ceil_mode=True),
    AvgPool2D((2, 3), stride=1, count_include_pad=False, divisor_override=4),
    ReLU(), LeakyReLU(0.2), Tanh(), Sigmoid(), Flatten(), Dropout(0.25),
]  # fmt: skip


@pytest.mark.parametrize("layer", ALL_LAYERS, ids=repr)
def test_config_round_trips_through_json(layer):
    config = json.loads(json.dumps(layer.get_config()))
    rebuilt = layer_from_config(type(layer).__name__, config)
    assert type(rebuilt) is type(layer)
    assert rebuilt.get_config() == layer.get_config()
    assert repr(rebuilt) == repr(layer)
    assert {k: v.shape for k, v in rebuilt.params.items()} == {
        k: v.shape for k, v in layer.params.items()
    }


def test_repr_follows_pytorch_style():
    assert repr(Conv2D(1, 16, 3, padding=1)) == (
        "Conv2D(1, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    )
    assert repr(Conv2D(4, 8, 3, groups=2, bias=False)) == (
        "Conv2D(4, 8, kernel_size=(3, 3), stride=(1, 1), groups=2, bias=False)"
    )
    assert repr(Dense(84, 10)) == "Dense(in_features=84, out_features=10)"
    assert repr(MaxPool2D(2)) == "MaxPool2D(kernel_size=(2, 2), stride=(2, 2))"
    assert repr(ReLU()) == "ReLU()"
    assert repr(Dropout(0.5)) == "Dropout(p=0.5)"


def test_registry_refuses_unknown_names_and_bad_configs():
    assert LAYER_REGISTRY["Conv2D"] is Conv2D
    with pytest.raises(ValueError, match="unknown layer class 'os.system'"):
        layer_from_config("os.system", {})
    with pytest.raises(TypeError):
        layer_from_config("ReLU", {"inplace": True})


def test_register_custom_layer():
    class Square(Layer):
        def forward(self, x, training=False):
            self._cache["x"] = x
            return x * x

        def backward(self, grad_out):
            return 2 * self._saved("x") * grad_out

    try:
        assert register_layer(Square) is Square
        assert isinstance(layer_from_config("Square", {}), Square)
        with pytest.raises(TypeError, match="Layer subclass"):
            register_layer(int)
    finally:
        LAYER_REGISTRY.pop("Square", None)


def test_pickle_carries_weights_not_activations(rng):
    layer = Conv2D(1, 2, 3, rng=0)
    layer.forward(rng.standard_normal((64, 1, 20, 20)).astype(np.float32), training=True)
    restored = pickle.loads(pickle.dumps(layer))
    assert_array_equal(restored.weight, layer.weight)
    assert len(pickle.dumps(layer)) < 10_000  # the 100 KB input is not in the pickle
    with pytest.raises(RuntimeError, match="needs the activations of a forward"):
        restored.backward(np.ones((64, 2, 18, 18), np.float32))


# ---------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: Conv2D(0, 4, 3), ValueError, "in_channels must be a positive int, got 0"),
        (lambda: Conv2D(2, 4, "3"), TypeError, "kernel_size must be an int or a pair"),
        (lambda: Conv2D(2, 4, 3, stride=0), ValueError, "stride must be >= 1"),
        (lambda: Conv2D(2, 4, 3, padding=-1), ValueError, "padding must be >= 0"),
        (lambda: Conv2D(2, 4, 3, stride=2, padding="same"), ValueError, "requires stride 1"),
        (lambda: Conv2D(2, 4, 3, padding="full"), ValueError, "padding must be 'valid', 'same'"),
        (lambda: Conv2D(3, 4, 3, groups=2), ValueError, "groups=2 must divide in_channels=3"),
        (lambda: Conv2D(2, 4, 3, dtype=np.int32), TypeError, "dtype must be float32 or float64"),
        (lambda: Conv2D(2, 4, 3, bias="yes"), TypeError, "bias must be a bool"),
        (lambda: Conv2D(2, 4, 3, rng="seed"), TypeError, "rng must be None, an int seed"),
        (lambda: Dense(10, 0), ValueError, "out_features must be a positive int, got 0"),
        (lambda: Dense(2.5, 3), ValueError, "in_features must be a positive int, got 2.5"),
        (lambda: MaxPool2D(2, padding=2), ValueError, "padding 2 must be at most half"),
        (lambda: MaxPool2D(0), ValueError, "kernel_size must be >= 1"),
        (lambda: AvgPool2D(2, divisor_override=0), ValueError, "divisor_override must be"),
        (lambda: AvgPool2D(2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
        (lambda: Dropout(1.5), ValueError, r"p must be in \[0.0, 1.0\], got 1.5"),
        (lambda: Dropout("half"), TypeError, "p must be a float"),
        (lambda: BatchNorm2D(4, momentum=2), ValueError, "momentum must be in"),
        (lambda: BatchNorm2D(4, eps=0), ValueError, "eps must be > 0"),
        (lambda: LeakyReLU(math.inf), ValueError, "negative_slope must be finite"),
    ],
)
def test_constructor_errors(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_forward_errors_name_layer_and_shapes():
    conv = Conv2D(1, 4, 3)
    with pytest.raises(ValueError, match=r"Conv2D\(1, 4.*expected input of shape \(N, 1, H, W\), "
                       r"got \(2, 3, 8, 8\)"):  # fmt: skip
        conv.forward(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match=r"too small .*got input \(2, 1, 2, 2\)"):
        conv.forward(np.zeros((2, 1, 2, 2), np.float32))
    with pytest.raises(TypeError, match="has dtype float32 but received input of dtype float64"):
        conv.forward(np.zeros((2, 1, 8, 8)))
    with pytest.raises(TypeError, match=r"convert the input with .astype\(np.float32\)"):
        conv.forward(np.zeros((2, 1, 8, 8), np.uint8))
    with pytest.raises(TypeError, match="expected a numpy array, got list"):
        conv.forward([[[[0.0]]]])
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 16\).*add a Flatten"):
        Dense(16, 2).forward(np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2D.*expected input of shape \(N, C, H, W\)"):
        MaxPool2D(2).forward(np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2D\(3.*expected input of shape \(3, H, W\)"):
        BatchNorm2D(3).output_shape((4, 5, 5))
    with pytest.raises(TypeError, match="float32 or float64 array, got int64"):
        ReLU().forward(np.arange(4).reshape(2, 2))


@pytest.mark.parametrize("layer", ALL_LAYERS, ids=repr)
def test_backward_before_forward_is_a_clear_error(layer):
    with pytest.raises(RuntimeError, match="backward\\(\\) needs the activations of a forward"):
        layer.backward(np.ones((1, 1), np.float32))
