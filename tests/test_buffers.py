"""Recycled output arrays (fastcnn._buffers): an op's result never aliases an array that
anyone still holds, recycled memory is fully overwritten, and the cache stays bounded."""

import gc
import threading

import numpy as np
import pytest
from conftest import tol

import fastcnn
import fastcnn.functional as F
from fastcnn import _buffers

pytestmark = pytest.mark.skipif(not _buffers._ENABLED, reason="no recycling on this build")

# Large enough (>= _buffers.MIN_BYTES) to be recycled.
SHAPE = (16, 6, 28, 28)


@pytest.fixture(autouse=True)
def _empty_cache():
    fastcnn.empty_cache()
    yield
    fastcnn.empty_cache()


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
    held = [F.tanh(x) for _ in range(_buffers.MAX_PER_KEY + 3)]
    for i, a in enumerate(held):
        for b in held[i + 1 :]:
            assert not np.shares_memory(a, b)
    np.testing.assert_allclose(held[0], np.tanh(x), **tol(dtype))


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
    for _ in range(_buffers.MAX_PER_KEY + 1):
        assert not np.shares_memory(F.relu(x), view)
    np.testing.assert_array_equal(view, np.maximum(x[3], 0))


def test_small_results_are_plain_arrays(rng):
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    F.tanh(x)
    assert _buffers.kept_bytes() == 0


def test_cache_is_bounded_and_can_be_emptied(monkeypatch, rng):
    monkeypatch.setattr(_buffers, "MAX_TOTAL_BYTES", 3 * 16 * 6 * 28 * 28 * 4)
    for n in range(16, 40):
        F.relu(np.ones((n, 6, 28, 28), np.float32))
        assert _buffers.kept_bytes() <= _buffers.MAX_TOTAL_BYTES
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
            for _ in range(50):
                a, b = F.tanh(x), F.tanh(x)
                assert not np.shares_memory(a, b)
                np.testing.assert_allclose(a, expected, **tol(np.float32))
                a[...] = np.nan  # would show up in another thread's result if shared
        except Exception as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_eviction_finds_a_free_array_behind_one_in_use(monkeypatch):
    # Regression: eviction once located arrays with ==, which numpy makes element-wise.
    monkeypatch.setattr(_buffers, "MAX_TOTAL_BYTES", 2 * 16 * 6 * 28 * 28 * 4)
    x = np.ones(SHAPE, np.float32)
    held = F.relu(x)
    F.relu(x)  # a second array of the same shape, released at once
    other = F.relu(np.ones((8, 6, 28, 28), np.float32))  # needs room: evicts the free one
    assert _buffers.kept_bytes() <= _buffers.MAX_TOTAL_BYTES
    assert not np.shares_memory(held, other)
