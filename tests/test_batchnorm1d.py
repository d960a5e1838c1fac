"""L.BatchNorm1D: batch normalization of (N, F) features (and (N, C, L)), PyTorch's BatchNorm1d.

Against torch.nn.BatchNorm1d over several training steps and in eval mode (outputs, all
gradients, running statistics), both backends and dtypes, affine=False, float64 central
differences, errors, and save/load round trips with the running statistics.
"""

import numpy as np
import pytest
from conftest import numerical_grad

import fastcnn
from fastcnn import layers as L

# PyTorch is the reference of most of this module (it is in no extra; CI's checkout step has it).
torch = pytest.importorskip(
    "torch", reason="PyTorch is not installed: the torch comparisons are skipped"
)

TOL = {
    np.dtype(np.float32): {"rtol": 1e-4, "atol": 1e-5},
    np.dtype(np.float64): {"rtol": 1e-10, "atol": 1e-12},
}


def _torch_twin(layer, dtype):
    ref = torch.nn.BatchNorm1d(
        layer.num_features, eps=layer.eps, momentum=layer.momentum, affine=layer.affine
    ).to(torch.float64 if dtype == np.float64 else torch.float32)
    if layer.affine:
        with torch.no_grad():
            ref.weight.copy_(torch.from_numpy(layer.gamma))
            ref.bias.copy_(torch.from_numpy(layer.beta))
    return ref


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(8, 5), (6, 5, 7), (2, 5)])
def test_matches_torch_over_training_steps_and_in_eval(backend, dtype, rng, affine, shape):
    layer = L.BatchNorm1D(5, momentum=0.3, affine=affine, dtype=dtype)
    if affine:
        layer.gamma[...] = rng.uniform(0.5, 1.5, 5)
        layer.beta[...] = rng.standard_normal(5)
    ref = _torch_twin(layer, dtype)
    t = TOL[np.dtype(dtype)]
    for step in range(4):
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        y = layer.forward(x, training=True)
        grad_x = layer.backward(g)
        xt = torch.from_numpy(x).requires_grad_()
        ref.train()
        yt = ref(xt)
        yt.backward(torch.from_numpy(g))
        assert y.shape == shape and y.dtype == dtype and grad_x.dtype == dtype
        np.testing.assert_allclose(y, yt.detach().numpy(), **t)
        np.testing.assert_allclose(grad_x, xt.grad.numpy(), **t)
        if affine:
            np.testing.assert_allclose(layer.grads["gamma"], ref.weight.grad.numpy(), **t)
            np.testing.assert_allclose(layer.grads["beta"], ref.bias.grad.numpy(), **t)
            ref.weight.grad = ref.bias.grad = None
        np.testing.assert_allclose(layer.running_mean, ref.running_mean.numpy(), **t)
        np.testing.assert_allclose(layer.running_var, ref.running_var.numpy(), **t)
    # Eval mode: the running statistics normalize, and stay as they were.
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    stats = layer.running_mean.copy(), layer.running_var.copy()
    y = layer.forward(x, training=False)
    grad_x = layer.backward(g)
    ref.eval()
    xt = torch.from_numpy(x).requires_grad_()
    yt = ref(xt)
    yt.backward(torch.from_numpy(g))
    np.testing.assert_allclose(y, yt.detach().numpy(), **t)
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), **t)
    np.testing.assert_array_equal(layer.running_mean, stats[0])
    np.testing.assert_array_equal(layer.running_var, stats[1])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_gradients_match_central_differences(backend, rng, training, affine):
    layer = L.BatchNorm1D(3, affine=affine, dtype=np.float64)
    if affine:
        layer.gamma[...] = rng.uniform(0.5, 1.5, 3)
        layer.beta[...] = rng.standard_normal(3)
    layer.running_mean[...] = rng.standard_normal(3)
    layer.running_var[...] = rng.uniform(0.5, 2, 3)
    x = rng.standard_normal((5, 3))
    w = rng.standard_normal((5, 3))
    # Training updates the running statistics on every forward: keep them fixed here.
    saved = {k: v.copy() for k, v in layer.buffers.items()}

    def loss():
        out = float(np.sum(layer.forward(x, training=training) * w))
        for k, v in saved.items():
            layer.buffers[k][...] = v
        return out

    loss()
    layer.forward(x, training=training)
    grad_x = layer.backward(w)
    np.testing.assert_allclose(grad_x, numerical_grad(loss, x), rtol=1e-6, atol=1e-8)
    for name in layer.params:
        expected = numerical_grad(loss, layer.params[name])
        np.testing.assert_allclose(layer.grads[name], expected, rtol=1e-6, atol=1e-8)


def test_compiled_matches_reference(dtype, rng):
    if "cython" not in fastcnn.available_backends():
        pytest.skip("compiled extension not importable")
    x = rng.standard_normal((64, 33)).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    results = {}
    for be in ("cython", "numpy"):
        layer = L.BatchNorm1D(33, dtype=dtype)
        with fastcnn.use_backend(be):
            y = layer.forward(x, training=True)
            results[be] = (y, layer.backward(g), layer.grads["gamma"], layer.running_var)
    for got, want in zip(results["cython"], results["numpy"], strict=True):
        np.testing.assert_allclose(got, want, **TOL[np.dtype(dtype)])


def test_attributes_config_and_repr():
    layer = L.BatchNorm1D(4, eps=1e-3, momentum=0.2, dtype=np.float64)
    assert layer.get_config() == {
        "num_features": 4,
        "eps": 1e-3,
        "momentum": 0.2,
        "dtype": "float64",
        "affine": True,
    }
    assert repr(layer) == "BatchNorm1D(4, eps=0.001, momentum=0.2, dtype=float64)"
    assert layer.num_params == 8
    assert sorted(layer.buffers) == ["running_mean", "running_var"]
    np.testing.assert_array_equal(layer.gamma, 1)
    np.testing.assert_array_equal(layer.running_var, 1)
    plain = L.BatchNorm1D(4, affine=False)
    assert plain.gamma is None and plain.beta is None and plain.num_params == 0
    assert repr(plain) == "BatchNorm1D(4, eps=1e-05, momentum=0.1, affine=False)"
    assert layer.output_shape((4,)) == (4,) and layer.output_shape((4, 9)) == (4, 9)
    assert fastcnn.layers.LAYER_REGISTRY["BatchNorm1D"] is L.BatchNorm1D
    assert L.BatchNorm1D.__module__ == "fastcnn.layers"
    # BatchNorm2D keeps its constructor and config.
    assert "affine" not in L.BatchNorm2D(3).get_config()
    with pytest.raises(TypeError):
        L.BatchNorm2D(3, affine=False)


def test_errors():
    with pytest.raises(ValueError, match="num_features"):
        L.BatchNorm1D(0)
    with pytest.raises(ValueError, match="eps must be > 0"):
        L.BatchNorm1D(3, eps=0)
    with pytest.raises(ValueError, match="momentum"):
        L.BatchNorm1D(3, momentum=1.5)
    with pytest.raises(TypeError, match="affine"):
        L.BatchNorm1D(3, affine="yes")
    layer = L.BatchNorm1D(3)
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3\) or \(N, 3, L\)"):
        layer.forward(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match="expected input of shape"):
        layer.forward(np.ones((4, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="more than one value per channel"):
        layer.forward(np.ones((1, 3), np.float32), training=True)
    with pytest.raises(TypeError, match="dtype"):
        layer.forward(np.ones((4, 3), np.float64))
    with pytest.raises(RuntimeError, match="run forward first"):
        L.BatchNorm1D(3).backward(np.ones((4, 3), np.float32))
    # One sample is fine in eval mode.
    assert layer.forward(np.ones((1, 3), np.float32)).shape == (1, 3)


@pytest.mark.parametrize("affine", [True, False])
def test_save_load_keeps_the_running_statistics(backend, dtype, rng, tmp_path, affine):
    model = fastcnn.Sequential(
        [
            L.Flatten(),
            L.Dense(12, 6, dtype=dtype),
            L.BatchNorm1D(6, momentum=0.5, affine=affine, dtype=dtype),
            L.ReLU(),
            L.Dense(6, 3, dtype=dtype),
        ]
    )
    for _ in range(3):
        model.forward(rng.standard_normal((8, 3, 2, 2)).astype(dtype), training=True)
    bn = model[2]
    assert not np.allclose(bn.running_mean, 0)  # the steps moved the statistics
    if affine:
        bn.gamma[...] = rng.uniform(0.5, 1.5, 6)
    path = tmp_path / "bn1d.npz"
    model.save(path)
    loaded = fastcnn.load(path)
    restored = loaded[2]
    assert isinstance(restored, L.BatchNorm1D) and restored.affine == affine
    for name in ("running_mean", "running_var"):
        np.testing.assert_array_equal(restored.buffers[name], bn.buffers[name], strict=True)
    for name in bn.params:
        np.testing.assert_array_equal(restored.params[name], bn.params[name], strict=True)
    x = rng.standard_normal((5, 3, 2, 2)).astype(dtype)
    np.testing.assert_array_equal(loaded.forward(x), model.forward(x))
    assert set(loaded.state_dict()) == set(model.state_dict())
