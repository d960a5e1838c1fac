"""GELU, SiLU, softmax and log-softmax: the ops (F.*) and the layers (L.GELU, L.SiLU, L.Softmax).

Both backends and both dtypes against PyTorch, compiled against the numpy reference,
float64 central differences, special values, every documented error, and save/load
round trips of the layers.
"""

import numpy as np
import pytest
from conftest import numerical_grad, tol

import fastcnn
import fastcnn.functional as F
from fastcnn import layers as L

# PyTorch is the reference of most of this module (it is in no extra; CI's checkout step has it).
torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: the torch comparisons are skipped"
)

# Tolerances against PyTorch: libm's and PyTorch's float32 erf/exp/tanh differ by a few ulp.
TORCH_TOL = {
    np.dtype(np.float32): {"rtol": 2e-5, "atol": 2e-6},
    np.dtype(np.float64): {"rtol": 1e-12, "atol": 1e-13},
}


def _inputs(rng, shape, dtype, scale=4.0):
    return np.asarray(rng.standard_normal(shape) * scale, dtype=dtype)


@pytest.fixture
def two_threads():
    """Let the compiled kernels split the work over two threads."""
    fastcnn.set_num_threads(2)
    yield
    fastcnn.set_num_threads(None)


def _torch_unary(name, x):
    if name == "gelu":
        return lambda t: torch.nn.functional.gelu(t, approximate="none")
    if name == "gelu_tanh":
        return lambda t: torch.nn.functional.gelu(t, approximate="tanh")
    return torch.nn.functional.silu


UNARY = {
    "gelu": (lambda x: F.gelu(x), lambda g, x: F.gelu_backward(g, x)),
    "gelu_tanh": (
        lambda x: F.gelu(x, approximate="tanh"),
        lambda g, x: F.gelu_backward(g, x, approximate="tanh"),
    ),
    "silu": (F.silu, F.silu_backward),
}


def _torch_forward_backward(fn, x, g):
    t = torch.from_numpy(x.copy()).requires_grad_()
    y = fn(t)
    (grad,) = torch.autograd.grad(y, t, torch.from_numpy(g.copy()))
    return y.detach().numpy(), grad.numpy()


# ---------------------------------------------------------------------------------------
# GELU and SiLU


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("shape", [(4, 3, 9, 11), (7, 13), (5,), (), (0, 3)])
def test_unary_forward_and_backward_match_torch(backend, dtype, rng, name, shape):
    forward, backward = UNARY[name]
    x = _inputs(rng, shape, dtype)
    g = np.asarray(rng.standard_normal(shape), dtype=dtype)
    y = forward(x)
    grad = backward(g, x)
    expected_y, expected_grad = _torch_forward_backward(_torch_unary(name, x), x, g)
    for got in (y, grad):
        assert got.shape == x.shape and got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_allclose(y, expected_y, **TORCH_TOL[dtype])
    np.testing.assert_allclose(grad, expected_grad, **TORCH_TOL[dtype])


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_compiled_matches_reference(dtype, rng, name, two_threads):
    if "cython" not in fastcnn.available_backends():
        pytest.skip("compiled extension not importable")
    forward, backward = UNARY[name]
    # Over 2**15 elements: the compiled kernel splits the work over the threads.
    x = _inputs(rng, (9, 4, 31, 37), dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    results = {}
    for be in ("cython", "numpy"):
        with fastcnn.use_backend(be):
            results[be] = forward(x), backward(g, x)
    for got, want in zip(results["cython"], results["numpy"], strict=True):
        np.testing.assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_gradient_matches_central_differences(backend, rng, name):
    forward, backward = UNARY[name]
    x = _inputs(rng, (3, 7), np.float64, scale=2.0)
    w = rng.standard_normal(x.shape)
    expected = numerical_grad(lambda: float(np.sum(forward(x) * w)), x)
    np.testing.assert_allclose(backward(w, x), expected, rtol=1e-6, atol=1e-8)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # numpy: NaN in, NaN out
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_special_values_as_torch(backend, dtype, name):
    forward, backward = UNARY[name]
    # -inf gives NaN (-inf * 0), as in PyTorch; large inputs saturate without overflow.
    x = np.array([np.nan, -np.inf, 0.0, -0.0, 1e4, -1e4, 1e-30, 80.0, -80.0], dtype=dtype)
    y, grad = forward(x), backward(np.ones_like(x), x)
    expected_y, expected_grad = _torch_forward_backward(_torch_unary(name, x), x, np.ones_like(x))
    np.testing.assert_allclose(y, expected_y, rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-6, atol=1e-30)
    assert np.signbit(y[3]) == np.signbit(expected_y[3])
    assert forward(np.array([np.inf], dtype))[0] == np.inf


def test_gelu_and_silu_known_values(backend, dtype):
    x = np.array([-1.0, 0.5, 2.0], dtype=dtype)
    np.testing.assert_allclose(
        F.gelu(x), [-0.15865525393145707, 0.34573123063700656, 1.9544997361036416], rtol=1e-6
    )
    np.testing.assert_allclose(
        F.silu(x), [-0.2689414213699951, 0.31122966560092724, 1.7615941559557646], rtol=1e-6
    )


def test_unary_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="approximate must be one of"):
        F.gelu(x, approximate="erf")
    with pytest.raises(ValueError, match="approximate must be one of"):
        F.gelu_backward(x, x, approximate=None)
    with pytest.raises(TypeError, match="float32 or float64"):
        F.silu(np.ones(3, np.int64))
    with pytest.raises(ValueError, match="grad_out must have the shape of x"):
        F.silu_backward(np.ones((3, 2), np.float32), x)
    with pytest.raises(TypeError, match="dtype"):
        F.gelu_backward(x.astype(np.float64), x)
    with pytest.raises(ValueError, match="approximate must be one of"):
        L.GELU("fast")


# ---------------------------------------------------------------------------------------
# Softmax and log-softmax

SOFTMAX_CASES = [((6, 10), 1), ((6, 10), 0), ((6, 10), -1), ((2, 3, 4, 5), 1)]
SOFTMAX_CASES += [((2, 3, 4, 5), a) for a in (0, 2, 3, -1, -3)]
SOFTMAX_CASES += [((4, 3), 1), ((3, 1), 1), ((7,), 0)]


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize(("shape", "axis"), SOFTMAX_CASES)
def test_softmax_matches_torch(backend, dtype, rng, log, shape, axis):
    forward, backward = (
        (F.log_softmax, F.log_softmax_backward) if log else (F.softmax, F.softmax_backward)
    )
    torch_fn = torch.log_softmax if log else torch.softmax
    x = _inputs(rng, shape, dtype, scale=3.0)
    g = rng.standard_normal(shape).astype(dtype)
    y = forward(x, axis)
    grad = backward(g, y, axis)
    expected_y, expected_grad = _torch_forward_backward(lambda t: torch_fn(t, axis), x, g)
    for got in (y, grad):
        assert got.shape == x.shape and got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_allclose(y, expected_y, **TORCH_TOL[dtype])
    np.testing.assert_allclose(grad, expected_grad, **TORCH_TOL[dtype])


def test_softmax_default_axis_is_the_channels(backend, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    np.testing.assert_allclose(F.softmax(x).sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_allclose(F.softmax(x), F.softmax(x, 1), rtol=0)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [1, 2])
def test_softmax_compiled_matches_reference(dtype, rng, log, axis, two_threads):
    if "cython" not in fastcnn.available_backends():
        pytest.skip("compiled extension not importable")
    forward, backward = (
        (F.log_softmax, F.log_softmax_backward) if log else (F.softmax, F.softmax_backward)
    )
    x = _inputs(rng, (8, 10, 23, 19), dtype)  # over 2**15: several threads
    g = rng.standard_normal(x.shape).astype(dtype)
    results = {}
    for be in ("cython", "numpy"):
        with fastcnn.use_backend(be):
            y = forward(x, axis)
            results[be] = y, backward(g, y, axis)
    for got, want in zip(results["cython"], results["numpy"], strict=True):
        np.testing.assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax_gradient_matches_central_differences(backend, rng, log, axis):
    forward, backward = (
        (F.log_softmax, F.log_softmax_backward) if log else (F.softmax, F.softmax_backward)
    )
    x = rng.standard_normal((3, 4, 2))
    w = rng.standard_normal(x.shape)
    expected = numerical_grad(lambda: float(np.sum(forward(x, axis) * w)), x)
    np.testing.assert_allclose(backward(w, forward(x, axis), axis), expected, rtol=1e-6, atol=1e-9)


def test_softmax_is_stable_for_huge_logits(backend, dtype):
    x = np.array([[1e4, 1e4 - 1, -1e4], [-3e38, -3e38, 0]], dtype=dtype)
    y = F.softmax(x, axis=1)
    assert np.all(np.isfinite(y))
    e = np.exp(-1.0)
    np.testing.assert_allclose(y[0], [1 / (1 + e), e / (1 + e), 0], rtol=1e-6)
    np.testing.assert_allclose(y[1], [0, 0, 1], atol=0)
    np.testing.assert_allclose(F.log_softmax(x, axis=1)[0, :2], np.log(y[0, :2]), rtol=1e-5)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # numpy: NaN in, NaN out
def test_softmax_nan_and_infinities(backend, dtype):
    x = np.array([[0.0, np.nan, 1.0], [-np.inf, 0.0, 1.0], [-np.inf, -np.inf, -np.inf]], dtype)
    y = F.softmax(x, axis=1)
    expected = torch.softmax(torch.from_numpy(x), 1).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_allclose(y[1], expected[1], rtol=1e-6)
    assert y[1, 0] == 0


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (0, 3, 2, 2)])
def test_softmax_empty(backend, dtype, shape):
    x = np.zeros(shape, dtype)
    y = F.softmax(x, axis=1)
    assert y.shape == shape and y.dtype == dtype
    assert F.softmax_backward(x, y, axis=1).shape == shape


def test_softmax_of_a_strided_input(backend, rng):
    x = rng.standard_normal((6, 10))[::2, ::3]
    np.testing.assert_allclose(
        F.softmax(x, axis=1), torch.softmax(torch.from_numpy(x.copy()), 1).numpy(), rtol=1e-12
    )


def test_softmax_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="axis 2 is out of range for an array of 2 dimensions"):
        F.softmax(x, axis=2)
    with pytest.raises(ValueError, match="out of range"):
        F.log_softmax(x, axis=-3)
    with pytest.raises(TypeError, match="axis must be an int"):
        F.softmax(x, axis=1.0)
    with pytest.raises(ValueError, match="out of range for an array of 0 dimensions"):
        F.softmax(np.float64(1.0), axis=0)
    with pytest.raises(TypeError, match="float32 or float64"):
        F.softmax(np.ones((2, 3), np.int32))
    with pytest.raises(ValueError, match="grad_out must have the shape of y"):
        F.softmax_backward(np.ones((3, 2), np.float32), x)
    with pytest.raises(TypeError, match="dtype"):
        F.log_softmax_backward(x.astype(np.float64), x)
    with pytest.raises(TypeError, match="axis must be an int"):
        L.Softmax(axis="1")
    with pytest.raises(ValueError, match=r"Softmax\(axis=3\) expected input with axis 3"):
        L.Softmax(axis=3).forward(x)
    with pytest.raises(ValueError, match="expected input with axis"):
        L.Softmax(axis=2).output_shape((5,))


def test_losses_softmax_keeps_working(backend, rng):
    logits = rng.standard_normal((4, 5))
    np.testing.assert_allclose(fastcnn.losses.softmax(logits), F.softmax(logits, axis=-1))
    ints = np.array([[1, 2, 3]])
    np.testing.assert_allclose(fastcnn.losses.softmax(ints).sum(), 1.0)


# ---------------------------------------------------------------------------------------
# The layers

LAYERS = [
    (lambda: L.GELU(), lambda: torch.nn.GELU()),
    (lambda: L.GELU("tanh"), lambda: torch.nn.GELU("tanh")),
    (lambda: L.SiLU(), lambda: torch.nn.SiLU()),
    (lambda: L.Softmax(), lambda: torch.nn.Softmax(dim=1)),
    (lambda: L.Softmax(axis=-1), lambda: torch.nn.Softmax(dim=-1)),
]


@pytest.mark.parametrize(("make", "make_torch"), LAYERS)
def test_layer_matches_torch_module(backend, dtype, rng, make, make_torch):
    layer, module = make(), make_torch()
    x = _inputs(rng, (3, 4, 5, 2), dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    y = layer.forward(x, training=True)
    grad = layer.backward(g)
    expected_y, expected_grad = _torch_forward_backward(module, x, g)
    np.testing.assert_allclose(y, expected_y, **TORCH_TOL[dtype])
    np.testing.assert_allclose(grad, expected_grad, **TORCH_TOL[dtype])
    assert layer.output_shape((4, 5, 2)) == (4, 5, 2)
    assert layer.num_params == 0


def test_layer_backward_needs_forward():
    for layer in (L.GELU(), L.SiLU(), L.Softmax()):
        with pytest.raises(RuntimeError, match="run forward first"):
            layer.backward(np.ones((2, 3), np.float32))


def test_layer_configs_and_reprs():
    assert L.GELU().get_config() == {"approximate": "none"}
    assert L.GELU("tanh").get_config() == {"approximate": "tanh"}
    assert L.SiLU().get_config() == {}
    assert L.Softmax(-1).get_config() == {"axis": -1}
    assert repr(L.GELU()) == "GELU()"
    assert repr(L.GELU("tanh")) == "GELU(approximate='tanh')"
    assert repr(L.SiLU()) == "SiLU()"
    assert repr(L.Softmax()) == "Softmax(axis=1)"
    for cls in (L.GELU, L.SiLU, L.Softmax):
        assert fastcnn.layers.LAYER_REGISTRY[cls.__name__] is cls
        assert cls.__module__ == "fastcnn.layers"


def test_model_with_the_layers_saves_and_loads(backend, dtype, rng, tmp_path):
    model = fastcnn.Sequential(
        [
            L.Conv2D(2, 4, 3, padding=1, dtype=dtype),
            L.GELU(),
            L.Softmax(axis=1),
            L.Flatten(),
            L.Dense(4 * 5 * 5, 6, dtype=dtype),
            L.GELU("tanh"),
            L.SiLU(),
            L.Dense(6, 3, dtype=dtype),
            L.Softmax(axis=-1),
        ]
    )
    x = rng.standard_normal((4, 2, 5, 5)).astype(dtype)
    y = model.forward(x)
    np.testing.assert_allclose(y.sum(axis=1), 1, rtol=1e-5)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastcnn.load(path)
    assert [type(a) for a in loaded] == [type(b) for b in model]
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(loaded.forward(x), y)


def test_layers_in_a_model_gradient_check(backend, rng):
    model = fastcnn.Sequential(
        [
            L.Dense(5, 4, dtype=np.float64),
            L.GELU(),
            L.Dense(4, 4, dtype=np.float64),
            L.SiLU(),
            L.GELU("tanh"),
            L.Softmax(),
        ]
    )
    x = rng.standard_normal((3, 5))
    w = rng.standard_normal((3, 4))
    model.forward(x, training=True)
    grad_x = model.backward(w)
    expected = numerical_grad(lambda: float(np.sum(model.forward(x, training=True) * w)), x)
    np.testing.assert_allclose(grad_x, expected, rtol=1e-6, atol=1e-9)
    weight, grad_weight = model.parameters()[0]
    model.forward(x, training=True)
    model.backward(w)
    expected_w = numerical_grad(lambda: float(np.sum(model.forward(x, training=True) * w)), weight)
    np.testing.assert_allclose(grad_weight, expected_w, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_keeps_its_relative_precision_for_negative_inputs(backend, dtype, approximate):
    # Where 1 + erf (1 + tanh) cancels, the output is tiny but still exact to a few ulp.
    from scipy.special import erfc, expit

    x = -np.linspace(2.0, 9.0, 57).astype(dtype)
    x64 = x.astype(np.float64)
    if approximate == "none":
        exact = x64 * 0.5 * erfc(-x64 / np.sqrt(2))
    else:
        exact = x64 * expit(2 * np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3))
    y = F.gelu(x, approximate)
    assert np.all(y < 0)
    # float32: rounding x / sqrt(2) costs up to ~2 z**2 ulp of relative error in erfc(z).
    np.testing.assert_allclose(y, exact, rtol=2e-5 if dtype == np.float32 else 1e-12, atol=0)
