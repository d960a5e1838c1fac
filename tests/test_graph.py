"""Graph models (fastcnn.Input, fastcnn.Model), the merging layers and their ops."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from conftest import numerical_grad
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.utils.estimator_checks import parametrize_with_checks
from test_estimator import _expected_failed_checks  # the checks CNNClassifier fails

import fastcnn
import fastcnn.functional as F
from fastcnn import layers as L
from fastcnn.graph import Node

# ---------------------------------------------------------------------------------------
# The ops


def test_add_sums_left_to_right(backend, dtype, rng):
    arrays = [rng.standard_normal((2, 3, 4, 5)).astype(dtype) for _ in range(3)]
    out = F.add(*arrays)
    assert out.dtype == dtype and out.flags.c_contiguous
    assert_array_equal(out, (arrays[0] + arrays[1]) + arrays[2])


@pytest.mark.parametrize("axis", [1, 2, -1, 3])
def test_concatenate_and_its_backward_match_numpy(backend, dtype, rng, axis):
    a = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    b = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    b = np.concatenate([b, b], axis=axis)  # another size on the axis
    out = F.concatenate([a, b[:, :, ::1]], axis)  # a view is fine
    assert_array_equal(out, np.concatenate([a, b], axis=axis))
    grad = rng.standard_normal(out.shape).astype(dtype)
    ga, gb = F.concatenate_backward(grad, [a.shape[axis], b.shape[axis]], axis)
    split = np.split(grad, [a.shape[axis]], axis=axis)
    assert_array_equal(ga, split[0])
    assert_array_equal(gb, split[1])
    assert ga.flags.c_contiguous and gb.flags.c_contiguous and ga.dtype == dtype


def test_merging_ops_errors(rng):
    a = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="at least 2 arrays"):
        F.add(a)
    with pytest.raises(ValueError, match="arrays of one shape"):
        F.add(a, np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="dtype float64 but arrays.0. has dtype float32"):
        F.add(a, a.astype(np.float64))
    with pytest.raises(TypeError, match="a list of arrays"):
        F.concatenate(a)
    with pytest.raises(ValueError, match="out of range"):
        F.concatenate([a, a], axis=2)
    with pytest.raises(ValueError, match="one shape but for axis 1"):
        F.concatenate([a, np.zeros((3, 3), np.float32)], axis=1)
    with pytest.raises(ValueError, match="sum to grad_out.shape"):
        F.concatenate_backward(a, [1, 1], axis=1)


def test_merging_layers_compute_on_arrays(backend, dtype, rng):
    a, b = (rng.standard_normal((2, 3, 4)).astype(dtype) for _ in range(2))
    add, cat = L.Add(), L.Concatenate(axis=-1)
    assert_array_equal(add([a, b]), a + b)
    assert_array_equal(cat([a, b]), np.concatenate([a, b], axis=-1))
    grad = rng.standard_normal((2, 3, 8)).astype(dtype)
    ga, gb = cat.backward(grad)
    assert_array_equal(ga, grad[..., :4])
    assert_array_equal(gb, grad[..., 4:])
    assert all(g is grad for g in add.backward(grad))
    assert cat.output_shape([(3, 4), (3, 2)]) == (3, 6)
    assert L.Identity()(a) is a
    with pytest.raises(TypeError, match="list of two or more arrays"):
        add(a)
    with pytest.raises(ValueError, match="different batch sizes"):
        add([a, a[:1]])
    with pytest.raises(ValueError, match="Add.. needs inputs of one shape"):
        add([a, a[:, :2]])
    with pytest.raises(ValueError, match="batch axis"):
        L.Concatenate(axis=0)


# ---------------------------------------------------------------------------------------
# Building graphs


def _residual_model(dtype=np.float64, in_channels=2, seed=0):
    """A stem, a residual block, a projection shortcut, a concat, a shared Dense."""
    r = np.random.default_rng(seed)
    inp = fastcnn.Input((in_channels, 6, 6))
    h = L.Conv2D(in_channels, 4, 3, padding=1, bias=False, dtype=dtype, rng=r)(inp)
    h = L.ReLU()(L.BatchNorm2D(4, dtype=dtype)(h))
    r1 = L.Conv2D(4, 4, 3, padding=1, dtype=dtype, rng=r)(h)
    h = L.Tanh()(L.Add()([h, r1]))  # identity shortcut
    main = L.Conv2D(4, 6, 3, stride=2, padding=1, dtype=dtype, rng=r)(h)
    short = L.Conv2D(4, 6, 1, stride=2, dtype=dtype, rng=r)(h)  # projection shortcut
    h = L.Add()([main, short])
    c = L.Concatenate(axis=1)([h, L.AvgPool2D(2)(inp)])  # (6 + in_channels, 3, 3)
    flat = L.Flatten()(c)
    shared = L.Dense((6 + in_channels) * 9, 5, dtype=dtype, rng=r)
    out = L.Add()([shared(flat), shared(L.Tanh()(flat))])  # a layer called twice
    return fastcnn.Model(inp, out)


def test_calling_a_layer_on_a_node_records_it():
    inp = fastcnn.Input((3, 8, 8), name="image")
    conv = L.Conv2D(3, 4, 3)
    node = conv(inp)
    assert isinstance(node, Node) and node.shape == (4, 6, 6)
    assert node.layer is conv and node.inputs == (inp,)
    assert "image" in repr(inp)
    both = L.Concatenate()([node, node])
    assert both.shape == (8, 6, 6) and both.inputs == (node, node)


def test_model_parameters_in_call_order_shared_layer_once():
    model = _residual_model()
    kinds = [type(u).__name__ for u in model.layers]
    assert kinds == [
        "Conv2D", "BatchNorm2D", "ReLU", "Conv2D", "Add", "Tanh", "Conv2D", "Conv2D", "Add",
        "AvgPool2D", "Concatenate", "Flatten", "Dense", "Tanh", "Add",
    ]  # fmt: skip
    expected = [
        (p, layer.grads[name]) for layer in model.layers for name, p in layer.params.items()
    ]
    got = model.parameters()
    assert len(got) == len(expected) == 11  # w (no bias), gamma, beta, then w, b of 4 layers
    assert all(p is q and g is h for (p, g), (q, h) in zip(got, expected, strict=True))
    names = [name for name, _, _ in model.named_parameters()]
    assert names[:3] == ["0.weight", "1.gamma", "1.beta"]
    assert model.num_params == sum(p.size for p, _ in got)


@pytest.mark.parametrize("training", [False, True])
def test_graph_gradients_match_central_differences(backend, training, rng):
    model = _residual_model()
    x = rng.standard_normal((3, 2, 6, 6))
    w = rng.standard_normal((3, 5))

    def loss():
        return float((model.forward(x, training) * w).sum())

    model.forward(x, training)
    grad_x = model.backward(w)
    grads = [g.copy() for _, g in model.parameters()]
    assert_allclose(grad_x, numerical_grad(loss, x), rtol=1e-5, atol=1e-7)
    for (param, _), grad in zip(model.parameters(), grads, strict=True):
        assert_allclose(grad, numerical_grad(loss, param), rtol=1e-5, atol=1e-7)


def test_model_and_equivalent_sequential_agree(backend, dtype, rng):
    layers = [
        L.Conv2D(1, 3, 3, padding=1, dtype=dtype, rng=1), L.BatchNorm2D(3, dtype=dtype),
        L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dense(3 * 4 * 4, 4, dtype=dtype, rng=2),
    ]  # fmt: skip
    seq = fastcnn.Sequential(copy.deepcopy(layers))
    node = inp = fastcnn.Input((1, 8, 8))
    for layer in layers:
        node = layer(node)
    model = fastcnn.Model(inp, node)
    x = rng.standard_normal((5, 1, 8, 8)).astype(dtype)
    g = rng.standard_normal((5, 4)).astype(dtype)
    for training in (False, True):
        assert_array_equal(model(x, training), seq(x, training))
        assert_array_equal(model.backward(g), seq.backward(g))
        for (p, gp), (q, gq) in zip(model.parameters(), seq.parameters(), strict=True):
            assert_array_equal(p, q)
            assert_array_equal(gp, gq)
    assert model.state_dict().keys() == seq.state_dict().keys()
    assert model.output_shape((1, 8, 8)) == seq.output_shape((1, 8, 8)) == (4,)


def test_sequential_as_a_layer_of_a_graph(backend, rng):
    block = fastcnn.Sequential(L.Conv2D(2, 2, 3, padding=1, dtype=np.float64, rng=0), L.ReLU())
    inp = fastcnn.Input((2, 4, 4))
    out = L.Flatten()(L.Add()([inp, block(inp)]))
    model = fastcnn.Model(inp, out)
    assert model.layers[0] is block
    x = rng.standard_normal((2, 2, 4, 4))
    assert_allclose(model(x), (x + block(x)).reshape(2, -1))
    w = rng.standard_normal((2, 32))
    model.forward(x)
    grad_x = model.backward(w)
    assert_allclose(grad_x, numerical_grad(lambda: float((model(x) * w).sum()), x), rtol=1e-6)
    assert [n for n, _, _ in model.named_parameters()] == ["0.0.weight", "0.0.bias"]
    assert "0: Sequential of 2 layers" in model.summary()
    calls = model.layer_calls()
    assert [type(layer).__name__ for layer, _, _ in calls] == ["Conv2D", "ReLU", "Add", "Flatten"]
    assert calls[2][1:] == ([(2, 4, 4), (2, 4, 4)], (2, 4, 4))


def test_several_inputs_and_outputs(backend, rng):
    a, b = fastcnn.Input((3,), name="a"), fastcnn.Input((3,), name="b")
    dense = L.Dense(3, 2, dtype=np.float64, rng=0)
    s = L.Add()([a, b])
    model = fastcnn.Model([a, b], [dense(s), L.Identity()(s)])
    xa, xb = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    out, same = model([xa, xb])
    assert_allclose(same, xa + xb)
    assert_allclose(out, (xa + xb) @ dense.weight.T + dense.bias)
    ga, gb = model.backward([np.ones((4, 2)), np.ones((4, 3))])
    assert_allclose(ga, np.ones((4, 2)) @ dense.weight + 1)
    assert_allclose(gb, ga)
    assert model.output_shape([(3,), (3,)]) == [(2,), (3,)]
    with pytest.raises(ValueError, match="fit, predict and evaluate need a model of one input"):
        model.predict(xa)


def test_summary_lists_calls_inputs_and_shapes():
    text = _residual_model().summary()
    assert "Input 'input_" in text and "(5,)" in text and "shares layer 12" in text
    assert "Inputs" in text and "#12, #14" in text
    assert f"Total params: {_residual_model().num_params:,}" in text


# ---------------------------------------------------------------------------------------
# Training and files


def test_fit_a_small_graph_model_on_digits(backend):
    X, y = fastcnn.datasets.load_digits()
    inp = fastcnn.Input((1, 8, 8))
    h = L.ReLU()(L.Conv2D(1, 8, 3, padding=1, rng=0)(inp))
    h = L.Add()([h, L.Conv2D(8, 8, 3, padding=1, rng=1)(h)])
    out = L.Dense(8 * 4 * 4, 10, rng=2)(L.Flatten()(L.MaxPool2D(2)(L.ReLU()(h))))
    model = fastcnn.Model(inp, out)
    history = model.fit(X[:1400], y[:1400], epochs=8, optimizer=fastcnn.optim.Adam(3e-3),
                        verbose=0, random_state=0)  # fmt: skip
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(X[1400:], y[1400:])["accuracy"] > 0.9
    assert model.predict_proba(X[:3]).shape == (3, 10)
    assert model.train_step(X[:16], y[:16]) > 0


def test_save_and_load_round_trip(backend, tmp_path, rng):
    model = _residual_model(np.float32)
    model.forward(rng.random((4, 2, 6, 6)), training=True)  # BatchNorm statistics move
    path = tmp_path / "graph.npz"
    model.save(path)
    loaded = fastcnn.load(path)
    assert isinstance(loaded, fastcnn.Model)
    assert loaded.get_config() == model.get_config()
    x = rng.random((3, 2, 6, 6)).astype(np.float32)
    assert_array_equal(loaded(x), model(x))
    assert len(loaded.parameters()) == len(model.parameters())  # the shared Dense once


def test_save_and_load_several_inputs_and_a_sequential(tmp_path, rng):
    a, b = fastcnn.Input((2, 4, 4)), fastcnn.Input((3, 4, 4))
    block = fastcnn.Sequential(L.Conv2D(5, 2, 1, rng=0), L.ReLU())
    c = block(L.Concatenate()([a, b]))
    model = fastcnn.Model([a, b], [c, L.Flatten()(c)])
    model.save(tmp_path / "m.npz")
    loaded = fastcnn.load(tmp_path / "m.npz")
    xs = [rng.random((2, 2, 4, 4)).astype(np.float32), rng.random((2, 3, 4, 4)).astype(np.float32)]
    for got, want in zip(loaded(xs), model(xs), strict=True):
        assert_array_equal(got, want)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["nodes"][0].update(inputs=[5]), "node 0's input must be an int in"),
        (lambda c: c["nodes"][0].update(layer=99), "node 0's layer must be an int"),
        (lambda c: c.update(outputs=[]), "needs an 'outputs' list"),
        (lambda c: c["inputs"][0].update(shape=[0]), "positive ints"),
    ],
)
def test_malformed_graph_architectures_are_refused(edit, message):
    config = _residual_model().get_config()
    edit(config)
    with pytest.raises(ValueError, match=message):
        fastcnn.Model.from_config(config)


# ---------------------------------------------------------------------------------------
# Errors at Model(...) time


def test_error_cycle():
    inp = fastcnn.Input((3,))
    a = L.ReLU()(inp)
    b = L.Tanh()(a)
    a.inputs = (b,)  # only by editing a node: layer calls cannot make a cycle
    with pytest.raises(ValueError, match=r"cycle: .*ReLU\(\) -> Tanh\(\) -> ReLU\(\)"):
        fastcnn.Model(inp, b)


def test_error_shape_mismatch_at_add_names_the_layer_and_inputs():
    inp = fastcnn.Input((3, 8, 8), name="x")
    conv = L.Conv2D(3, 4, 3)(inp)
    with pytest.raises(ValueError, match=r"Add\(\) cannot be called on x \(3, 8, 8\), Conv2D"):
        L.Add()([inp, conv])


def test_error_unused_input():
    a, b = fastcnn.Input((3,), name="a"), fastcnn.Input((3,), name="b")
    with pytest.raises(ValueError, match="input 'b' of shape .3,. is unused"):
        fastcnn.Model([a, b], L.ReLU()(a))


def test_error_disconnected_output():
    a, b = fastcnn.Input((3,), name="a"), fastcnn.Input((3,), name="b")
    with pytest.raises(
        ValueError, match=r"disconnected from the inputs: ReLU\(\) is called on 'b'"
    ):
        fastcnn.Model(a, [L.ReLU()(a), L.ReLU()(b)])


def test_other_graph_errors():
    inp = fastcnn.Input((2, 4, 4))
    conv = L.Conv2D(2, 2, 1)(inp)
    with pytest.raises(ValueError, match="must be nodes made by fastcnn.Input"):
        fastcnn.Model(conv, L.ReLU()(conv))
    with pytest.raises(TypeError, match="must be graph nodes"):
        fastcnn.Model(inp, np.zeros(3))
    with pytest.raises(ValueError, match="has dtype float64 but the model's other layers"):
        fastcnn.Model(inp, L.Conv2D(2, 2, 1, dtype=np.float64)(conv))
    with pytest.raises(TypeError, match="mixes graph nodes with other values"):
        L.Add()([inp, np.zeros((1, 2, 4, 4))])
    block = fastcnn.Sequential(L.ReLU())
    with pytest.raises(ValueError, match="a Sequential may be called once"):
        fastcnn.Model(inp, L.Add()([block(inp), block(inp)]))
    with pytest.raises(ValueError, match="positive ints"):
        fastcnn.Input((3, 0))
    with pytest.raises(ValueError, match=r"ReLU\(\) cannot be called on"):
        L.ReLU()([inp, inp])
    with pytest.raises(ValueError, match="cannot be called on"):
        L.Add()(inp)


# ---------------------------------------------------------------------------------------
# CNNClassifier with a graph architecture


def _graph_architecture(input_shape, n_classes):
    """A residual graph for any (C, H, W): what CNNClassifier(architecture=...) calls."""
    c, h, w = input_shape
    inp = fastcnn.Input(input_shape)
    x = L.ReLU()(L.Conv2D(c, 4, 3, padding=1)(inp))
    x = L.Add()([x, L.ReLU()(L.Conv2D(4, 4, 3, padding=1)(x))])
    return fastcnn.Model(inp, L.Dense(4 * h * w, n_classes)(L.Flatten()(x)))


def _chain_layers(input_shape, n_classes):
    c, h, w = input_shape
    return [L.Conv2D(c, 4, 3, padding=1), L.ReLU(), L.Flatten(), L.Dense(4 * h * w, n_classes)]


def _chain_graph(input_shape, n_classes):
    node = inp = fastcnn.Input(input_shape)
    for layer in _chain_layers(input_shape, n_classes):
        node = layer(node)
    return fastcnn.Model(inp, node)


def test_cnn_classifier_trains_a_graph_architecture():
    X, y = fastcnn.datasets.load_digits()
    clf = fastcnn.CNNClassifier(_graph_architecture, max_iter=8, random_state=0)
    clf.fit(X[:600], y[:600])
    assert isinstance(clf.model_, fastcnn.Model)
    assert clf.score(X[600:900], y[600:900]) > 0.8
    # A chain written as a graph is the same network as its list of layers, seeded alike.
    probas = [
        fastcnn.CNNClassifier(arch, max_iter=2, random_state=0)
        .fit(X[:300], y[:300])
        .predict_proba(X[300:400])
        for arch in (_chain_layers, _chain_graph, _chain_graph((1, 8, 8), 10))
    ]
    assert_array_equal(probas[1], probas[0])
    assert_array_equal(probas[2], probas[0])
    with pytest.raises(ValueError, match="must output 3 logits"):
        fastcnn.CNNClassifier(_graph_architecture((1, 8, 8), 10)).fit(X[:50], y[:50] % 3)


@parametrize_with_checks(
    [fastcnn.CNNClassifier(_graph_architecture, random_state=0)],
    expected_failed_checks=_expected_failed_checks,
)
def test_cnn_classifier_with_a_graph_passes_the_estimator_checks(estimator, check):
    check(estimator)


def test_a_copied_or_unpickled_model_keeps_its_shared_layers(rng):
    import pickle

    model = _residual_model()
    x, w = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((2, 5))
    model.forward(x, True)
    want = [model.backward(w)] + [g.copy() for _, g in model.parameters()]
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        other.forward(x, True)
        got = [other.backward(w)] + [g for _, g in other.parameters()]
        for a, b in zip(got, want, strict=True):
            assert_allclose(a, b, rtol=1e-12)


def test_fit_checkpoint_resumes_a_graph_model(tmp_path, rng):
    X = rng.random((40, 2, 6, 6)).astype(np.float32)
    y = rng.integers(0, 5, 40)
    path = tmp_path / "run.npz"
    _residual_model(np.float32).fit(X, y, epochs=2, verbose=0, checkpoint=path, random_state=0)
    resumed = _residual_model(np.float32)
    history = resumed.fit(X, y, epochs=3, verbose=0, checkpoint=path, random_state=0)
    assert history.epoch == [0, 1, 2]
    straight = _residual_model(np.float32)
    straight.fit(X, y, epochs=3, verbose=0, random_state=0)
    assert_allclose(resumed.predict_proba(X), straight.predict_proba(X), rtol=1e-5)
    assert isinstance(fastcnn.load(path), fastcnn.Model)


def test_a_parameter_free_sequential_keeps_a_float64_graph_in_float64(rng):
    inp = fastcnn.Input((3,))
    h = fastcnn.Sequential(L.ReLU(), L.Tanh())(L.Dense(3, 3, dtype=np.float64, rng=0)(inp))
    model = fastcnn.Model(inp, h)
    x = rng.standard_normal((2, 3))
    out = model(x)
    assert out.dtype == np.float64
    assert_array_equal(out, np.tanh(np.maximum(x @ model.layers[0].weight.T, 0)))
