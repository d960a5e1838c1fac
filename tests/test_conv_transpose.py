"""conv_transpose2d and ConvTranspose2D: PyTorch, the numpy oracle, central differences."""

import json

import numpy as np
import pytest
from conftest import numerical_grad, tol
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
import fastcnn.functional as F
from fastcnn.layers import ConvTranspose2D, Flatten, layer_from_config
from fastcnn.model import Sequential

torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: comparisons with torch.nn.functional skipped"
)
TF = torch.nn.functional


@pytest.fixture(scope="module", autouse=True)
def torch_single_thread():
    """Tiny tensors: one torch thread is fastest and leaves the cores to fastcnn."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def assert_close(got, expected, dtype):
    expected = np.asarray(expected)
    assert got.shape == expected.shape
    assert got.dtype == dtype
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    t = tol(dtype)
    assert_allclose(got, expected, rtol=t["rtol"], atol=t["atol"] * scale)


def tensor(a):
    return torch.from_numpy(np.ascontiguousarray(a)).requires_grad_(True)


# (x shape, weight shape, kwargs): odd sizes, non-square kernels, every argument swept,
# output_padding both below the stride and (with a dilation) at or above it.
CASES = [
    ((2, 3, 5, 4), (3, 2, 3, 3), {}),
    ((1, 2, 7, 5), (2, 3, 2, 3), {"stride": 2}),
    ((2, 3, 4, 5), (3, 4, 3, 2), {"stride": 2, "padding": 1, "output_padding": 1}),
    ((1, 4, 3, 3), (4, 1, 3, 3), {"stride": (3, 2), "padding": (1, 0), "groups": 2}),
    ((2, 6, 5, 3), (6, 2, 3, 3), {"stride": 2, "groups": 3, "output_padding": (1, 0)}),
    ((1, 2, 4, 6), (2, 3, 3, 3), {"dilation": 2, "padding": 2}),
    ((1, 2, 5, 4), (2, 2, 3, 2), {"dilation": (2, 3), "output_padding": (1, 2)}),
    ((2, 2, 3, 4), (2, 3, 3, 3), {"stride": 2, "dilation": 3, "output_padding": 2}),
    ((1, 3, 1, 1), (3, 2, 4, 5), {"stride": 3, "padding": (1, 2)}),
    ((3, 1, 6, 2), (1, 5, 1, 1), {"stride": (1, 2), "output_padding": (0, 1)}),
    ((1, 4, 5, 5), (4, 2, 5, 3), {"stride": 2, "padding": 2, "dilation": 2, "groups": 4}),
]


def case_id(value):
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return "-".join(f"{k[:3]}{v}".replace(" ", "") for k, v in value.items()) or "default"


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), CASES, ids=case_id)
def test_conv_transpose2d_matches_torch(x_shape, w_shape, kwargs, backend, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[1] * kwargs.get("groups", 1)).astype(dtype)
    tx, tw, tb = tensor(x), tensor(w), tensor(b)
    ty = TF.conv_transpose2d(tx, tw, tb, **kwargs)
    y = F.conv_transpose2d(x, w, b, **kwargs)
    assert_close(y, ty.detach().numpy(), dtype)

    r = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(r))
    gx, gw, gb = F.conv_transpose2d_backward(r, x, w, **kwargs)
    assert_close(gx, tx.grad.numpy(), dtype)
    assert_close(gw, tw.grad.numpy(), dtype)
    assert_close(gb, tb.grad.numpy(), dtype)


@pytest.mark.parametrize(("x_shape", "w_shape", "kwargs"), CASES[::2], ids=case_id)
def test_compiled_matches_the_numpy_reference(x_shape, w_shape, kwargs, dtype, rng):
    if "cython" not in fastcnn.available_backends():
        pytest.skip(f"compiled extension not importable: {fastcnn.backend_import_error()}")
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    results = {}
    for name in ("numpy", "cython"):
        with fastcnn.use_backend(name):
            y = F.conv_transpose2d(x, w, **kwargs)
            r = np.linspace(-1, 1, y.size, dtype=dtype).reshape(y.shape)
            results[name] = (y, *F.conv_transpose2d_backward(r, x, w, **kwargs))
    for got, expected in zip(results["cython"], results["numpy"], strict=True):
        assert_close(got, expected, dtype)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stride": 2, "padding": 1, "output_padding": 1},
        {"dilation": 2, "output_padding": 1, "groups": 2},
    ],
)
def test_gradients_match_central_differences(kwargs, backend, rng):
    x = rng.standard_normal((2, 2, 3, 4))
    w = rng.standard_normal((2, 1 if kwargs.get("groups") else 3, 3, 2))
    b = rng.standard_normal(w.shape[1] * kwargs.get("groups", 1))
    weights = rng.standard_normal(F.conv_transpose2d(x, w, b, **kwargs).shape)

    def loss():
        return float((F.conv_transpose2d(x, w, b, **kwargs) * weights).sum())

    gx, gw, gb = F.conv_transpose2d_backward(weights, x, w, **kwargs)
    for analytic, array in ((gx, x), (gw, w), (gb, b)):
        assert_allclose(analytic, numerical_grad(loss, array), rtol=1e-6, atol=1e-7)


def test_input_grad_is_skipped_on_request_and_empty_batches_work(backend, dtype, rng):
    x = rng.standard_normal((2, 2, 3, 3)).astype(dtype)
    w = rng.standard_normal((2, 3, 2, 2)).astype(dtype)
    g = np.ones((2, 3, 6, 6), dtype)
    gx, gw, gb = F.conv_transpose2d_backward(g, x, w, stride=2, needs_input_grad=False)
    assert gx is None
    assert_close(gw, F.conv_transpose2d_backward(g, x, w, stride=2)[1], dtype)
    assert_close(gb, np.full(3, 2 * 6 * 6, dtype), dtype)
    empty = np.zeros((0, 2, 3, 3), dtype)
    assert F.conv_transpose2d(empty, w, stride=2).shape == (0, 3, 6, 6)
    gx, gw, gb = F.conv_transpose2d_backward(np.zeros((0, 3, 6, 6), dtype), empty, w, stride=2)
    assert gx.shape == (0, 2, 3, 3)
    assert_array_equal(gw, np.zeros_like(w))
    assert_array_equal(gb, np.zeros(3, dtype))


def test_is_the_adjoint_of_conv2d(backend, rng):
    # <conv2d(u), v> == <u, conv_transpose2d(v)> for the same weight and geometry.
    w = rng.standard_normal((3, 2, 3, 3))
    u = rng.standard_normal((2, 2, 9, 8))
    kwargs = {"stride": 2, "padding": 1, "dilation": 1}
    cu = F.conv2d(u, w, **kwargs)
    v = rng.standard_normal(cu.shape)
    tv = F.conv_transpose2d(v, w, output_padding=(0, 1), **kwargs)
    assert tv.shape == u.shape
    assert_allclose((cu * v).sum(), (u * tv).sum(), rtol=1e-12)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kwargs", "match"),
    [
        ((1, 2, 3, 3), (2, 2, 3, 3), {"stride": 2, "output_padding": 2}, "output_padding"),
        ((1, 2, 3, 3), (2, 2, 3, 3), {"output_padding": 1}, "smaller than either the stride"),
        ((1, 2, 2, 2), (2, 2, 2, 2), {"padding": 2}, "padding is too large"),
        ((1, 2, 3, 3), (3, 2, 3, 3), {}, r"C_in = 2"),
        ((1, 4, 3, 3), (4, 2, 3, 3), {"groups": 3}, "divisible by groups=3"),
        ((1, 2, 3, 3), (2, 2, 3, 3), {"groups": 0}, "groups must be a positive int"),
        ((1, 2, 3, 3), (2, 2, 3, 3), {"stride": 0}, "stride"),
        ((1, 2, 0, 3), (2, 2, 3, 3), {}, "non-empty image"),
    ],
)
def test_errors(x_shape, w_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        F.conv_transpose2d(np.zeros(x_shape), np.zeros(w_shape), **kwargs)


def test_errors_on_dtypes_bias_and_grad_out():
    x, w = np.zeros((1, 2, 3, 3)), np.zeros((2, 4, 3, 3))
    with pytest.raises(TypeError, match="dtype"):
        F.conv_transpose2d(x, w.astype(np.float32))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        F.conv_transpose2d(x, w, np.zeros(2))
    with pytest.raises(ValueError, match=r"grad_out must have shape \(1, 4, 5, 5\)"):
        F.conv_transpose2d_backward(np.zeros((1, 4, 6, 6)), x, w)


# ---------------------------------------------------------------------------------------
# The layer


def test_layer_matches_torch_with_copied_weights(backend, dtype, rng):
    layer = ConvTranspose2D(4, 6, (3, 2), stride=2, padding=1, output_padding=1, groups=2,
                            dtype=dtype, rng=0)  # fmt: skip
    twin = torch.nn.ConvTranspose2d(4, 6, (3, 2), 2, 1, 1, groups=2).to(torch.float64)
    with torch.no_grad():
        twin.weight.copy_(torch.from_numpy(layer.weight.astype(np.float64)))
        twin.bias.copy_(torch.from_numpy(rng.standard_normal(6)))
    layer.bias[...] = twin.bias.detach().numpy()
    x = rng.standard_normal((2, 4, 5, 4)).astype(dtype)
    tx = tensor(x.astype(np.float64))
    ty = twin(tx)
    y = layer.forward(x)
    assert y.shape == (2, *layer.output_shape((4, 5, 4)))
    assert_close(y, ty.detach().numpy().astype(dtype), dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g.astype(np.float64)))
    gx = layer.backward(g)
    assert_close(gx, tx.grad.numpy().astype(dtype), dtype)
    assert_close(layer.grads["weight"], twin.weight.grad.numpy().astype(dtype), dtype)
    assert_close(layer.grads["bias"], twin.bias.grad.numpy().astype(dtype), dtype)


def test_layer_init_uses_torchs_fan_in_and_zero_bias():
    layer = ConvTranspose2D(8, 6, 3, groups=2, rng=0)
    assert layer.weight.shape == (8, 3, 3, 3) and layer.bias.shape == (6,)
    bound = np.sqrt(6.0 / (3 * 3 * 3))
    assert np.abs(layer.weight).max() <= bound
    assert np.abs(layer.weight).max() > 0.8 * bound
    assert_array_equal(layer.bias, np.zeros(6, np.float32))
    assert ConvTranspose2D(8, 6, 3, bias=False).bias is None


def test_layer_gradients_match_central_differences(rng):
    layer = ConvTranspose2D(2, 3, 3, stride=2, padding=1, output_padding=1, dtype=np.float64,
                            rng=1)  # fmt: skip
    layer.bias[...] = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 3, 3))
    weights = rng.standard_normal((2, *layer.output_shape((2, 3, 3))))

    def loss():
        return float((layer.forward(x) * weights).sum())

    loss()
    gx = layer.backward(weights)
    assert_allclose(gx, numerical_grad(loss, x), rtol=1e-6, atol=1e-7)
    for name in ("weight", "bias"):
        loss()
        layer.backward(weights)
        analytic = layer.grads[name].copy()
        assert_allclose(analytic, numerical_grad(loss, layer.params[name]), rtol=1e-6, atol=1e-7)


def test_layer_config_shape_errors_and_repr():
    layer = ConvTranspose2D(2, 4, (3, 2), stride=2, padding=(1, 0), output_padding=1,
                            dilation=1, groups=2, bias=False, dtype=np.float64)  # fmt: skip
    config = json.loads(json.dumps(layer.get_config()))
    rebuilt = layer_from_config("ConvTranspose2D", config)
    assert rebuilt.get_config() == config and rebuilt.weight.shape == (2, 2, 3, 2)
    assert layer.output_shape((2, 4, 5)) == (4, 8, 11)
    assert "output_padding=(1, 1)" in repr(layer) and "groups=2" in repr(layer)
    with pytest.raises(ValueError, match=r"expected input of shape \(2, H, W\)"):
        layer.output_shape((3, 4, 4))
    with pytest.raises(ValueError, match="leaves no output"):
        ConvTranspose2D(1, 1, 1, padding=2).output_shape((1, 3, 3))
    with pytest.raises(ValueError, match="output_padding"):
        ConvTranspose2D(1, 1, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="groups=2 must divide"):
        ConvTranspose2D(3, 4, 3, groups=2)


def test_layer_save_load_round_trip(backend, dtype, tmp_path, rng):
    model = Sequential(
        ConvTranspose2D(2, 3, 3, stride=2, padding=1, output_padding=1, dtype=dtype, rng=0),
        Flatten(),
    )
    model.layers[0].bias[...] = rng.standard_normal(3)
    x = rng.standard_normal((2, 2, 4, 4)).astype(dtype)
    model.save(tmp_path / "m.npz")
    loaded = fastcnn.load(tmp_path / "m.npz")
    assert loaded.get_config() == model.get_config()
    assert_array_equal(loaded.forward(x), model.forward(x), strict=True)
