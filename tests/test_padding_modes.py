"""pad2d and Conv2D's padding modes: PyTorch, the numpy oracle, central differences."""

import json
import os

import numpy as np
import pytest
from conftest import numerical_grad, tol
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
import fastcnn.functional as F
from fastcnn.layers import Conv2D, Flatten, layer_from_config
from fastcnn.model import Sequential

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: comparisons with torch.nn.functional skipped"
)
TF = torch.nn.functional
# PyTorch notes that 'same' with an even kernel copies the input: expected, not a problem.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
MODES = ["zeros", "reflect", "replicate", "circular"]
TORCH_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
              "circular": "circular"}  # fmt: skip


def assert_close(got, expected, dtype):
    expected = np.asarray(expected)
    assert got.shape == expected.shape
    assert got.dtype == dtype
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    t = tol(dtype)
    assert_allclose(got, expected, rtol=t["rtol"], atol=t["atol"] * scale)


def tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(True)


# (x shape, pads): odd sizes, asymmetric pads, pads as large as each mode allows.
PAD_CASES = [
    ((2, 3, 5, 4), (0, 0, 0, 0)),
    ((1, 2, 5, 4), (1, 2, 3, 0)),
    ((2, 1, 3, 3), (2, 2, 2, 2)),
    ((1, 2, 6, 4), (3, 1, 0, 5)),
    ((3, 1, 2, 7), (0, 6, 1, 1)),
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("x_shape", "pads"), PAD_CASES)
def test_pad2d_matches_torch(x_shape, pads, mode, backend, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    tx = tensor(x)
    ty = TF.pad(tx, pads, TORCH_MODE[mode])
    y = F.pad2d(x, pads, mode)
    assert_array_equal(y, ty.detach().numpy(), strict=True)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g))
    assert_close(F.pad2d_backward(g, x.shape, pads, mode), tx.grad.numpy(), dtype)


@pytest.mark.parametrize("mode", MODES)
def test_pad2d_compiled_matches_the_numpy_reference(mode, dtype, rng):
    if "cython" not in fastcnn.available_backends():
        pytest.skip(f"compiled extension not importable: {fastcnn.backend_import_error()}")
    x = rng.standard_normal((4, 5, 9, 8)).astype(dtype)
    pads = (3, 7, 8, 2)
    out = {}
    for name in ("numpy", "cython"):
        with fastcnn.use_backend(name):
            y = F.pad2d(x, pads, mode)
            g = np.linspace(-1, 1, y.size, dtype=dtype).reshape(y.shape)
            out[name] = (y, F.pad2d_backward(g, x.shape, pads, mode))
    assert_array_equal(out["cython"][0], out["numpy"][0], strict=True)
    assert_close(out["cython"][1], out["numpy"][1], dtype)


@pytest.mark.parametrize("mode", MODES)
def test_pad2d_backward_matches_central_differences(mode, backend, rng):
    x = rng.standard_normal((1, 2, 3, 4))
    pads = (3, 1, 2, 2)
    weights = rng.standard_normal(F.pad2d(x, pads, mode).shape)
    grad = F.pad2d_backward(weights, x.shape, pads, mode)
    numeric = numerical_grad(lambda: float((F.pad2d(x, pads, mode) * weights).sum()), x)
    assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


def test_pad2d_empty_batches(backend, dtype):
    x = np.zeros((0, 2, 3, 3), dtype)
    assert F.pad2d(x, (1, 1, 2, 2), "reflect").shape == (0, 2, 7, 5)
    assert F.pad2d_backward(np.zeros((0, 2, 7, 5), dtype), x.shape, (1, 1, 2, 2),
                            "reflect").shape == (0, 2, 3, 3)  # fmt: skip


@pytest.mark.parametrize(
    ("pads", "mode", "error", "match"),
    [
        ((3, 0, 0, 0), "reflect", ValueError, "smaller than the input width 3"),
        ((0, 0, 0, 4), "reflect", ValueError, "smaller than the input height 4"),
        ((4, 0, 0, 0), "circular", ValueError, "at most the input width 3"),
        ((-1, 0, 0, 0), "zeros", ValueError, "non-negative"),
        ((1, 1), "zeros", TypeError, "4 ints"),
        ((1, 1, 1, 1), "constant", ValueError, "padding mode must be one of"),
    ],
)
def test_pad2d_errors(pads, mode, error, match):
    with pytest.raises(error, match=match):
        F.pad2d(np.zeros((1, 1, 4, 3)), pads, mode)


def test_pad2d_backward_errors():
    with pytest.raises(ValueError, match=r"grad_out must have shape \(1, 1, 6, 5\)"):
        F.pad2d_backward(np.zeros((1, 1, 6, 6)), (1, 1, 4, 3), (1, 1, 1, 1), "replicate")
    with pytest.raises(TypeError, match="input_shape"):
        F.pad2d_backward(np.zeros((1, 1, 6, 5)), np.zeros((1, 1, 4, 3)), (1, 1, 1, 1))


# ---------------------------------------------------------------------------------------
# Conv2D(padding_mode=...)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "kwargs",
    [{"padding": 1}, {"padding": (2, 1), "stride": 2}, {"padding": "same", "dilation": 2},
     {"padding": (1, 2), "groups": 2}, {"padding": "same", "kernel_size": (2, 4)}],
)  # fmt: skip
def test_conv2d_padding_modes_match_torch(kwargs, mode, backend, dtype, rng):
    kwargs = dict(kwargs)
    kernel = kwargs.pop("kernel_size", 3)
    layer = Conv2D(4, 6, kernel, padding_mode=mode, dtype=dtype, rng=0, **kwargs)
    twin = torch.nn.Conv2d(4, 6, kernel, padding_mode=mode, **kwargs).to(torch.float64)
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(layer.weight.astype(np.float64)))
        twin.bias.copy_(torch.from_numpy(rng.standard_normal(6)))
    layer.bias[...] = twin.bias.detach().numpy()
    x = rng.standard_normal((2, 4, 7, 6)).astype(dtype)
    tx = tensor(x.astype(np.float64))
    ty = twin(tx)
    y = layer.forward(x)
    assert y.shape == (2, *layer.output_shape((4, 7, 6)))
    assert_close(y, ty.detach().numpy().astype(dtype), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g.astype(np.float64)))
    assert_close(layer.backward(g), tx.grad.numpy().astype(dtype), dtype)
    assert_close(layer.grads["weight"], twin.weight.grad.numpy().astype(dtype), dtype)
    assert_close(layer.grads["bias"], twin.bias.grad.numpy().astype(dtype), dtype)


@pytest.mark.parametrize("mode", ["reflect", "circular"])
def test_conv2d_padding_mode_gradients_match_central_differences(mode, backend, rng):
    layer = Conv2D(2, 3, 3, stride=2, padding=2, padding_mode=mode, dtype=np.float64, rng=1)
    layer.bias[...] = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 5, 4))
    weights = rng.standard_normal((2, *layer.output_shape((2, 5, 4))))

    def loss():
        return float((layer.forward(x) * weights).sum())

    for name, array in (("x", x), ("weight", layer.weight), ("bias", layer.bias)):
        loss()
        grad_x = layer.backward(weights)
        analytic = grad_x if name == "x" else layer.grads[name].copy()
        assert_allclose(analytic, numerical_grad(loss, array), rtol=1e-6, atol=1e-7)


def test_first_layer_skips_the_input_gradient_with_a_mode(rng):
    layer = Conv2D(1, 2, 3, padding=1, padding_mode="replicate", rng=0)
    layer.needs_input_grad = False
    x = rng.standard_normal((2, 1, 4, 4)).astype(np.float32)
    assert layer.backward(np.ones_like(layer.forward(x), shape=(2, 2, 4, 4))) is None


def test_padding_mode_config_repr_and_errors():
    layer = Conv2D(2, 3, 3, padding=1, padding_mode="reflect")
    config = json.loads(json.dumps(layer.get_config()))
    assert config["padding_mode"] == "reflect"
    assert layer_from_config("Conv2D", config).padding_mode == "reflect"
    assert "padding_mode='reflect'" in repr(layer)
    # zero padding writes no key, so such files are the same as before the modes existed,
    # and a config without the key (every file written before) builds zero padding.
    plain = Conv2D(2, 3, 3, padding=1)
    assert "padding_mode" not in plain.get_config() and "padding_mode" not in repr(plain)
    assert layer_from_config("Conv2D", plain.get_config()).padding_mode == "zeros"
    with pytest.raises(ValueError, match="padding mode must be one of"):
        Conv2D(2, 3, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"Conv2D\(.*reflect padding needs pads smaller"):
        Conv2D(1, 1, 3, padding=3, padding_mode="reflect").output_shape((1, 3, 8))
    with pytest.raises(ValueError, match="reflect padding needs pads smaller"):
        Conv2D(1, 1, 3, padding=2, padding_mode="reflect").forward(
            np.zeros((1, 1, 2, 5), np.float32)
        )


@pytest.mark.parametrize("mode", MODES)
def test_padding_mode_survives_save_and_load(mode, backend, dtype, tmp_path, rng):
    model = Sequential(
        Conv2D(2, 3, 3, padding=2, padding_mode=mode, dtype=dtype, rng=0), Flatten()
    )
    x = rng.standard_normal((2, 2, 5, 5)).astype(dtype)
    model.save(tmp_path / "m.npz")
    loaded = fastcnn.load(tmp_path / "m.npz")
    assert loaded.layers[0].padding_mode == mode
    assert_array_equal(loaded.forward(x), model.forward(x), strict=True)


def test_a_model_file_written_before_the_modes_loads_with_zero_padding():
    path = os.path.join(os.path.dirname(__file__), "data", "golden_model_f32.npz")
    convs = [layer for layer in fastcnn.load(path) if isinstance(layer, Conv2D)]
    assert convs and all(layer.padding_mode == "zeros" for layer in convs)
