"""Op outputs (fastcnn._buffers): every result is a new array that owns its memory, no
result aliases one that anyone still holds, reused memory is fully overwritten, and the
memory kept for reuse stays bounded."""

import gc
import subprocess
import sys
import threading
import weakref

import numpy as np
import pytest
from conftest import tol

import fastcnn
import fastcnn.functional as F
from fastcnn import _buffers

needs_pool = pytest.mark.skipif(
    _buffers._memory is None, reason="outputs reuse memory only with the compiled extension"
)

# Large enough (>= _buffers.MIN_BYTES) to be recycled.
SHAPE = (16, 6, 28, 28)


@pytest.fixture(autouse=True)
def _empty_cache():
    fastcnn.empty_cache()
    yield
    fastcnn.empty_cache()


@pytest.fixture
def pool_limit():
    """Set the bytes the allocator may keep; the defaults come back afterwards."""
    min_bytes, default = _buffers._memory.min_bytes(), _buffers._memory.max_bytes()
    yield lambda max_bytes: _buffers._memory.set_limits(min_bytes, max_bytes)
    _buffers._memory.set_limits(min_bytes, default)


def _every_op(x, w, grad):
    """Each op once, on inputs whose outputs are all large enough to be recycled."""
    y = F.conv2d(x, w, padding=2)
    gx, _, _ = F.conv2d_backward(grad, x, w, padding=2)
    p, idx = F.max_pool2d(y, 1)
    return {
        "conv2d": y,
        "conv2d_backward": gx,
        "max_pool2d": p,
        "max_pool2d_backward": F.max_pool2d_backward(grad, idx, y.shape),
        "avg_pool2d": F.avg_pool2d(y, 1),
        "avg_pool2d_backward": F.avg_pool2d_backward(grad, y.shape, 1),
        "tanh": F.tanh(y),
        "tanh_backward": F.tanh_backward(grad, F.tanh(y)),
        "relu": F.relu(y),
        "relu_backward": F.relu_backward(grad, F.relu(y)),
        "sigmoid": F.sigmoid(y),
        "sigmoid_backward": F.sigmoid_backward(grad, F.sigmoid(y)),
    }


def test_results_held_by_the_caller_are_never_reused(backend, dtype, rng):
    x = rng.standard_normal(SHAPE).astype(dtype)
    held = [F.tanh(x) for _ in range(11)]
    for i, a in enumerate(held):
        for b in held[i + 1 :]:
            assert not np.shares_memory(a, b)
    np.testing.assert_allclose(held[0], np.tanh(x), **tol(dtype))


@needs_pool
def test_released_results_are_recycled_and_fully_overwritten(backend, dtype, rng):
    x = rng.standard_normal((SHAPE[0], 1, *SHAPE[2:])).astype(dtype)
    w = rng.standard_normal((SHAPE[1], 1, 5, 5)).astype(dtype)
    grad = rng.standard_normal(SHAPE).astype(dtype)
    expected = {name: out.copy() for name, out in _every_op(x, w, grad).items()}
    # Poison every result, drop it, and compute again: recycled memory must not leak in.
    first = _every_op(x, w, grad)
    addresses = {name: out.ctypes.data for name, out in first.items()}
    for out in first.values():
        out[...] = np.nan if out.dtype.kind == "f" else -1
    del out, first
    gc.collect()
    second = _every_op(x, w, grad)
    reused = [name for name, out in second.items() if out.ctypes.data in addresses.values()]
    assert reused, "no output was recycled"
    for name, out in second.items():
        np.testing.assert_array_equal(out, expected[name], err_msg=name)


def test_a_view_keeps_its_base_from_being_recycled(backend, rng):
    x = rng.standard_normal(SHAPE).astype(np.float32)
    y = F.relu(x)
    view = y[3]
    del y
    for _ in range(9):
        assert not np.shares_memory(F.relu(x), view)
    np.testing.assert_array_equal(view, np.maximum(x[3], 0))


@needs_pool
def test_small_results_are_plain_arrays(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    F.tanh(x)
    assert _buffers.kept_bytes() == 0


@needs_pool
def test_cache_is_bounded_and_can_be_emptied(pool_limit):
    limit = 3 * 16 * 6 * 28 * 28 * 4
    pool_limit(limit)
    for n in range(16, 40):
        F.relu(np.ones((n, 6, 28, 28), np.float32))
        assert _buffers.kept_bytes() <= limit
    assert _buffers.kept_bytes() > 0
    fastcnn.empty_cache()
    assert _buffers.kept_bytes() == 0


@pytest.mark.skipif(
    "cython" not in fastcnn.available_backends(), reason="compiled extension not importable"
)
def test_convolution_scratch_is_kept_for_the_next_call_and_emptied(rng):
    """The compiled convolutions keep their largest scratch block between calls (no
    allocation, no page faults in a training step's hot path); empty_cache frees it."""
    from fastcnn._kernels import _conv

    x = rng.standard_normal((16, 6, 14, 14)).astype(np.float32)
    w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    with fastcnn.use_backend("cython"):
        F.conv2d_backward(F.conv2d(x, w), x, w)
        kept = _conv._kept_scratch_bytes()
        assert kept > 0
        for _ in range(3):
            F.conv2d_backward(F.conv2d(x, w), x, w)
        assert _conv._kept_scratch_bytes() == kept  # reused, never grown
    fastcnn.empty_cache()
    assert _conv._kept_scratch_bytes() == 0


def test_concurrent_callers_never_share_a_result(backend, rng):
    x = rng.standard_normal(SHAPE).astype(np.float32)
    expected = np.tanh(x)
    errors = []

    def work():
        try:
            with fastcnn.use_backend(backend):  # the selection is per thread
                _tanh_pairs()
        except Exception as exc:  # reported in the main thread
            errors.append(exc)

    def _tanh_pairs():
        for _ in range(50):
            a, b = F.tanh(x), F.tanh(x)
            assert not np.shares_memory(a, b)
            np.testing.assert_allclose(a, expected, **tol(np.float32))
            a[...] = np.nan  # would show up in another thread's result if shared

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


@needs_pool
def test_eviction_drops_the_oldest_free_block_and_never_one_in_use(pool_limit):
    limit = 2 * 16 * 6 * 28 * 28 * 4
    pool_limit(limit)
    x = np.ones(SHAPE, np.float32)
    held = F.relu(x)
    F.relu(x)  # a second block of the same size, freed at once
    F.relu(np.ones((8, 6, 28, 28), np.float32))  # freed too: the oldest free block goes
    assert 0 < _buffers.kept_bytes() <= limit
    other = F.relu(np.ones((8, 6, 28, 28), np.float32))
    assert not np.shares_memory(held, other)
    np.testing.assert_array_equal(held, 1)


# A result is the caller's: whatever ordinary numpy idiom they use on it, later results
# stay right (issue 20, defect 1: the same array object was once handed out again).

CONV_X_SHAPE = (4, 8, 32, 32)


def _conv_inputs(dtype, rng):
    x = rng.standard_normal(CONV_X_SHAPE).astype(dtype)
    w = rng.standard_normal((8, 8, 3, 3)).astype(dtype)
    return x, w


def test_in_place_reshape_of_a_dropped_result_changes_no_later_result(backend, dtype, rng):
    x, w = _conv_inputs(dtype, rng)
    expected = F.conv2d(x, w, padding=1).copy()
    y = F.conv2d(x, w, padding=1)
    y.shape = (4, 8, 1024, 1)
    del y
    z = F.conv2d(x, w, padding=1)
    assert z.shape == expected.shape
    np.testing.assert_array_equal(z, expected)


def test_max_pool_after_an_in_place_reshape_of_a_dropped_result(backend, dtype, rng):
    x = rng.standard_normal((16, 8, 32, 32)).astype(dtype)
    expected_out, expected_idx = (a.copy() for a in F.max_pool2d(x, 2))
    out, idx = F.max_pool2d(x, 2)
    out.shape, idx.shape = (-1,), (-1,)
    del out, idx
    out, idx = F.max_pool2d(x, 2)
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(idx, expected_idx)


def test_results_may_be_resized_retyped_or_frozen(backend, rng):
    x = rng.standard_normal(SHAPE).astype(np.float32)
    expected = np.maximum(x, 0)
    y = F.relu(x)
    y.resize((7,))  # owns its memory and nothing else refers to it
    assert y.shape == (7,)
    y = F.relu(x)
    y.dtype = np.int32
    y = F.relu(x)
    y.flags.writeable = False
    del y
    for _ in range(3):
        np.testing.assert_array_equal(F.relu(x), expected)


def test_a_resized_result_does_not_corrupt_the_heap():
    """Once a resize of a dropped result crashed the next op ("malloc(): corrupted top size")."""
    code = (
        "import numpy as np, fastcnn.functional as F\n"
        "x = np.random.default_rng(0).standard_normal((4, 8, 32, 32), dtype=np.float32)\n"
        "for backend in ('numpy', 'cython'):\n"
        "    if backend not in __import__('fastcnn').available_backends(): continue\n"
        "    with __import__('fastcnn').use_backend(backend):\n"
        "        for _ in range(20):\n"
        "            y = F.relu(x); y.resize((16,), refcheck=False); del y\n"
        "            assert (F.relu(x) == np.maximum(x, 0)).all()\n"
        "print('ok')\n"
    )
    assert run_python(code) == "ok"


def test_every_result_is_a_new_object_that_dies_with_its_last_reference(backend, dtype, rng):
    x = rng.standard_normal((SHAPE[0], 1, *SHAPE[2:])).astype(dtype)
    w = rng.standard_normal((SHAPE[1], 1, 5, 5)).astype(dtype)
    grad = rng.standard_normal(SHAPE).astype(dtype)
    first = _every_op(x, w, grad)
    refs = {name: weakref.ref(out) for name, out in first.items()}
    kept = {name: out.copy() for name, out in first.items()}
    del first
    gc.collect()
    assert all(ref() is None for ref in refs.values())
    second = _every_op(x, w, grad)
    for name, out in second.items():
        assert out.flags.owndata and out.base is None, name
        np.testing.assert_array_equal(out, kept[name], err_msg=name)


def test_without_the_compiled_allocator_results_are_plain_numpy_arrays():
    code = (
        "import sys\n"
        "sys.modules['fastcnn._kernels._memory'] = None\n"
        "import numpy as np, fastcnn, fastcnn.functional as F\n"
        "x = np.ones((16, 6, 28, 28), np.float32)\n"
        "y = F.relu(x); y.resize((3,)); assert y.shape == (3,)\n"
        "fastcnn.empty_cache()\n"
        "print(fastcnn._buffers.kept_bytes(), (F.relu(-x) == 0).all())\n"
    )
    assert run_python(code).split() == ["0", "True"]


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (a crash there fails the test, not pytest);
    return what it printed."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()
