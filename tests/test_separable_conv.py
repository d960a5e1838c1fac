"""DepthwiseConv2D and SeparableConv2D: PyTorch twins, central differences, save/load."""

import json

import numpy as np
import pytest
from conftest import numerical_grad, tol
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
from fastcnn.layers import DepthwiseConv2D, Flatten, SeparableConv2D, layer_from_config
from fastcnn.model import Sequential

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: comparisons with torch.nn layers skipped"
)


def assert_close(got, expected, dtype):
    expected = np.asarray(expected).astype(dtype)
    assert got.shape == expected.shape and got.dtype == dtype
    scale = max(1.0, float(np.abs(expected).max()))
    t = tol(dtype)
    assert_allclose(got, expected, rtol=t["rtol"], atol=t["atol"] * scale)


def copy_into(module, weight, bias=None):
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(weight.astype(np.float64)))
        if bias is not None:
            module.bias.copy_(torch.from_numpy(bias.astype(np.float64)))


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_matches_torch(multiplier, backend, dtype, rng):
    layer = DepthwiseConv2D(3, (3, 2), stride=2, padding=1, depth_multiplier=multiplier,
                            dtype=dtype, rng=0)  # fmt: skip
    layer.bias[...] = rng.standard_normal(layer.bias.shape)
    twin = torch.nn.Conv2d(3, 3 * multiplier, (3, 2), 2, 1, groups=3).double()
    copy_into(twin, layer.weight, layer.bias)
    x = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    ty = twin(tx)
    y = layer.forward(x)
    assert y.shape == (2, *layer.output_shape((3, 7, 6)))
    assert_close(y, ty.detach().numpy(), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g.astype(np.float64)))
    assert_close(layer.backward(g), tx.grad.numpy(), dtype)
    assert_close(layer.grads["weight"], twin.weight.grad.numpy(), dtype)
    assert_close(layer.grads["bias"], twin.bias.grad.numpy(), dtype)


def test_depthwise_shape_init_and_config():
    layer = DepthwiseConv2D(4, 3, depth_multiplier=2, padding="same", bias=False)
    assert layer.weight.shape == (8, 1, 3, 3) and layer.groups == 4 and layer.bias is None
    assert np.abs(layer.weight).max() <= np.sqrt(6.0 / 9)
    config = json.loads(json.dumps(layer.get_config()))
    assert config["channels"] == 4 and config["depth_multiplier"] == 2
    assert "groups" not in config and "out_channels" not in config
    rebuilt = layer_from_config("DepthwiseConv2D", config)
    assert rebuilt.get_config() == config
    assert repr(layer).startswith("DepthwiseConv2D(4, kernel_size=(3, 3)")
    assert "depth_multiplier=2" in repr(layer)
    with pytest.raises(ValueError, match="depth_multiplier"):
        DepthwiseConv2D(4, 3, depth_multiplier=0)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_separable_matches_torch(mode, backend, dtype, rng):
    layer = SeparableConv2D(3, 5, 3, stride=(1, 2), padding=1, depth_multiplier=2,
                            padding_mode=mode, dtype=dtype, rng=0)  # fmt: skip
    layer.params["bias"][...] = rng.standard_normal(5)
    depthwise = torch.nn.Conv2d(3, 6, 3, (1, 2), 1, groups=3, bias=False, padding_mode=mode)
    pointwise = torch.nn.Conv2d(6, 5, 1)
    twin = torch.nn.Sequential(depthwise, pointwise).double()
    copy_into(depthwise, layer.params["depthwise_weight"])
    copy_into(pointwise, layer.params["pointwise_weight"], layer.params["bias"])
    x = rng.standard_normal((2, 3, 6, 7)).astype(dtype)
    tx = torch.from_numpy(x.astype(np.float64)).requires_grad_(True)
    ty = twin(tx)
    y = layer.forward(x)
    assert y.shape == (2, *layer.output_shape((3, 6, 7)))
    assert_close(y, ty.detach().numpy(), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g.astype(np.float64)))
    assert_close(layer.backward(g), tx.grad.numpy(), dtype)
    assert_close(layer.grads["depthwise_weight"], depthwise.weight.grad.numpy(), dtype)
    assert_close(layer.grads["pointwise_weight"], pointwise.weight.grad.numpy(), dtype)
    assert_close(layer.grads["bias"], pointwise.bias.grad.numpy(), dtype)


def test_separable_gradients_match_central_differences(backend, rng):
    layer = SeparableConv2D(2, 3, 3, padding=1, dtype=np.float64, rng=1)
    layer.params["bias"][...] = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 4, 5))
    weights = rng.standard_normal((2, *layer.output_shape((2, 4, 5))))

    def loss():
        return float((layer.forward(x) * weights).sum())

    for name in ("x", *layer.params):
        array = x if name == "x" else layer.params[name]
        loss()
        grad_x = layer.backward(weights)
        analytic = grad_x if name == "x" else layer.grads[name].copy()
        assert_allclose(analytic, numerical_grad(loss, array), rtol=1e-6, atol=1e-7)


def test_separable_params_config_and_errors():
    layer = SeparableConv2D(4, 8, 3, bias=False, dtype=np.float64)
    assert list(layer.params) == ["depthwise_weight", "pointwise_weight"]
    assert layer.params["pointwise_weight"].shape == (8, 4, 1, 1)
    assert layer.num_params == 4 * 9 + 8 * 4
    config = json.loads(json.dumps(layer.get_config()))
    assert layer_from_config("SeparableConv2D", config).get_config() == config
    assert repr(layer).startswith("SeparableConv2D(4, 8, kernel_size=(3, 3)")
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 4, H, W\)"):
        layer.forward(np.zeros((1, 3, 5, 5)))
    with pytest.raises(TypeError, match="dtype float64"):
        layer.forward(np.zeros((1, 4, 5, 5), np.float32))


def test_save_load_round_trip(backend, dtype, tmp_path, rng):
    model = Sequential(
        DepthwiseConv2D(2, 3, padding=1, depth_multiplier=2, dtype=dtype, rng=0),
        SeparableConv2D(4, 3, 3, padding=1, padding_mode="circular", dtype=dtype, rng=1),
        Flatten(),
    )
    for layer in model:
        for array in layer.params.values():
            array[...] = rng.standard_normal(array.shape)
    x = rng.standard_normal((2, 2, 5, 5)).astype(dtype)
    model.save(tmp_path / "m.npz")
    loaded = fastcnn.load(tmp_path / "m.npz")
    assert loaded.get_config() == model.get_config()
    assert_array_equal(loaded.forward(x), model.forward(x), strict=True)
    # Training the loaded model updates the arrays both steps compute with.
    (_, separable, _) = loaded
    separable.params["depthwise_weight"][...] = 0
    assert_array_equal(separable.forward(np.asarray(loaded.layers[0].forward(x))),
                       np.broadcast_to(separable.params["bias"][:, None, None],
                                       (2, 3, 5, 5)).astype(dtype))  # fmt: skip
