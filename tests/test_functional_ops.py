"""The ops functional gained for the layers, losses and optimizers: batch norm, leaky ReLU,
dropout, softmax cross-entropy and the SGD/Adam steps.

Each is checked on both backends and both float dtypes: compiled against the numpy
reference, float64 gradients against central differences, and values against PyTorch.
"""

import inspect

import numpy as np
import pytest
from conftest import numerical_grad, tol
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
import fastcnn.functional as F
from fastcnn import _backend

torch = pytest.importorskip("torch")

COMPILED = "cython" in fastcnn.available_backends()
needs_compiled = pytest.mark.skipif(not COMPILED, reason="compiled extension not built")


def on(name, fn, *args, **kwargs):
    with fastcnn.use_backend(name):
        return fn(*args, **kwargs)


def t(a):
    return torch.from_numpy(np.array(a))


# ---------------------------------------------------------------------------------------
# The contract


def test_both_backends_provide_every_op_of_the_protocol():
    members = [
        name
        for name, _ in inspect.getmembers(_backend.Backend, inspect.isfunction)
        if not name.startswith("_")
    ]
    assert {"batch_norm_forward", "leaky_relu_backward", "sgd_update"} <= set(members)
    backends = [_backend.reference_module()] + ([_backend._compiled] if COMPILED else [])
    for backend in backends:
        for name in members:
            assert callable(getattr(backend, name)), name
    reference = _backend.reference_module()
    for name in members:
        expected = len(inspect.signature(getattr(_backend.Backend, name)).parameters) - 1
        assert len(inspect.signature(getattr(reference, name)).parameters) == expected, name


# ---------------------------------------------------------------------------------------
# Batch norm


@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (7, 2), (2, 5, 1, 1), (3, 1, 4)])
@pytest.mark.parametrize("training", [True, False])
@needs_compiled
def test_batch_norm_compiled_matches_reference(dtype, rng, shape, training):
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    c = shape[1]
    weight, bias = rng.standard_normal((2, c)).astype(dtype)
    stats = {}
    results = {}
    for name in ("numpy", "cython"):
        stats[name] = [np.full(c, 0.5, dtype), np.full(c, 2.0, dtype)]
        y, mean, inv_std = on(name, F.batch_norm, x, *stats[name], weight, bias, training)
        g = rng.standard_normal(shape).astype(dtype) if name == "numpy" else results["g"]
        results["g"] = g
        grads = on(name, F.batch_norm_backward, g, x, weight, mean, inv_std, training)
        results[name] = (y, mean, inv_std, *grads)
    for got, want in zip(results["cython"], results["numpy"], strict=True):
        assert got.dtype == dtype
        assert_allclose(got, want, **tol(dtype))
    for got, want in zip(stats["cython"], stats["numpy"], strict=True):
        assert_allclose(got, want, **tol(dtype))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(backend, dtype, rng, training):
    x = rng.standard_normal((5, 3, 4, 4)).astype(dtype) * 2 - 1
    weight, bias = rng.standard_normal((2, 3)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    rm, rv = np.full(3, 0.1, dtype), np.full(3, 1.5, dtype)
    y, mean, inv_std = F.batch_norm(x, rm, rv, weight, bias, training, 0.2, 1e-3)
    grad_x, grad_w, grad_b = F.batch_norm_backward(g, x, weight, mean, inv_std, training)

    tx, tw, tb = (t(a).requires_grad_() for a in (x, weight, bias))
    trm, trv = t(np.full(3, 0.1, dtype)), t(np.full(3, 1.5, dtype))
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training, 0.2, 1e-3)
    ty.backward(t(g))
    loose = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-9}
    assert_allclose(y, ty.detach().numpy(), **loose)
    assert_allclose(rm, trm.numpy(), **loose)
    assert_allclose(rv, trv.numpy(), **loose)
    assert_allclose(grad_x, tx.grad.numpy(), **loose)
    assert_allclose(grad_w, tw.grad.numpy(), **loose)
    assert_allclose(grad_b, tb.grad.numpy(), **loose)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradients_match_central_differences(backend, rng, training):
    x = rng.standard_normal((3, 2, 3, 2))
    weight, bias = rng.standard_normal((2, 2))
    r = rng.standard_normal(x.shape)

    def loss():
        stats = (np.array([0.2, -0.1]), np.array([1.3, 0.7]))  # fresh: training updates them
        return float(np.sum(F.batch_norm(x, *stats, weight, bias, training)[0] * r))

    _, mean, inv_std = F.batch_norm(x, np.array([0.2, -0.1]), np.array([1.3, 0.7]),
                                    weight, bias, training)  # fmt: skip
    grad_x, grad_w, grad_b = F.batch_norm_backward(r, x, weight, mean, inv_std, training)
    assert_allclose(grad_x, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    assert_allclose(grad_w, numerical_grad(loss, weight), rtol=1e-5, atol=1e-7)
    assert_allclose(grad_b, numerical_grad(loss, bias), rtol=1e-5, atol=1e-7)


def test_batch_norm_defaults_and_strided_running_stats(backend, dtype, rng):
    x = rng.standard_normal((6, 4)).astype(dtype)
    buffer = np.zeros((4, 2), dtype)  # running_mean as a strided column view of it
    rm, rv = buffer[:, 0], np.ones(4, dtype)
    assert not rm.flags.c_contiguous
    y, mean, _ = F.batch_norm(x, rm, rv, training=True, momentum=0.5)
    assert_allclose(mean, x.mean(axis=0), **tol(dtype))
    assert_allclose(buffer[:, 0], 0.5 * x.mean(axis=0), **tol(dtype))  # updated in place
    assert_allclose(y.mean(axis=0), 0, atol=1e-5)
    y_none, _, _ = F.batch_norm(x, None, None, training=True)  # no running statistics
    assert_allclose(y_none, y, **tol(dtype))


def test_batch_norm_eval_reads_read_only_running_stats(backend, dtype, rng):
    x = rng.standard_normal((4, 3, 2, 2)).astype(dtype)
    rm, rv = np.full(3, 0.5, dtype), np.full(3, 4.0, dtype)
    for stat in (rm, rv):
        stat.flags.writeable = False  # as after unpickling from a read-only memory map
    y, _, _ = F.batch_norm(x, rm, rv)
    assert_allclose(y, (x - 0.5) / np.sqrt(dtype.type(4.0 + 1e-5)), **tol(dtype))
    with pytest.raises(ValueError, match="running_mean is read-only"):
        F.batch_norm(x, rm, rv, training=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"running_mean": np.zeros(3)}, ValueError, r"running_mean must have shape \(2,\)"),
        ({"running_var": np.zeros(2, np.float32)}, TypeError, "running_var has dtype float32"),
        ({"running_mean": None}, ValueError, "eval mode .* needs running_mean and running_var"),
        ({"weight": np.ones((2, 1))}, ValueError, "weight must be 1-D"),
        ({"eps": 0.0}, ValueError, "eps must be > 0"),
        ({"momentum": 1.5}, ValueError, r"momentum must be in \[0.0, 1.0\]"),
        ({"training": "yes"}, TypeError, "training must be a bool"),
        ({"x": np.zeros(5)}, ValueError, r"x must have shape \(N, C, ...\)"),
        ({"x": np.zeros((1, 2)), "training": True}, ValueError, "more than one value per"),
        ({"x": np.zeros((3, 2), int)}, TypeError, "x must be a float32 or float64 array"),
        (
            {"running_mean": [0.0, 0.0], "training": True},
            TypeError,
            "running_mean must be a numpy array",
        ),
    ],
)
def test_batch_norm_errors(kwargs, error, match):
    args = {"x": np.zeros((3, 2)), "running_mean": np.zeros(2), "running_var": np.ones(2)}
    args.update(kwargs)
    with pytest.raises(error, match=match):
        F.batch_norm(**args)


def test_batch_norm_backward_errors():
    x, stats = np.zeros((3, 2)), np.ones(2)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(3, 2\)"):
        F.batch_norm_backward(np.zeros((2, 2)), x, None, stats, stats)
    with pytest.raises(ValueError, match=r"inv_std must have shape \(2,\)"):
        F.batch_norm_backward(x, x, None, stats, np.ones(3))


# ---------------------------------------------------------------------------------------
# Leaky ReLU


@pytest.mark.parametrize("slope", [0.01, 0.3, 0.0, -0.5, 2.0])
def test_leaky_relu_matches_torch(backend, dtype, rng, slope):
    x = rng.standard_normal((3, 4, 5)).astype(dtype)
    x[0, 0, :3] = [0.0, np.nan, -0.0]
    g = rng.standard_normal(x.shape).astype(dtype)
    tx = t(x).requires_grad_()
    ty = torch.nn.functional.leaky_relu(tx, slope)
    ty.backward(t(g))
    y = F.leaky_relu(x, slope)
    assert y.dtype == dtype
    assert_array_equal(y, ty.detach().numpy())  # one multiply each: exact
    assert_array_equal(F.leaky_relu_backward(g, x, slope), tx.grad.numpy())


@needs_compiled
def test_leaky_relu_compiled_matches_reference_in_parallel(dtype, rng):
    x = rng.standard_normal(200_003).astype(dtype)  # above one thread's share
    g = rng.standard_normal(x.shape).astype(dtype)
    for fn, args in ((F.leaky_relu, (x, 0.2)), (F.leaky_relu_backward, (g, x, 0.2))):
        assert_array_equal(on("cython", fn, *args), on("numpy", fn, *args))


def test_leaky_relu_gradient_matches_central_differences(backend, rng):
    x = rng.standard_normal((4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # away from the kink
    r = rng.standard_normal(x.shape)
    numeric = numerical_grad(lambda: float(np.sum(F.leaky_relu(x, 0.1) * r)), x)
    assert_allclose(F.leaky_relu_backward(r, x, 0.1), numeric, rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: F.leaky_relu(np.zeros(3), np.inf), ValueError, "negative_slope must be finite"),
        (lambda: F.leaky_relu(np.zeros(3), "0.1"), TypeError, "negative_slope must be a float"),
        (lambda: F.leaky_relu(np.zeros(3, int)), TypeError, "x must be a float32 or float64"),
        (lambda: F.leaky_relu_backward(np.zeros(2), np.zeros(3)), ValueError,
         r"grad_out must have shape \(3,\)"),
    ],
)  # fmt: skip
def test_leaky_relu_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------
# Dropout


def test_dropout_masks_scale_and_reproduce(backend, dtype, rng):
    x = rng.standard_normal((50, 40)).astype(dtype)
    y, mask = F.dropout(x, 0.25, True, np.random.default_rng(3))
    assert y.dtype == mask.dtype == dtype
    assert set(np.unique(mask)) == {0, dtype.type(1 / 0.75)}
    assert 0.2 < np.mean(mask == 0) < 0.3
    assert_allclose(y, x * mask)
    again, mask64 = F.dropout(x.astype(np.float64), 0.25, True, 3)  # same seed, other dtype
    assert_array_equal(mask64 == 0, mask == 0)
    g = rng.standard_normal(x.shape).astype(dtype)
    assert_allclose(F.dropout_backward(g, mask), g * mask)


def test_dropout_identity_cases(backend, dtype):
    x = np.ones((3, 4), dtype)
    for p, training in ((0.5, False), (0.0, True)):
        y, mask = F.dropout(x, p, training, 0)
        assert y is x and mask is None
    assert F.dropout_backward(x, None) is x
    y, mask = F.dropout(x, 1.0, True, 0)
    assert_array_equal(y, 0)
    assert_array_equal(mask, 0)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: F.dropout(np.zeros(3), 1.5), ValueError, r"p must be in \[0.0, 1.0\]"),
        (lambda: F.dropout(np.zeros(3), 0.5, rng="x"), TypeError, "rng must be None, an int"),
        (lambda: F.dropout(np.zeros(3), 0.5, training=None), TypeError, "training must be a bool"),
        (lambda: F.dropout_backward(np.zeros(3), np.zeros(2)), ValueError,
         r"grad_out must have the shape of mask \(2,\)"),
    ],
)  # fmt: skip
def test_dropout_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------
# Softmax cross-entropy


@pytest.mark.parametrize("weighted", [False, True])
def test_softmax_cross_entropy_matches_torch(backend, dtype, rng, weighted):
    logits = (rng.standard_normal((6, 5)) * 4).astype(dtype)
    labels = rng.integers(0, 5, 6)
    w = rng.uniform(0, 2, 6) if weighted else None
    loss, grad = F.softmax_cross_entropy(logits, labels, w)
    tl = t(logits).requires_grad_()
    per_row = torch.nn.functional.cross_entropy(tl, t(labels), reduction="none")
    total = (per_row * t(w if weighted else np.ones(6)).to(tl.dtype)).sum() / 6
    total.backward()
    assert grad.dtype == dtype
    assert loss == pytest.approx(float(total.detach()), rel=tol(dtype)["rtol"])
    assert_allclose(grad, tl.grad.numpy(), **tol(dtype))


def test_softmax_cross_entropy_gradient_matches_central_differences(backend, rng):
    logits = rng.standard_normal((4, 3))
    labels, w = np.array([0, 2, 1, 2]), np.array([1.0, 0.5, 2.0, 0.0])
    numeric = numerical_grad(lambda: F.softmax_cross_entropy(logits, labels, w)[0], logits)
    assert_allclose(F.softmax_cross_entropy(logits, labels, w)[1], numeric, rtol=1e-6)


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        (np.array([0, 3]), {}, ValueError, r"labels must hold class indices in \[0, 3\)"),
        (np.array([0]), {}, ValueError, r"labels must have shape \(2,\)"),
        (np.array([0.0, 1.0]), {}, TypeError, "labels must hold integer class indices"),
        (np.array([0, 1]), {"sample_weight": [1, -1]}, ValueError, "must be non-negative"),
        (np.array([0, 1]), {"sample_weight": [1]}, ValueError, r"sample_weight must have shape"),
    ],
)
def test_softmax_cross_entropy_errors(labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        F.softmax_cross_entropy(np.zeros((2, 3)), labels, **kwargs)


# ---------------------------------------------------------------------------------------
# Optimizer steps


def _model_arrays(rng, dtype):
    shapes = [(4, 3), (5,), (2, 3, 3, 3)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(3)]
    return params, grads


@pytest.mark.parametrize(
    "hyper",
    [
        {"momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
        {"momentum": 0.9, "weight_decay": 0.01, "nesterov": False},
        {"momentum": 0.8, "weight_decay": 0.0, "nesterov": True},
    ],
)
def test_sgd_step_matches_torch(backend, dtype, rng, hyper):
    params, grads = _model_arrays(rng, dtype)
    tparams = [t(p).requires_grad_() for p in params]
    opt = torch.optim.SGD(tparams, lr=0.05, **hyper)
    buffers = [None] * len(params)
    for step_grads in grads:
        F.sgd_step(params, step_grads, buffers, lr=0.05, **hyper)
        for tp, g in zip(tparams, step_grads, strict=True):
            tp.grad = t(g)
        opt.step()
    if hyper["momentum"]:
        assert all(isinstance(b, np.ndarray) and b.dtype == dtype for b in buffers)
    for p, tp in zip(params, tparams, strict=True):
        assert_allclose(p, tp.detach().numpy(), **tol(dtype))


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_step_matches_torch(backend, dtype, rng, weight_decay):
    params, grads = _model_arrays(rng, dtype)
    tparams = [t(p).requires_grad_() for p in params]
    opt = torch.optim.Adam(tparams, lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                           weight_decay=weight_decay)  # fmt: skip
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for step, step_grads in enumerate(grads, start=1):
        F.adam_step(params, step_grads, m, v, step=step, lr=0.01, beta1=0.8, beta2=0.99,
                    eps=1e-6, weight_decay=weight_decay)  # fmt: skip
        for tp, g in zip(tparams, step_grads, strict=True):
            tp.grad = t(g)
        opt.step()
    for p, tp in zip(params, tparams, strict=True):
        assert_allclose(p, tp.detach().numpy(), **tol(dtype))


@needs_compiled
def test_optimizer_steps_agree_bit_for_bit_and_on_strided_arrays(dtype, rng):
    params, grads = _model_arrays(rng, dtype)
    results = []
    for name, layout in (("numpy", "C"), ("cython", "C"), ("cython", "F")):
        p = [np.array(a, order=layout) for a in params]
        m, v, bufs = [np.zeros_like(a) for a in p], [np.zeros_like(a) for a in p], [None] * 3
        for step, g in enumerate(grads, start=1):
            g = [np.array(a, order=layout) for a in g]
            on(name, F.adam_step, p, g, m, v, step=step, lr=0.01)
            on(name, F.sgd_step, p, g, bufs, lr=0.1, momentum=0.9, nesterov=True)
        results.append(p)
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda p, g: F.sgd_step(p, g, lr=0.1, dampening=0.5), ValueError, "dampening must be 0"),
        (lambda p, g: F.sgd_step(p, g, lr=-1.0), ValueError, r"lr must be in \[0.0, inf\)"),
        (lambda p, g: F.sgd_step(p, g, lr=0.1, nesterov=True), ValueError, "requires momentum"),
        (lambda p, g: F.sgd_step(p, g, None, lr=0.1, momentum=0.9), ValueError,
         "momentum_buffers must be a list of 1 arrays"),
        (lambda p, g: F.sgd_step(p, g[:0], lr=0.1), ValueError, "grads must be a list of 1"),
        (lambda p, g: F.sgd_step(p, [g[0].T], lr=0.1), ValueError,
         r"grads\[0\] must have the shape and float dtype of params\[0\]"),
        (lambda p, g: F.sgd_step(tuple(p), g, lr=0.1), TypeError, "must be lists of arrays"),
        (lambda p, g: F.sgd_step(p, g, [np.zeros(3)], lr=0.1, momentum=0.5), ValueError,
         r"momentum_buffers\[0\] must be an array of the shape"),
        (lambda p, g: F.adam_step(p, g, [None], [None], step=1, lr=0.1), ValueError,
         r"exp_avgs\[0\] must be an array"),
        (lambda p, g: F.adam_step(p, g, p, p, step=0, lr=0.1), ValueError,
         "step must be a positive int"),
        (lambda p, g: F.adam_step(p, g, p, p, step=1, lr=0.1, beta2=1.0), ValueError,
         r"beta2 must be in \[0.0, 1.0\)"),
    ],
)  # fmt: skip
def test_optimizer_step_errors(call, error, match):
    params, grads = [np.zeros((2, 3))], [np.zeros((2, 3))]
    with pytest.raises(error, match=match):
        call(params, grads)
    assert_array_equal(params[0], 0)  # refused before anything was written


def test_optimizer_step_refuses_read_only_params():
    param = np.zeros(3)
    param.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[0\] is read-only"):
        F.sgd_step([param], [np.ones(3)], lr=0.1)
