"""Optimizers and schedules: hand-computed steps, PyTorch parity, the compiled updates
against numpy's bit for bit, in-place updates, errors."""

import math
import pickle
import tracemalloc

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
from fastcnn import _backend
from fastcnn.models import digits_cnn
from fastcnn.optim import SGD, Adam, CosineAnnealingLR, StepLR

needs_compiled = pytest.mark.skipif(
    "cython" not in fastcnn.available_backends(), reason="compiled extension not importable"
)


def make_pairs(dtype, values=(1.0, 2.0), grads=(0.5, -1.0)):
    return [(np.array(values, dtype), np.array(grads, dtype))]


def test_sgd_plain_step(dtype, backend):
    pairs = make_pairs(dtype)
    SGD(lr=0.1).step(pairs)
    assert_allclose(pairs[0][0], [0.95, 2.1], rtol=1e-6)
    assert pairs[0][0].dtype == dtype
    assert_array_equal(pairs[0][1], [0.5, -1.0])  # the gradient is never modified


def test_sgd_momentum_weight_decay_two_steps(backend):
    p, g = np.array([1.0]), np.array([0.5])
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step([(p, g)])
    # d = 0.5 + 0.1 * 1 = 0.6; buf = 0.6; p = 1 - 0.06
    assert_allclose(p, [0.94])
    opt.step([(p, g)])
    # d = 0.5 + 0.094 = 0.594; buf = 0.9 * 0.6 + 0.594 = 1.134; p = 0.94 - 0.1134
    assert_allclose(p, [0.94 - 0.1134])


def test_sgd_nesterov_two_steps(backend):
    p, g = np.array([1.0]), np.array([1.0])
    opt = SGD(lr=0.1, momentum=0.5, nesterov=True)
    opt.step([(p, g)])  # buf = 1; update = 1 + 0.5 * 1 = 1.5
    assert_allclose(p, [0.85])
    opt.step([(p, g)])  # buf = 0.5 + 1 = 1.5; update = 1 + 0.75
    assert_allclose(p, [0.85 - 0.175])


def test_adam_two_steps_hand_computed(backend):
    p, g = np.array([1.0, -2.0]), np.array([0.1, 0.3])
    opt = Adam(lr=0.01, betas=(0.8, 0.9), eps=1e-8)
    opt.step([(p, g)])
    # Step 1: the bias-corrected update is lr * g / (|g| + eps') = lr * sign(g).
    assert_allclose(p, [1.0 - 0.01, -2.0 - 0.01], rtol=1e-6)
    before = p.copy()
    g2 = np.array([-0.2, 0.3])
    g[...] = g2
    opt.step([(p, g)])
    m = 0.8 * 0.2 * np.array([0.1, 0.3]) + 0.2 * g2
    v = 0.9 * 0.1 * np.array([0.1, 0.3]) ** 2 + 0.1 * g2**2
    m_hat, v_hat = m / (1 - 0.8**2), v / (1 - 0.9**2)
    assert_allclose(p, before - 0.01 * m_hat / (np.sqrt(v_hat) + 1e-8), rtol=1e-10)


TORCH_CONFIGS = [
    ("SGD", {"lr": 0.1}),
    ("SGD", {"lr": 0.05, "momentum": 0.9}),
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    ("Adam", {"lr": 1e-2}),
    ("Adam", {"lr": 3e-3, "betas": (0.5, 0.9), "eps": 1e-6, "weight_decay": 0.1}),
]


@pytest.mark.parametrize(("name", "kwargs"), TORCH_CONFIGS, ids=str)
def test_matches_torch_optim(name, kwargs, dtype, rng, backend):
    torch = pytest.importorskip("torch", reason="torch is optional: the reference optimizers")
    shapes = [(3, 2, 3, 3), (3,), (4, 5)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [np.zeros_like(p) for p in params]
    ours = {"SGD": SGD, "Adam": Adam}[name](**kwargs)
    t_params = [torch.tensor(p.copy(), requires_grad=True) for p in params]
    theirs = getattr(torch.optim, name)(t_params, **kwargs)
    pairs = list(zip(params, grads, strict=True))
    for _ in range(6):
        for g, tp in zip(grads, t_params, strict=True):
            g[...] = rng.standard_normal(g.shape)
            tp.grad = torch.from_numpy(g.copy())
        ours.step(pairs)
        theirs.step()
    t = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}
    for p, tp in zip(params, t_params, strict=True):
        assert p.dtype == dtype
        assert_allclose(p, tp.detach().numpy(), **t)


@pytest.mark.parametrize(
    "opt",
    [SGD(0.1), SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1), Adam(weight_decay=0.1)],
    ids=repr,
)
@needs_compiled
def test_steps_are_in_place_and_allocate_nothing(opt):
    """On the compiled backend (numpy's update, the reference, makes temporaries)."""
    param = np.ones(100_000, np.float32)
    grad = np.full_like(param, 0.5)
    pairs = [(param, grad)]
    with fastcnn.use_backend("cython"):
        opt.step(pairs)  # the first step allocates the state
        tracemalloc.start()
        try:
            for _ in range(5):
                opt.step(pairs)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert pairs[0][0] is param
    assert peak < param.nbytes // 10, f"a step allocated {peak} bytes"


# ---------------------------------------------------------------------------------------
# The compiled updates (one call for every parameter) against numpy's


UPDATE_CONFIGS = [
    (SGD, {"lr": 0.1}),
    (SGD, {"lr": 0.1, "weight_decay": 0.1}),
    (SGD, {"lr": 0.05, "momentum": 0.9}),
    (SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (Adam, {"lr": 1e-2}),
    (Adam, {"lr": 3e-3, "betas": (0.5, 0.9), "eps": 1e-6, "weight_decay": 0.1}),
]


def _train(cls, kwargs, start, backend, steps=4, layout=np.ascontiguousarray):
    """Parameters after ``steps`` updates with seeded gradients, on one backend."""
    params = [layout(p.copy()) for p in start]
    grads = [np.zeros_like(p) for p in params]
    opt, g_rng = cls(**kwargs), np.random.default_rng(7)
    with fastcnn.use_backend(backend):
        for _ in range(steps):
            for g in grads:
                g[...] = g_rng.standard_normal(g.shape)
            opt.step(list(zip(params, grads, strict=True)))
    return params


@needs_compiled
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(("cls", "kwargs"), UPDATE_CONFIGS, ids=str)
def test_compiled_updates_match_numpy_bit_for_bit(cls, kwargs, threads, dtype, rng):
    # LeNet-like arrays; the 48,000-element one is split over the threads; one is empty.
    shapes = [(6, 1, 5, 5), (6,), (120, 400), (0,), (10, 84)]
    start = [rng.standard_normal(s).astype(dtype) for s in shapes]
    before = fastcnn.get_num_threads()
    try:
        fastcnn.set_num_threads(threads)
        expected = _train(cls, kwargs, start, "numpy")
        got = _train(cls, kwargs, start, "cython")
    finally:
        fastcnn.set_num_threads(before)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == dtype
        assert_array_equal(g, e)
    assert not np.array_equal(got[2], start[2])  # the update did something


@needs_compiled
@pytest.mark.parametrize(("cls", "kwargs"), UPDATE_CONFIGS, ids=str)
def test_non_contiguous_parameters_take_the_numpy_update(cls, kwargs, rng):
    start = [rng.standard_normal((4, 6)).astype(np.float32)]
    expected = _train(cls, kwargs, start, "cython")
    got = _train(cls, kwargs, start, "cython", layout=np.asfortranarray)
    assert not got[0].flags.c_contiguous
    assert_array_equal(got[0], expected[0])


@needs_compiled
def test_momentum_continues_from_restored_buffers_beside_new_ones():
    """A checkpoint can restore some momentum buffers; the others start as d."""
    params = [np.ones(3), np.ones(2)]
    grads = [np.full(3, 0.5), np.full(2, 0.5)]
    pairs = list(zip(params, grads, strict=True))
    for backend in ("numpy", "cython"):
        with fastcnn.use_backend(backend):
            params[0][...], params[1][...] = 1.0, 1.0
            opt = SGD(lr=0.1, momentum=0.9).bind(pairs)
            opt._state[0]["momentum_buffer"] = np.full(3, 2.0)  # restored
            opt.step()
            assert_allclose(params[0], 1 - 0.1 * (0.9 * 2.0 + 0.5))
            assert_allclose(params[1], 1 - 0.1 * 0.5)


@needs_compiled
@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda a: a.update(p=np.ones(8, np.float32)[::2]), r"params\[1\] must be C-contiguous"),
        (lambda a: a.update(g=np.ones(4)), r"grads\[1\] has dtype float64"),
        (lambda a: a.update(g=np.ones(5, np.float32)), r"grads\[1\] has 5 elements"),
        (lambda a: a.update(p=np.ones(4, np.int32)), r"params\[1\] must be float32 or float64"),
        (lambda a: a.update(p=[1.0, 2.0]), r"params\[1\] must be a numpy array, got list"),
        (lambda a: a.update(b=np.ones(4, np.float32)[::-1]), r"momentum_buffers\[1\]"),
        (lambda a: a["p"].setflags(write=False), r"params\[1\] is read-only"),
    ],
)
def test_update_kernels_refuse_bad_arrays_and_change_nothing(change, pattern):
    kernels = _backend._compiled
    good = np.ones(3, np.float32)
    arrays = {k: np.ones(4, np.float32) for k in "pgb"}
    change(arrays)
    params, grads = [good, arrays["p"]], [np.ones(3, np.float32), arrays["g"]]
    buffers = [np.ones(3, np.float32), arrays["b"]]
    with pytest.raises(ValueError, match=pattern):
        kernels.sgd_update(params, grads, buffers, 0.1, 0.9, 0.0, False, False, 1)
    with pytest.raises(ValueError, match=pattern.replace("momentum_buffers", "exp_avgs")):
        kernels.adam_update(params, grads, buffers, buffers, 0.9, 0.99, 1e-8, 0, 1, 1, 1)
    assert_array_equal(good, 1.0)  # checked before anything was written
    with pytest.raises(ValueError, match="2 params but 1 grads"):
        kernels.sgd_update(params, grads[:1], None, 0.1, 0.0, 0.0, False, False, 1)
    with pytest.raises(ValueError, match="momentum needs 2 momentum_buffers"):
        kernels.sgd_update(params, grads, None, 0.1, 0.9, 0.0, False, False, 1)


def test_state_survives_a_new_list_of_the_same_arrays():
    p, g = np.array([1.0]), np.array([1.0])
    opt = SGD(lr=0.1, momentum=0.9)
    opt.step([(p, g)])
    opt.step([(p, g)])  # a new list object, same arrays: momentum continues
    assert opt.n_steps == 2
    assert_allclose(p, [1.0 - 0.1 - 0.19])


def test_state_is_kept_by_position_when_the_arrays_are_replaced():
    """State belongs to a position in the parameter list, as in PyTorch's state_dict: new
    arrays of the same shapes and dtypes (a copied or unpickled model) continue it."""
    p, g = np.array([1.0]), np.array([1.0])
    opt = SGD(lr=0.1, momentum=0.9)
    opt.step([(p, g)])
    q, h = np.array([1.0]), np.array([1.0])
    opt.step([(q, h)])
    assert opt.n_steps == 2
    assert_allclose(q, [1.0 - 0.19])  # the momentum of the first step carried over
    assert_allclose(p, [0.9])  # the old array is no longer updated


@pytest.mark.parametrize(
    "shape, dtype, count",
    [((2,), np.float64, 1), ((1,), np.float32, 1), ((1,), np.float64, 2)],
    ids=["shape", "dtype", "count"],
)
def test_a_list_of_another_layout_starts_fresh_state(shape, dtype, count):
    p, g = np.array([1.0]), np.array([1.0])
    opt = SGD(lr=0.1, momentum=0.9)
    opt.step([(p, g)])
    changed = [(np.ones(shape, dtype), np.ones(shape, dtype)) for _ in range(count)]
    opt.step(changed)
    assert opt.n_steps == 1
    for param, _ in changed:
        assert_allclose(param, 0.9)  # one step from fresh momentum: 1 - 0.1 * 1


@pytest.mark.parametrize("make", [lambda: SGD(lr=0.1, momentum=0.9), lambda: Adam(lr=0.1)],
                         ids=["SGD", "Adam"])  # fmt: skip
def test_pairs_added_or_replaced_in_the_same_list_are_updated(make):
    """Regression (issue 20, defect 11): step(lst) skipped re-binding when given the same
    list object, so pairs appended or replaced in place were never updated."""
    opt = make()
    lst = [(np.array([1.0]), np.array([1.0]))]
    opt.step(lst)
    lst.append((np.array([5.0, 5.0]), np.array([1.0, 1.0])))
    opt.step(lst)
    assert (lst[1][0] < 5.0).all()
    lst[0] = (np.array([3.0]), np.array([1.0]))
    opt.step(lst)
    assert lst[0][0][0] < 3.0


def test_a_pickled_model_continues_its_optimizer_through_joblib(tmp_path):
    """Regression (issue 20, defect 11): joblib.dump/load breaks array identity between the
    model and its optimizer, and the next fit silently restarted Adam."""
    joblib = pytest.importorskip("joblib", reason="joblib comes with scikit-learn")
    X = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    y = np.arange(40) % 3
    model = digits_cnn(random_state=0)
    model.fit(X, y, epochs=2, batch_size=10, optimizer=Adam(1e-3), random_state=0, verbose=0)
    assert model.optimizer.n_steps == 8
    for restored in (joblib_round_trip(joblib, model, tmp_path), pickle_round_trip(model)):
        restored.fit(X, y, epochs=1, batch_size=10, random_state=1, verbose=0)
        assert restored.optimizer.n_steps == 12
        first = {id(p) for p, _ in restored.parameters()}
        assert {id(p) for p, _ in restored.optimizer._params} == first


def joblib_round_trip(joblib, model, tmp_path):
    joblib.dump(model, tmp_path / "model.joblib")
    return joblib.load(tmp_path / "model.joblib")


def pickle_round_trip(model):
    return pickle.loads(pickle.dumps(model))


def test_bind_then_step_without_arguments():
    p, g = np.array([1.0]), np.array([2.0])
    opt = SGD(lr=0.5).bind([(p, g)])
    opt.step()
    assert_allclose(p, [0.0])
    opt.reset()
    assert opt.n_steps == 0


def test_step_lr_schedule():
    opt = SGD(lr=1.0)
    sched = StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(5):
        sched.step()
        lrs.append(opt.lr)
    assert lrs == [1.0, 0.5, 0.5, 0.25, 0.25]
    assert sched.get_last_lr() == 0.25


def test_cosine_schedule_matches_formula_and_torch():
    opt = Adam(lr=0.1)
    sched = CosineAnnealingLR(opt, T_max=4, eta_min=0.01)
    lrs = [opt.lr]
    for _ in range(4):
        sched.step()
        lrs.append(opt.lr)
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)]
    assert_allclose(lrs, expected)
    assert lrs[-1] == pytest.approx(0.01)
    torch = pytest.importorskip("torch", reason="torch is optional: the reference schedule")
    t_opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.1)
    t_sched = torch.optim.lr_scheduler.CosineAnnealingLR(t_opt, T_max=4, eta_min=0.01)
    t_lrs = [t_opt.param_groups[0]["lr"]]
    for _ in range(4):
        t_opt.step()
        t_sched.step()
        t_lrs.append(t_opt.param_groups[0]["lr"])
    assert_allclose(lrs, t_lrs, rtol=1e-12)


def test_scheduler_is_a_fit_callback():
    opt = SGD(lr=1.0)
    sched = StepLR(opt, step_size=1, gamma=0.1)
    assert sched.on_epoch_end(0, {"loss": 1.0}) is None  # never asks fit to stop
    assert opt.lr == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: SGD(lr=-0.1), ValueError, r"lr must be in \[0.0, inf\), got -0.1"),
        (lambda: SGD(lr="fast"), TypeError, "lr must be a float"),
        (lambda: SGD(momentum=-1), ValueError, "momentum must be in"),
        (lambda: SGD(nesterov=True), ValueError, "nesterov=True requires momentum > 0"),
        (lambda: SGD(weight_decay=math.nan), ValueError, "weight_decay must be in"),
        (lambda: Adam(betas=(0.9, 1.0)), ValueError, r"betas\[1\] must be in \[0.0, 1.0\)"),
        (lambda: Adam(betas=0.9), TypeError, "betas must be a pair"),
        (lambda: Adam(eps=-1), ValueError, "eps must be in"),
        (lambda: StepLR(SGD(), step_size=0), ValueError, "step_size must be a positive int"),
        (lambda: CosineAnnealingLR("sgd", T_max=3), TypeError, "must be a fastcnn Optimizer"),
    ],
)
def test_constructor_errors(factory, error, match):
    with pytest.raises(error, match=match):
        factory()


def test_step_errors():
    with pytest.raises(RuntimeError, match=r"call step\(model.parameters\(\)\)"):
        SGD().step()
    with pytest.raises(ValueError, match="grad must be a float array of the param's shape"):
        SGD().step([(np.zeros(3), np.zeros(2))])
    with pytest.raises(TypeError, match=r"\(param, grad\) pairs"):
        SGD().step([np.zeros(3)])
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        SGD().step([(frozen, np.zeros(3))])
