"""Python threads: concurrent calls, thread-count changes mid-call, parallel training, GIL.

``test_backend.py`` checks that results do not depend on the OpenMP thread count; here
several *Python* threads call the ops at once on shared inputs, change the thread count
while others compute, and train models side by side. Every concurrent result must be
exactly the serial one (the kernels are deterministic for a given thread count), and the
kernels must release the GIL so other Python threads keep running meanwhile.
"""

import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import tol

import fastcnn
import fastcnn.functional as F
from fastcnn.layers import BatchNorm2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU
from fastcnn.losses import softmax_cross_entropy
from fastcnn.model import Sequential
from fastcnn.optim import SGD, Adam

needs_compiled = pytest.mark.skipif(
    "cython" not in fastcnn.available_backends(),
    reason="compiled extension not importable: the GIL and OpenMP questions are its own",
)


@pytest.fixture(autouse=True)
def restore_threads():
    previous = fastcnn.get_num_threads()
    yield
    fastcnn.set_num_threads(None)
    if fastcnn.get_num_threads() != previous:
        fastcnn.set_num_threads(previous)


def _shared_inputs(dtype):
    # Large enough that the kernels use their OpenMP teams (pooling from 2**15 input
    # elements, convolution from 2**21 multiply-adds).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8, 40, 36)).astype(dtype)
    x.flags.writeable = False  # shared by every thread: nobody may write to it
    w = rng.standard_normal((16, 4, 3, 3)).astype(dtype)
    w.flags.writeable = False
    return x, w


# One job per parameter set; each returns a dict of arrays.
def _jobs(x, w):
    g = np.ones((6, 16, 40, 36), x.dtype)
    avg_args = ((3, 2), 1, (1, 1), True, False, None)
    g_avg = np.ones(F.avg_pool2d(x, *avg_args).shape, x.dtype)
    return {
        "conv-same-groups": lambda: {"y": F.conv2d(x, w, padding="same", groups=2)},
        "conv-stride-dil": lambda: {
            "y": F.conv2d(x, w[:, :, :2], stride=(2, 1), padding=1, dilation=(2, 3), groups=2)
        },
        "conv-backward": lambda: dict(
            zip(("gx", "gw", "gb"), F.conv2d_backward(g, x, w, padding=1, groups=2), strict=True)
        ),
        "max-pool": lambda: dict(
            zip(("y", "idx"), F.max_pool2d(x, 3, 2, 1, dilation=2, ceil_mode=True), strict=True)
        ),
        "max-pool-backward": lambda: {"gx": F.max_pool2d_backward(*_pool_grad(x), x.shape)},
        "avg-pool": lambda: {
            "y": F.avg_pool2d(x, *avg_args),
            "gx": F.avg_pool2d_backward(g_avg, x.shape, *avg_args),
        },
    }


def _pool_grad(x):
    y, idx = F.max_pool2d(x, 2, 1)
    return y * 2, idx


def _on(backend_name, fn, *args):
    """``fn(*args)`` on ``backend_name``: a pool's worker threads do not inherit the
    submitting thread's ``use_backend`` block (the selection is per thread)."""
    with fastcnn.use_backend(backend_name):
        return fn(*args)


def _assert_same(got, expected, what):
    assert got.keys() == expected.keys(), what
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{what}: {key}")


@pytest.mark.parametrize("backend_name", ["numpy", "cython"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_concurrent_calls_equal_serial_calls(backend_name, dtype):
    if backend_name not in fastcnn.available_backends():
        pytest.skip("compiled extension not importable")
    fastcnn.set_num_threads(2)
    x, w = _shared_inputs(dtype)
    jobs = _jobs(x, w)
    with fastcnn.use_backend(backend_name):
        serial = {name: job() for name, job in jobs.items()}
        repeats = 8 if backend_name == "cython" else 2  # the reference is slow
        order = [name for name in jobs for _ in range(repeats)]
        np.random.default_rng(1).shuffle(order)
        with ThreadPoolExecutor(max_workers=6) as pool:
            results = list(pool.map(lambda name: (name, _on(backend_name, jobs[name])), order))
    assert len(results) == 6 * repeats
    for name, result in results:
        _assert_same(result, serial[name], name)


@needs_compiled
def test_set_num_threads_from_another_thread_during_calls():
    """One thread hammers set_num_threads while others compute: every result is right.

    A call reads the thread count once, so each result equals the serial result at some
    thread count: per-sample outputs exactly, summed weight gradients up to rounding.
    """
    x, w = _shared_inputs(np.float64)
    jobs = _jobs(x, w)
    expected = {}
    for n in (1, 2, 3, 4):
        fastcnn.set_num_threads(n)
        expected[n] = {name: job() for name, job in jobs.items()}
    stop = threading.Event()
    changes = []

    def toggle():
        rng = np.random.default_rng(2)
        while not stop.is_set():
            fastcnn.set_num_threads(int(rng.integers(1, 5)))
            changes.append(1)
            time.sleep(0.0002)

    def work(name):
        calls = 0
        while calls < 5 or len(changes) < 300:  # keep going while the count changes
            result = jobs[name]()
            calls += 1
            for key, value in result.items():
                if key in ("gw", "gb"):  # sums of per-thread partials: rounding only
                    np.testing.assert_allclose(value, expected[1][name][key], **tol(np.float64))
                else:
                    np.testing.assert_array_equal(value, expected[1][name][key], err_msg=name)
        return calls

    toggler = threading.Thread(target=toggle)
    toggler.start()
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            done = list(pool.map(work, list(jobs) * 2))
    finally:
        stop.set()
        toggler.join()
    assert len(done) == 12 and min(done) >= 5 and len(changes) >= 300
    fastcnn.set_num_threads(2)  # and the setting still works afterwards
    assert fastcnn.get_num_threads() == 2
    _assert_same(jobs["conv-backward"](), expected[2]["conv-backward"], "after")


@needs_compiled
def test_blas_thread_count_is_restored_after_concurrent_kernels():
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"]  # fmt: skip

    import scipy.linalg.cython_blas  # noqa: F401  (the kernels' BLAS, loaded on first use)

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library visible to threadpoolctl")
    x, w = _shared_inputs(np.float32)
    jobs = _jobs(x, w)
    fastcnn.set_num_threads(2)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda name: _on("cython", jobs[name]), [n for n in jobs for _ in range(6)]))
    assert blas_threads() == before


@needs_compiled
def test_blas_is_pinned_and_restored_from_any_thread():
    # threadpoolctl 3.8 lets only the first thread that sets an OpenBLAS pool change it;
    # a kernel in another thread then ran with BLAS unpinned and never restored it.
    pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")
    from fastcnn import _threads

    with _threads.blas_threads(1):  # the main thread sets first
        pass
    libs = _threads._blas_libraries()
    if not libs:
        pytest.skip("no BLAS library visible to threadpoolctl")
    before = [lib.num_threads for lib in libs]
    if max(before) < 2:
        pytest.skip("BLAS already runs on one thread: pinning is not observable")
    seen = []

    def in_worker():
        with _threads.blas_threads(1):
            seen.append([lib.num_threads for lib in libs])
        seen.append([lib.num_threads for lib in libs])

    worker = threading.Thread(target=in_worker)
    worker.start()
    worker.join()
    assert seen == [[1] * len(libs), before]
    assert [lib.num_threads for lib in libs] == before


@needs_compiled
def test_openblas_is_pinned_through_its_c_functions():
    # Pinning runs on every kernel call; through threadpoolctl's Python it cost ~10 us,
    # more than a small dense layer's product, so an OpenBLAS on its own thread pool is
    # set through its C functions. threadpoolctl (read independently) must agree.
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")
    from fastcnn import _threads

    libs = _threads._blas_libraries()
    knobs = _threads._blas_knobs_once()
    assert len(knobs) == len(libs)
    for lib, knob in zip(libs, knobs, strict=True):
        fast = lib.internal_api == "openblas" and lib.threading_layer == "pthreads"
        assert isinstance(knob, _threads._OpenBLASKnob) == fast, lib.filepath
        assert knob.get() == lib.num_threads
    paths = {lib.filepath for lib in libs}

    def pinned_counts():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["filepath"] in paths]  # fmt: skip

    before = pinned_counts()
    with _threads.blas_threads(1):
        assert pinned_counts() == [1] * len(before)
        with _threads.blas_threads(1):  # nested: the inner exit must not restore
            pass
        assert pinned_counts() == [1] * len(before)
    assert pinned_counts() == before


def test_blas_pinning_warns_when_threadpoolctl_is_missing(monkeypatch):
    # Without threadpoolctl the kernels cannot pin BLAS, and each OpenMP thread's GEMM may
    # start a BLAS team of its own: a silent 2x slowdown on 2 cores, so it must be said.
    from fastcnn import _threads

    monkeypatch.setattr(_threads, "_blas_controllers", None)
    monkeypatch.setattr(_threads, "_blas_knobs", None)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # makes the import fail
    with pytest.warns(RuntimeWarning, match=r"cannot limit BLAS.*install threadpoolctl"):
        with _threads.blas_threads(1):
            pass
    assert _threads._blas_controllers == [] and _threads._blas_knobs == []  # decided once


def _model(seed):
    return Sequential(
        Conv2D(1, 4, 3, padding=1, rng=seed),
        BatchNorm2D(4),
        ReLU(),
        MaxPool2D(2),
        Dropout(0.2),
        Flatten(),
        Dense(4 * 4 * 4, 3, rng=seed + 1),
    )


def _train(seed, optimizer):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((256, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 256)
    model = _model(seed)
    start = time.perf_counter()
    history = model.fit(X, y, epochs=4, batch_size=16, optimizer=optimizer, random_state=seed,
                        verbose=0)  # fmt: skip
    span = (start, time.perf_counter())
    return model.state_dict(), history.history["loss"], model.predict_proba(X), span


@pytest.mark.parametrize("backend_name", ["numpy", "cython"])
def test_two_models_training_in_two_threads_do_not_interfere(backend_name):
    if backend_name not in fastcnn.available_backends():
        pytest.skip("compiled extension not importable")
    fastcnn.set_num_threads(2)
    with fastcnn.use_backend(backend_name):
        serial = [_train(0, Adam(1e-2)), _train(10, SGD(0.05, momentum=0.9))]
        with ThreadPoolExecutor(max_workers=2) as pool:
            a = pool.submit(_on, backend_name, _train, 0, Adam(1e-2))
            b = pool.submit(_on, backend_name, _train, 10, SGD(0.05, momentum=0.9))
            parallel = [a.result(), b.result()]
    (_, _, _, (a0, a1)), (_, _, _, (b0, b1)) = parallel
    assert min(a1, b1) > max(a0, b0)  # the two trainings did run at the same time
    for (state, loss, proba, _), (state_p, loss_p, proba_p, _) in zip(serial, parallel,
                                                                      strict=True):  # fmt: skip
        assert loss_p == loss
        np.testing.assert_array_equal(proba_p, proba)
        for key in state:
            np.testing.assert_array_equal(state_p[key], state[key], err_msg=key)


# ---------------------------------------------------------------------------------------
# The kernels release the GIL


def _kernel_call(op):
    """One compiled-kernel call (outputs preallocated) of tens of milliseconds on one
    thread, so that a GIL held through the call would stall Python for that long."""
    from fastcnn import _backend

    k = _backend._compiled
    rng = np.random.default_rng(3)
    if op == "max_pool2d_backward":
        # A scatter is cheap per element: random targets in a large plane (cache misses).
        n = 2896
        grad = np.ones((1, 1, n, n), np.float32)
        idx = rng.permutation(n * n).reshape(1, 1, n, n)
        grad_x = np.empty_like(grad)
        return lambda: k.max_pool2d_backward(grad, idx, grad_x, 1)
    x = rng.standard_normal((8, 16, 128, 128)).astype(np.float32)
    if op.startswith("conv2d"):
        w = rng.standard_normal((32, 16, 5, 5)).astype(np.float32)
        y = np.empty((8, 32, 128, 128), np.float32)
        gx, gw, gb = np.empty_like(x), np.empty_like(w), np.empty(32, np.float32)
        args = (1, 1, 2, 2, 1, 1, 1, 1)  # stride, padding, dilation, groups, one thread
        if op == "conv2d":
            return lambda: k.conv2d_forward(x, w, None, y, *args)
        return lambda: k.conv2d_backward(y, x, w, gx, gw, gb, *args)
    if op == "max_pool2d":
        pooled, idx = F.max_pool2d(x, 7, 1, 3)
        return lambda: k.max_pool2d_forward(x, pooled, idx, 7, 7, 1, 1, 3, 3, 1, 1, 1)
    avg = F.avg_pool2d(x, 15, 1, 7)
    if op == "avg_pool2d":
        return lambda: k.avg_pool2d_forward(x, avg, 15, 15, 1, 1, 7, 7, True, 0, 1)
    grad_x = np.empty_like(x)
    return lambda: k.avg_pool2d_backward(avg, grad_x, 15, 15, 1, 1, 7, 7, True, 0, 1)


def _stalled_fraction(call, seconds=0.25):
    """Run ``call`` repeatedly in a thread while this thread runs a pure-Python loop;
    return (time per call, fraction of the time the loop spent in pauses longer than half
    a call). About 1 when the call holds the GIL, near 0 when it releases it."""
    call()  # warm up
    # The fastest of a few calls: one call slowed by a busy machine would set the
    # threshold above the real pauses, and a held GIL would go unnoticed.
    durations = []
    for _ in range(3):
        start = time.perf_counter()
        call()
        durations.append(time.perf_counter() - start)
    per_call = min(durations)
    stop = threading.Event()

    def run():
        while not stop.is_set():
            call()

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.001)
    worker = threading.Thread(target=run)
    ticks = []
    try:
        worker.start()
        begin = time.perf_counter()
        while time.perf_counter() - begin < seconds:
            ticks.append(time.perf_counter())  # pure Python: runs only with the GIL
        stop.set()
        worker.join()
    finally:
        sys.setswitchinterval(old_interval)
    gaps = np.diff(ticks)
    return per_call, gaps[gaps > per_call / 2].sum() / (ticks[-1] - ticks[0])


@needs_compiled
@pytest.mark.parametrize(
    "op",
    [
        "conv2d",
        "conv2d_backward",
        "max_pool2d",
        "max_pool2d_backward",
        "avg_pool2d",
        "avg_pool2d_backward",
    ],  # fmt: skip
)
def test_kernels_release_the_gil(op):
    """While a kernel runs in one thread, a pure-Python loop in another keeps going."""
    fastcnn.set_num_threads(1)
    per_call, stalled = _stalled_fraction(_kernel_call(op))
    assert per_call > 0.01, f"{op}: a call takes {per_call:.4f} s, too short to tell"
    assert stalled < 0.5, f"{op}: Python stalled {stalled:.0%} of the time"


def test_the_gil_measurement_detects_a_held_gil():
    """Control for the test above: a C call that keeps the GIL (builtin sum over a range)
    for about as long as a kernel call does stall the Python loop."""
    per_call, stalled = _stalled_fraction(lambda: sum(range(2_000_000)))
    assert per_call > 0.01
    assert stalled > 0.5, f"a held GIL stalled Python only {stalled:.0%} of the time"


# ---------------------------------------------------------------------------------------
# The warm team: small ops join an OpenMP team whose workers are still spinning


def _openmp():
    from fastcnn._kernels import _openmp

    if not _openmp.openmp_enabled():
        pytest.skip("built without OpenMP: every kernel runs on one thread")
    return _openmp


@pytest.fixture
def warm_window():
    """Set the warm window for the test (seconds), then restore fastcnn's own."""
    module = _openmp()
    saved = module.get_warm_window()
    yield module.set_warm_window
    module.set_warm_window(saved)


def _release_a_team():
    """Run a kernel large enough to take the 2-thread team, which then counts as warm."""
    fastcnn.set_num_threads(2)
    with fastcnn.use_backend("cython"):
        F.tanh(np.zeros(1 << 16, np.float32))


@needs_compiled
def test_small_work_joins_only_a_warm_team(warm_window):
    team_size_for = _openmp().team_size_for
    assert team_size_for(100, 50, 2) == 2  # large work: always the team
    assert team_size_for(10, 50, 1) == 1  # one thread asked: one thread
    warm_window(10.0)
    _release_a_team()
    assert team_size_for(10, 50, 2) == 2  # released moments ago: still warm
    assert team_size_for(10, 50, 1) == 1
    warm_window(0.0)
    assert team_size_for(10, 50, 2) == 1  # warm reuse off
    warm_window(0.005)
    _release_a_team()
    time.sleep(0.05)
    assert team_size_for(10, 50, 2) == 1  # the window has passed: the workers sleep


@needs_compiled
@pytest.mark.parametrize("seconds", [-1e-6, float("nan")])
def test_warm_window_must_be_a_nonnegative_number(seconds):
    with pytest.raises(ValueError, match="seconds must be >= 0"):
        _openmp().set_warm_window(seconds)


@needs_compiled
@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, 40e-6), ({"OMP_WAIT_POLICY": "passive"}, 0.0), ({"GOMP_SPINCOUNT": "100"}, 0.0)],
    ids=["fastcnn-spin", "user-policy", "user-spincount"],
)
def test_warm_reuse_only_under_the_spin_fastcnn_set(env, expected):
    # fastcnn knows how long idle workers spin only when it set GOMP_SPINCOUNT itself;
    # under a spin the user chose, small ops never count on awake workers.
    _openmp()
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = "import fastcnn; from fastcnn._kernels import _openmp; print(_openmp.get_warm_window())"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
        timeout=120, check=True,
    ).stdout  # fmt: skip
    assert float(out) == expected


def _small_ops(dtype):
    """Every op of a classifier head, at sizes below the kernels' parallel thresholds."""
    # 37 x 50 -> 29: a product whose slices round differently from the whole (checked by
    # slicing it on purpose), so only an unsplit product passes.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((37, 50)).astype(dtype)
    w = rng.standard_normal((29, 50)).astype(dtype)
    b = rng.standard_normal(29).astype(dtype)
    g = rng.standard_normal((37, 29)).astype(dtype)
    labels = rng.integers(0, 29, 37)
    planes = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    half = planes[:, :, :4, :4]
    return {
        "linear": lambda: F.linear(x, w, b),
        "linear_backward": lambda: F.linear_backward(g, x, w),
        "linear_backward_weight_only": lambda: F.linear_backward(g, x, w, needs_input_grad=False),
        "tanh": lambda: F.tanh(x),
        "tanh_backward": lambda: F.tanh_backward(g, np.tanh(g)),
        "relu": lambda: F.relu(x),
        "loss": lambda: softmax_cross_entropy(g, labels),
        "max_pool2d": lambda: F.max_pool2d(planes, 2),
        "avg_pool2d_backward": lambda: F.avg_pool2d_backward(half, planes.shape, 2),
    }


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_small_ops_give_the_same_bits_on_a_warm_team(warm_window, dtype):
    # Whether a small op joins the team depends on timing; its result must not. A matrix
    # product and the loss stay whole on one thread, element-wise work splits exactly.
    ops = _small_ops(dtype)
    fastcnn.set_num_threads(2)
    with fastcnn.use_backend("cython"):
        warm_window(0.0)
        cold = {name: op() for name, op in ops.items()}
        warm_window(10.0)
        team_size_for = _openmp().team_size_for
        for name, op in ops.items():
            _release_a_team()
            assert team_size_for(1, 2, 2) == 2
            warm = op()
            for got, want in zip(_outputs(warm), _outputs(cold[name]), strict=True):
                if want is None:
                    assert got is None, name
                else:
                    np.testing.assert_array_equal(got, want, err_msg=name)


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


@needs_compiled
def test_a_team_smaller_than_asked_for_gives_the_same_results():
    # OMP_THREAD_LIMIT=1 gives every parallel region one thread although the kernels ask
    # for two (as a build without OpenMP, or a call from inside another parallel region,
    # would): the per-thread partials of the threads that never ran must still be zero.
    # MALLOC_PERTURB_ fills fresh malloc blocks with a nonzero pattern, so scratch that a
    # kernel forgot to clear shows up as wrong sums instead of a lucky zero page.
    _openmp()
    code = """
import numpy as np, fastcnn, fastcnn.functional as F
fastcnn.set_num_threads(2)
rng = np.random.default_rng(0)
cases = [((16, 1, 28, 28), (6, 1, 5, 5), 2),  # wide weight gradient (LeNet C1)
         ((16, 6, 14, 14), (16, 6, 5, 5), 0),  # lanes weight gradient (LeNet C3)
         ((4, 16, 9, 9), (24, 16, 3, 3), 1),  # direct forward, 8 x 48 blocks
         ((46, 6, 14, 14), (16, 6, 5, 5), 1)]  # samples across the lanes, a partial block
for xs, ws, pad in cases:
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    y = F.conv2d(x, w, padding=pad)
    g = rng.standard_normal(y.shape).astype(np.float32)
    got = (y,) + F.conv2d_backward(g, x, w, padding=pad)
    with fastcnn.use_backend("numpy"):
        want = (F.conv2d(x, w, padding=pad),) + F.conv2d_backward(g, x, w, padding=pad)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
print("ok")
"""
    env = dict(os.environ, OMP_THREAD_LIMIT="1", MALLOC_PERTURB_="165")
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


# ---------------------------------------------------------------------------------------
# Forked children: libgomp cannot start threads in a child of a process that ran a team
#
# The child inherits the forking thread's OpenMP thread pool but not its threads, and its
# first parallel region of 2+ threads waits for them forever. Each check runs in a fresh
# interpreter whose parent kills a child that does not finish, so that a regression fails
# instead of hanging the suite.

_FORK_PRELUDE = """
import json, os, sys, time, traceback
import numpy as np
import fastcnn, fastcnn.functional as F

rng = np.random.default_rng(0)
x = rng.standard_normal((8, 16, 32, 32)).astype(np.float32)
w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)


def kernels():
    # A conv (direct and BLAS paths), its backward, pooling and an element-wise op:
    # every one large enough to take a team of 2 threads.
    y = F.conv2d(x, w, padding=1)
    gx, gw, gb = F.conv2d_backward(y, x, w, padding=1)
    return [y, gx, gw, F.max_pool2d(y, 2)[0], F.tanh(y)]


def child_report():
    got = kernels()
    same = all(np.allclose(a, b, rtol=1e-4, atol=1e-3) for a, b in zip(got, expected))
    report = {"same": bool(same), "threads": fastcnn.get_num_threads()}
    try:
        fastcnn.set_num_threads(2)
    except RuntimeError as exc:
        report["set_2"] = str(exc)
    fastcnn.set_num_threads(None)
    report["after_none"] = fastcnn.get_num_threads()
    fastcnn.set_num_threads(1)
    report["still_same"] = bool(np.allclose(kernels()[0], expected[0], rtol=1e-4, atol=1e-3))
    return report


def in_forked_child(fn):
    # fn()'s JSON result in a forked child, or {"hung": ...} if it does not finish.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            out = json.dumps(fn())
        except BaseException:
            out = json.dumps({"error": traceback.format_exc()})
        os.write(write, out.encode())
        os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 60
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return {"hung": "the forked child did not finish in 60 s"}
        time.sleep(0.05)
    return json.loads(os.read(read, 1 << 16).decode())
"""


_START_A_TEAM = """
fastcnn.set_num_threads(2)
expected = kernels()  # the parent's team of 2 threads is started here
"""


def _run_fork_script(body: str, start_a_team: bool = True) -> list:
    code = _FORK_PRELUDE + (_START_A_TEAM if start_a_team else "") + body
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240
        )
    except subprocess.TimeoutExpired as exc:  # the script's own timeout did not fire
        pytest.fail(f"the fork script hung: {exc.stderr}")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check_child_report(report):
    assert "hung" not in report and "error" not in report, report
    assert report["same"] and report["still_same"], report
    assert report["threads"] == 1 and report["after_none"] == 1, report
    message = report.get("set_2", "")
    assert "forked" in message and "'spawn'" in message and "'forkserver'" in message, report


@needs_compiled
def test_a_forked_child_runs_the_kernels_without_hanging():
    _openmp()
    reports = _run_fork_script(
        "print(json.dumps([in_forked_child(child_report), fastcnn.get_num_threads()]))"
    )
    _check_child_report(reports[0])
    assert reports[1] == 2  # the parent keeps its threads


@needs_compiled
def test_a_child_forked_before_any_team_may_use_threads():
    # Nothing to inherit: such a child (a server's worker forked after loading a model,
    # say) keeps the default and may start teams of its own.
    _openmp()
    report = _run_fork_script(
        """
def child():
    default = fastcnn.get_num_threads()
    fastcnn.set_num_threads(2)
    y = kernels()[0]
    from fastcnn._kernels import _openmp
    return {"default": default, "threads": fastcnn.get_num_threads(),
            "team": _openmp.team_started(), "y": float(y.sum())}

fastcnn.set_num_threads(1)
before = F.conv2d(x, w, padding=1)  # one thread: no team
report = in_forked_child(child)
report["expected y"] = float(before.sum())
print(json.dumps([report]))
""",
        start_a_team=False,
    ).pop()
    assert report.get("hung") is None and report.get("error") is None, report
    assert report["threads"] == 2 and report["team"] is True, report
    assert report["y"] == pytest.approx(report["expected y"], rel=1e-4)
    assert report["default"] == 1  # the parent's setting, unchanged


@needs_compiled
def test_a_fork_pool_runs_the_kernels_without_hanging():
    _openmp()
    reports = _run_fork_script(
        """
import multiprocessing


def job(_):
    return child_report()


if __name__ == "__main__":
    pool = multiprocessing.get_context("fork").Pool(2)
    try:
        reports = pool.map_async(job, range(4)).get(timeout=60)
    except multiprocessing.TimeoutError:
        reports = [{"hung": "the pool's workers did not finish in 60 s"}]
    finally:
        pool.terminate()
        pool.join()
    print(json.dumps(reports))
"""
    )
    assert len(reports) == 4, reports
    for report in reports:
        _check_child_report(report)


@needs_compiled
def test_a_fork_leaves_the_blas_pinning_whole_in_the_child():
    # At the fork one thread holds the pinning lock and another runs a kernel with BLAS
    # pinned to one thread. Neither exists in the child: the lock must be free there, and
    # BLAS back at the count it had outside kernels.
    pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")
    reports = _run_fork_script(
        """
import threading
from fastcnn import _threads

def blas_counts():
    return [knob.get() for knob in _threads._blas_knobs_once()]

before = blas_counts()
holding, pinned, done = threading.Event(), threading.Event(), threading.Event()

def hold_the_lock():
    with _threads._blas_lock:
        holding.set()
        time.sleep(0.3)  # the fork waits for it

def run_pinned():
    with _threads.blas_threads(1):
        pinned.set()
        done.wait()

threads = [threading.Thread(target=run_pinned), threading.Thread(target=hold_the_lock)]
threads[0].start(); pinned.wait()
threads[1].start(); holding.wait()

def child():
    free = _threads._blas_lock.acquire(timeout=5)
    _threads._blas_lock.release() if free else None
    return {"lock free": free, "depth": _threads._blas_depth, "blas": blas_counts(),
            "same": bool(np.allclose(kernels()[0], expected[0], rtol=1e-4, atol=1e-3))}

report = in_forked_child(child)
parent_pinned = blas_counts()
done.set()
for t in threads:
    t.join()
print(json.dumps([report, {"before": before, "parent pinned": parent_pinned,
                           "parent after": blas_counts()}]))
"""
    )
    child, parent = reports
    assert child == {"lock free": True, "depth": 0, "blas": parent["before"], "same": True}
    assert parent["parent after"] == parent["before"]
    if parent["before"] and max(parent["before"]) > 1:  # else pinning is not observable
        assert parent["parent pinned"] == [1] * len(parent["before"])


# ---------------------------------------------------------------------------------------
# threadpoolctl


@pytest.mark.skipif(
    "cython" not in fastcnn.available_backends()
    or not fastcnn._backend._compiled.openmp.openmp_enabled(),
    reason="threadpoolctl limits OpenMP runtimes; this build has none",
)
@pytest.mark.parametrize("user_api", [None, "openmp"])
def test_threadpoolctl_limits_reach_the_kernels(user_api, monkeypatch):
    """threadpool_limits (scikit-learn's and joblib's tool) once did not reach fastcnn:
    the count was cached at import (issue 22, item 4). fastcnn is a library of its own in
    threadpoolctl's eyes, governed by its OpenMP limits and by no BLAS limit."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    seen = []
    spy = _spy_on_kernel_threads(monkeypatch, seen)
    x = np.ones((8, 4, 16, 16), np.float32)
    w = np.ones((4, 4, 3, 3), np.float32)
    fastcnn.set_num_threads(2)
    try:
        assert {"fastcnn"} <= {i["internal_api"] for i in threadpoolctl.threadpool_info()}
        with threadpoolctl.threadpool_limits(limits=1, user_api=user_api):
            assert fastcnn.get_num_threads() == 1
            with fastcnn.use_backend("cython"):
                np.testing.assert_allclose(F.conv2d(x, w, padding=1)[0, 0, 5, 5], 36.0)
            assert spy and seen[-1] == 1  # the kernel was asked for one thread
        assert fastcnn.get_num_threads() == 2
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            assert fastcnn.get_num_threads() == 2  # BLAS limits are not fastcnn's
    finally:
        fastcnn.set_num_threads(None)
    with threadpoolctl.threadpool_limits(limits=1):
        assert fastcnn.get_num_threads() == 1
    assert fastcnn._threads._num_threads is None  # the default comes back as the default


def test_another_librarys_openmp_setting_does_not_reach_the_kernels():
    """torch.set_num_threads (or any omp_set_num_threads in the shared runtime) is that
    library's setting, not fastcnn's."""
    from fastcnn._kernels import _openmp

    if not _openmp.openmp_enabled():
        pytest.skip("no OpenMP runtime in this build")
    import ctypes.util

    name = ctypes.util.find_library("gomp")
    if name is None:
        pytest.skip("libgomp not found")
    gomp = ctypes.CDLL(name)
    before = fastcnn.get_num_threads()
    saved = gomp.omp_get_max_threads()
    gomp.omp_set_num_threads(1)
    try:
        assert fastcnn.get_num_threads() == before
    finally:
        gomp.omp_set_num_threads(saved)


def _spy_on_kernel_threads(monkeypatch, seen):
    """Record the thread count functional passes to the compiled conv2d."""
    from fastcnn import _backend

    compiled = _backend._compiled
    if compiled is None:
        return False
    original = compiled.conv2d_forward

    def conv2d_forward(*args):
        seen.append(args[-1])
        return original(*args)

    monkeypatch.setattr(compiled, "conv2d_forward", conv2d_forward)
    return True
