"""Backend selection (environment variable, set/use/get, fallback) and thread control."""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import tol

import fastcnn
import fastcnn.functional as F
from fastcnn import _backend

COMPILED = "cython" in fastcnn.available_backends()
needs_compiled = pytest.mark.skipif(
    not COMPILED,
    reason=f"compiled extension not importable: {fastcnn.backend_import_error()}",
)
OPENMP = COMPILED and _backend._compiled.openmp.openmp_enabled()

# Make the compiled extension unimportable before fastcnn is imported: the same path as a
# missing or ABI-incompatible .so.
BREAK_EXTENSION = 'import sys\nsys.modules["fastcnn._kernels._conv"] = None\n'


def run_python(code: str, **env_updates: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter, without inherited FASTCNN_/OMP_ settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FASTCNN_BACKEND", "OMP_NUM_THREADS") and not k.startswith("GOMP_")
    }
    env.update(env_updates)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def run_json(code: str, **env_updates: str):
    proc = run_python(code, **env_updates)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def restore_backend():
    previous = fastcnn.get_backend()
    yield
    fastcnn.set_backend(previous)


@pytest.fixture
def restore_threads():
    previous = fastcnn.get_num_threads()
    yield
    fastcnn.set_num_threads(None)
    if fastcnn.get_num_threads() != previous:
        fastcnn.set_num_threads(previous)


# ---------------------------------------------------------------------------------------
# This installation


def test_compiled_backend_is_importable_in_this_installation():
    if os.environ.get("FASTCNN_ALLOW_NO_EXTENSION") == "1" and not COMPILED:
        pytest.skip(
            "FASTCNN_ALLOW_NO_EXTENSION=1: running without the compiled extension "
            f"(import failed: {fastcnn.backend_import_error()})"
        )
    assert COMPILED, (
        "the compiled extension did not import, so only the slow numpy backend is "
        f"available: {fastcnn.backend_import_error()}. Rebuild it (pip install -e .) or set "
        "FASTCNN_ALLOW_NO_EXTENSION=1 to run the suite on the numpy backend only."
    )
    assert fastcnn.backend_import_error() is None
    assert fastcnn.available_backends() == ("cython", "numpy")


@needs_compiled
def test_fresh_import_selects_compiled_backend_without_warning():
    result = run_json(
        """
        import json, warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import fastcnn
        print(json.dumps({"backend": fastcnn.get_backend(),
                          "warnings": [str(w.message) for w in caught
                                       if issubclass(w.category, fastcnn.FastCNNWarning)]}))
        """
    )
    assert result == {"backend": "cython", "warnings": []}


# ---------------------------------------------------------------------------------------
# FASTCNN_BACKEND


@pytest.mark.parametrize(
    ("value", "expected"),
    [("numpy", "numpy"), (" NumPy ", "numpy"), ("CYTHON", "cython")],
)
def test_env_var_selects_backend(value, expected):
    if expected == "cython" and not COMPILED:
        pytest.skip("compiled extension not importable")
    result = run_json(
        """
        import json
        import numpy as np
        import fastcnn, fastcnn.functional as F
        from fastcnn import _backend
        y = F.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))
        print(json.dumps({"backend": fastcnn.get_backend(),
                          "impl": getattr(_backend.current(), "name", "numpy"),
                          "y": y.ravel().tolist()}))
        """,
        FASTCNN_BACKEND=value,
    )
    assert result == {"backend": expected, "impl": expected, "y": [4.0] * 4}


@pytest.mark.parametrize("value", ["numpy,cython"])
def test_env_var_rejects_unknown_backend(value):
    proc = run_python("import fastcnn", FASTCNN_BACKEND=value)
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr
    assert "FASTCNN_BACKEND must be one of ('cython', 'numpy')" in proc.stderr
    assert repr(value) in proc.stderr


def test_empty_env_var_means_default():
    result = run_json(
        "import json, fastcnn; print(json.dumps(fastcnn.get_backend()))", FASTCNN_BACKEND=""
    )
    assert result == ("cython" if COMPILED else "numpy")


# ---------------------------------------------------------------------------------------
# set_backend / use_backend / get_backend / available_backends


def test_available_backends():
    names = fastcnn.available_backends()
    assert isinstance(names, tuple)
    assert "numpy" in names
    assert set(names) <= {"cython", "numpy"}
    assert fastcnn.get_backend() in names


def test_set_backend_switches_and_get_backend_reports(restore_backend):
    for name in fastcnn.available_backends():
        fastcnn.set_backend(name)
        assert fastcnn.get_backend() == name
    fastcnn.set_backend("NumPy")
    assert fastcnn.get_backend() == "numpy"


@pytest.mark.parametrize("name", ["torch", "", "cython ", "np", None, 1, ["numpy"]])
def test_set_backend_rejects_invalid_names(name, restore_backend):
    fastcnn.set_backend("numpy")
    with pytest.raises(
        ValueError,
        match=rf"backend must be one of \('cython', 'numpy'\), got {re.escape(repr(name))}",
    ):
        fastcnn.set_backend(name)
    assert fastcnn.get_backend() == "numpy"
    with pytest.raises(ValueError, match=r"backend must be one of"):
        with fastcnn.use_backend(name):
            pass  # pragma: no cover
    assert fastcnn.get_backend() == "numpy"


@needs_compiled
def test_use_backend_restores_previous_backend(restore_backend):
    fastcnn.set_backend("cython")
    with fastcnn.use_backend("NUMPY") as active:
        assert active == "numpy"
        assert fastcnn.get_backend() == "numpy"
        with fastcnn.use_backend("cython"):
            assert fastcnn.get_backend() == "cython"
        assert fastcnn.get_backend() == "numpy"
    assert fastcnn.get_backend() == "cython"
    with pytest.raises(RuntimeError, match="boom"):
        with fastcnn.use_backend("numpy"):
            raise RuntimeError("boom")
    assert fastcnn.get_backend() == "cython"


@pytest.mark.parametrize("name", ["numpy", "cython"])
def test_ops_dispatch_to_the_active_backend(name, monkeypatch, restore_threads):
    if name not in fastcnn.available_backends():
        pytest.skip("compiled extension not importable")
    calls = []
    impl = _backend._compiled if name == "cython" else _backend._reference_module()
    for op in (
        "conv2d_forward",
        "conv2d_backward",
        "max_pool2d_forward",
        "max_pool2d_backward",
        "avg_pool2d_forward",
        "avg_pool2d_backward",
    ):
        original = getattr(impl, op)

        def spy(*args, _op=op, _original=original):
            calls.append((_op, args[-1]))
            return _original(*args)

        monkeypatch.setattr(impl, op, spy)
    fastcnn.set_num_threads(2)
    x = np.ones((1, 1, 4, 4))
    w = np.ones((1, 1, 3, 3))
    with fastcnn.use_backend(name):
        F.conv2d(x, w)
        F.conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
        y, idx = F.max_pool2d(x, 2)
        F.max_pool2d_backward(y, idx, x.shape)
        F.avg_pool2d(x, 2)
        F.avg_pool2d_backward(y, x.shape, 2)
    assert calls == [
        ("conv2d_forward", 2),
        ("conv2d_backward", 2),
        ("max_pool2d_forward", 2),
        ("max_pool2d_backward", 2),
        ("avg_pool2d_forward", 2),
        ("avg_pool2d_backward", 2),
    ]


# ---------------------------------------------------------------------------------------
# Fallback when the extension cannot be imported


def test_fallback_warns_once_with_the_reason_and_uses_numpy():
    result = run_json(
        BREAK_EXTENSION
        + """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numpy as np
    import fastcnn
    import fastcnn.functional as F
    y = F.conv2d(np.ones((1, 1, 3, 3)), np.ones((1, 1, 2, 2)))
    p, i = F.max_pool2d(np.arange(16.0).reshape(1, 1, 4, 4), 2)
    import fastcnn  # a second import does not warn again
    fastcnn.set_backend("numpy")
    with fastcnn.use_backend("numpy"):
        F.avg_pool2d(np.ones((1, 1, 2, 2)), 2)
try:
    fastcnn.set_backend("cython")
except ImportError as exc:
    set_error = str(exc)
else:
    set_error = None
print(json.dumps({
    "messages": [str(w.message) for w in caught
                 if issubclass(w.category, fastcnn.FastCNNWarning)],
    "categories": [w.category.__name__ for w in caught],
    "backend": fastcnn.get_backend(),
    "available": list(fastcnn.available_backends()),
    "import_error": fastcnn.backend_import_error(),
    "set_error": set_error,
    "y": y.ravel().tolist(),
    "pool": p.ravel().tolist(),
    "idx": i.ravel().tolist(),
}))
"""
    )
    assert len(result["messages"]) == 1, result["messages"]
    assert result["categories"] == ["FastCNNWarning"]
    message = result["messages"][0]
    assert "compiled extension could not be imported" in message
    assert "numpy backend" in message
    assert "fastcnn._kernels._conv" in message  # the reason: which module, and why
    assert "None in sys.modules" in message
    assert result["backend"] == "numpy"
    assert result["available"] == ["numpy"]
    assert "fastcnn._kernels._conv" in result["import_error"]
    assert (
        result["set_error"] is not None
        and "compiled backend is not available" in (result["set_error"])
    )
    assert "fastcnn._kernels._conv" in result["set_error"]
    assert result["y"] == [4.0] * 4
    assert result["pool"] == [5.0, 7.0, 13.0, 15.0]
    assert result["idx"] == [5, 7, 13, 15]


def test_fallback_warning_category_is_a_user_warning():
    assert issubclass(fastcnn.FastCNNWarning, UserWarning)
    proc = run_python(BREAK_EXTENSION + "import fastcnn\n", PYTHONWARNINGS="error")
    assert proc.returncode != 0  # an error filter turns it into an exception, by category
    assert "FastCNNWarning" in proc.stderr


def test_env_var_cython_without_extension_fails_with_the_reason():
    proc = run_python(BREAK_EXTENSION + "import fastcnn\n", FASTCNN_BACKEND="cython")
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr
    assert "FASTCNN_BACKEND=cython" in proc.stderr
    assert "fastcnn._kernels._conv" in proc.stderr


def test_env_var_numpy_without_extension_and_omp_num_threads():
    # the numpy backend can be requested explicitly, and the thread count then comes
    # from OMP_NUM_THREADS since the OpenMP helper module is missing too
    code = (
        "import sys\n"
        "for m in ('_conv', '_pool', '_openmp'):\n"
        "    sys.modules['fastcnn._kernels.' + m] = None\n"
        "import json, warnings\n"
        "warnings.simplefilter('ignore')\n"
        "import fastcnn\n"
        "print(json.dumps([fastcnn.get_backend(), fastcnn.get_num_threads()]))\n"
    )
    assert run_json(code, OMP_NUM_THREADS="3", FASTCNN_BACKEND="numpy") == ["numpy", 3]


# ---------------------------------------------------------------------------------------
# Threads


def test_set_and_get_num_threads(restore_threads):
    default = fastcnn.get_num_threads()
    assert isinstance(default, int) and default >= 1
    fastcnn.set_num_threads(1)
    assert fastcnn.get_num_threads() == 1
    fastcnn.set_num_threads(np.int64(3))
    assert fastcnn.get_num_threads() == 3
    assert type(fastcnn.get_num_threads()) is int
    fastcnn.set_num_threads(None)
    assert fastcnn.get_num_threads() == default


@pytest.mark.parametrize(
    ("value", "error", "pattern"),
    [
        (0, ValueError, r"n must be >= 1, got 0"),
        (-2, ValueError, r"n must be >= 1, got -2"),
        (1.5, TypeError, r"n must be a positive int or None, got float"),
        (2.0, TypeError, r"got float"),
        ("2", TypeError, r"got str"),
        (True, TypeError, r"got bool"),
    ],
)
def test_set_num_threads_rejects_bad_values(value, error, pattern, restore_threads):
    fastcnn.set_num_threads(2)
    with pytest.raises(error, match=pattern):
        fastcnn.set_num_threads(value)
    assert fastcnn.get_num_threads() == 2


def test_set_num_threads_refuses_more_threads_than_the_machine_can_start(restore_threads):
    # 10**6 was accepted, and the next kernel died in GOMP_parallel (libgomp puts one
    # record per thread on the caller's stack). The limit is 8 per logical CPU, at least 256.
    limit = max(256, 8 * (os.cpu_count() or 1))
    fastcnn.set_num_threads(2)
    for n in (limit + 1, 10**6, 2**63):
        with pytest.raises(ValueError, match=rf"n must be <= {limit} .*, got {n}$"):
            fastcnn.set_num_threads(n)
        assert fastcnn.get_num_threads() == 2
    fastcnn.set_num_threads(limit)
    assert fastcnn.get_num_threads() == limit


@needs_compiled
def test_the_thread_limit_is_one_the_kernels_can_run_on():
    result = run_json(
        """
        import json
        import numpy as np
        import fastcnn, fastcnn.functional as F
        from fastcnn import _threads
        fastcnn.set_num_threads(_threads.MAX_THREADS)
        x = np.ones((300, 1, 8, 8), np.float32)
        y = F.conv2d(F.tanh(x), np.ones((2, 1, 3, 3), np.float32))
        print(json.dumps([fastcnn.get_num_threads(), float(y.min()), float(y.max())]))
        """
    )
    t = float(np.tanh(np.float32(1)))
    assert result[0] == max(256, 8 * (os.cpu_count() or 1))
    assert result[1:] == pytest.approx([9 * t, 9 * t], rel=1e-6)


@pytest.mark.parametrize("omp", ["1000000", "2147483647"])
def test_an_absurd_omp_num_threads_is_clamped_with_a_warning(omp):
    # OpenMP accepts any count at start-up; fastcnn's first kernel then crashed.
    result = run_json(
        """
        import json, warnings
        import numpy as np
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import fastcnn, fastcnn.functional as F
            n = fastcnn.get_num_threads()
            y = F.tanh(np.ones(1 << 16, np.float32))
        print(json.dumps({"n": n, "y": float(y.sum()),
                          "warnings": [str(w.message) for w in caught]}))
        """,
        OMP_NUM_THREADS=omp,
    )
    limit = max(256, 8 * (os.cpu_count() or 1))
    if COMPILED and not OPENMP:  # OpenMP's own default (1) is used, OMP_NUM_THREADS unread
        assert result["n"] == 1 and result["warnings"] == []
        return
    assert result["n"] == limit
    assert result["y"] == pytest.approx((1 << 16) * float(np.tanh(np.float32(1))), rel=1e-5)
    assert len(result["warnings"]) == 1, result["warnings"]
    assert re.search(rf"OMP_NUM_THREADS={omp} .* {limit} threads", result["warnings"][0])


def _thread_problem(dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4, 9, 8)).astype(dtype)  # odd batch: uneven split
    w = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    return x, w, b


def _all_ops(x, w, b):
    y = F.conv2d(x, w, b, stride=(1, 2), padding=1, groups=2)
    gx, gw, gb = F.conv2d_backward(y, x, w, stride=(1, 2), padding=1, groups=2)
    p, idx = F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True)
    gp = F.max_pool2d_backward(p, idx, x.shape)
    a = F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)
    ga = F.avg_pool2d_backward(a, x.shape, 3, stride=2, padding=1, ceil_mode=True)
    return {"y": y, "gx": gx, "gw": gw, "gb": gb, "p": p, "idx": idx, "gp": gp, "a": a, "ga": ga}


@needs_compiled
def test_results_identical_at_one_and_two_threads(backend, dtype, restore_threads):
    x, w, b = _thread_problem(dtype)
    fastcnn.set_num_threads(1)
    one = _all_ops(x, w, b)
    fastcnn.set_num_threads(2)
    two = _all_ops(x, w, b)
    two_again = _all_ops(x, w, b)
    fastcnn.set_num_threads(7)  # more threads than cores and than some batch splits
    seven = _all_ops(x, w, b)
    for key in one:
        # per-sample and per-plane results do not depend on how the batch is split
        if key in ("gw", "gb"):
            # the weight/bias gradients sum per-thread partials: same up to rounding
            np.testing.assert_allclose(two[key], one[key], **tol(dtype))
            np.testing.assert_allclose(seven[key], one[key], **tol(dtype))
        else:
            np.testing.assert_array_equal(two[key], one[key], err_msg=key)
            np.testing.assert_array_equal(seven[key], one[key], err_msg=key)
        # and for a given thread count the result is deterministic
        np.testing.assert_array_equal(two_again[key], two[key], err_msg=key)


@needs_compiled
def test_kernels_restore_the_blas_thread_count(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")
    x, w, b = _thread_problem(np.float64)

    def blas_threads():
        return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
                if lib["user_api"] == "blas"]  # fmt: skip

    before = blas_threads()
    if not before:
        pytest.skip("no BLAS library visible to threadpoolctl")
    for n in (1, 2):
        fastcnn.set_num_threads(n)
        with fastcnn.use_backend("cython"):
            F.conv2d_backward(F.conv2d(x[:n], w, b, groups=2), x[:n], w, groups=2)
        assert blas_threads() == before


@pytest.mark.parametrize("omp", ["1", "2"])
def test_omp_num_threads_is_honoured(omp):
    if omp != "1" and not OPENMP:
        pytest.skip("extension built without OpenMP: always one thread")
    result = run_json(
        """
        import json
        import numpy as np
        import fastcnn, fastcnn.functional as F
        n = fastcnn.get_num_threads()
        y = F.conv2d(np.ones((3, 1, 4, 4)), np.ones((2, 1, 3, 3)), padding=1)
        fastcnn.set_num_threads(2)
        print(json.dumps({"default": n, "override": fastcnn.get_num_threads(),
                          "corner": float(y[2, 1, 0, 0]), "centre": float(y[0, 0, 1, 1])}))
        """,
        OMP_NUM_THREADS=omp,
    )
    assert result == {"default": int(omp), "override": 2, "corner": 4.0, "centre": 9.0}


# ---------------------------------------------------------------------------------------
# The selection is per thread and per context: use_backend scopes only its own


def _other(name: str) -> str:
    return "numpy" if name == "cython" else "cython"


def _impl(name: str):
    return _backend._compiled if name == "cython" else _backend._reference_module()


def _in_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def _wait(event: threading.Event) -> None:
    assert event.wait(30), "the other thread did not get there in 30 s"


@needs_compiled
@pytest.mark.parametrize("default", ["cython", "numpy"])
def test_interleaved_use_backend_exits_leave_the_default(default, restore_backend):
    # A enters, B enters, A exits, B exits. With one process-wide selection B saved A's
    # backend as "previous" and restored it last, leaving the process on it for good.
    fastcnn.set_backend(default)
    block = _other(default)
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with fastcnn.use_backend(block):
            a_in.set()
            _wait(b_in)
        seen["a after"] = fastcnn.get_backend()
        a_out.set()

    def b():
        _wait(a_in)
        with fastcnn.use_backend(block):
            b_in.set()
            _wait(a_out)
            seen["b inside, a gone"] = (fastcnn.get_backend(), _backend.current())
        seen["b after"] = fastcnn.get_backend()

    threads = [_in_thread(a), _in_thread(b)]
    for thread in threads:
        thread.join(60)
    assert seen == {
        "a after": default,
        "b inside, a gone": (block, _impl(block)),
        "b after": default,
    }
    assert fastcnn.get_backend() == default
    assert _backend.current() is _impl(default)


@needs_compiled
@pytest.mark.parametrize("default", ["cython", "numpy"])
def test_a_thread_outside_any_block_keeps_the_default(default, restore_backend, monkeypatch):
    fastcnn.set_backend(default)
    block = _other(default)
    inside, checked = threading.Event(), threading.Event()
    calls = []
    for name in ("cython", "numpy"):
        impl = _impl(name)
        original = impl.avg_pool2d_forward

        def spy(*args, _name=name, _original=original):
            calls.append((threading.current_thread().name, _name))
            return _original(*args)

        monkeypatch.setattr(impl, "avg_pool2d_forward", spy)

    def in_block():
        with fastcnn.use_backend(block):
            inside.set()
            _wait(checked)
            F.avg_pool2d(np.ones((1, 1, 2, 2)), 2)

    worker = _in_thread(in_block)
    _wait(inside)
    try:
        assert fastcnn.get_backend() == default
        F.avg_pool2d(np.ones((1, 1, 2, 2)), 2)
    finally:
        checked.set()
        worker.join(60)
    assert calls == [("MainThread", default), (worker.name, block)]


@needs_compiled
def test_a_copied_context_carries_the_block_into_other_threads(restore_backend):
    # Threads start in a context of their own (the default); copy_context().run is the
    # way to hand a block's backend to a pool's tasks.
    fastcnn.set_backend("cython")
    with fastcnn.use_backend("numpy"), ThreadPoolExecutor(max_workers=2) as pool:
        plain = pool.submit(fastcnn.get_backend).result()
        copied = pool.submit(contextvars.copy_context().run, fastcnn.get_backend).result()
    assert (plain, copied) == ("cython", "numpy")


@needs_compiled
def test_asyncio_tasks_each_keep_their_own_backend(restore_backend):
    fastcnn.set_backend("cython")

    async def in_block(inside, done):
        with fastcnn.use_backend("numpy"):
            inside.set()
            await done.wait()
            return fastcnn.get_backend(), _backend.current()

    async def main():
        inside, done = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(in_block(inside, done))
        await inside.wait()
        outside = fastcnn.get_backend(), _backend.current()
        done.set()
        return outside, await task

    outside, inside = asyncio.run(main())
    assert outside == ("cython", _backend._compiled)
    assert inside == ("numpy", _backend._reference_module())
    assert fastcnn.get_backend() == "cython"


@needs_compiled
def test_set_backend_inside_a_block_switches_it_and_sets_the_default(restore_backend):
    # set_backend sets the process default and, inside a use_backend block, the block's
    # backend too (the caller sees what it set); leaving the block returns the thread to
    # what it had before it: an outer block's backend, else the new default.
    fastcnn.set_backend("cython")
    seen = []
    with fastcnn.use_backend("cython"):
        with fastcnn.use_backend("cython"):
            fastcnn.set_backend("numpy")
            seen.append(fastcnn.get_backend())
            seen.append(_in_thread_result(fastcnn.get_backend))
        seen.append(fastcnn.get_backend())  # the outer block's backend
    seen.append(fastcnn.get_backend())  # the new default
    assert seen == ["numpy", "numpy", "cython", "numpy"]


def _in_thread_result(fn):
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def test_an_unbuilt_source_tree_is_named_with_advice_that_helps(tmp_path):
    """Python started in a checkout's root imports the sources, whose kernels are not
    built there: reinstalling cannot help, so the warning says what does."""
    import shutil

    package = Path(__file__).resolve().parents[1] / "fastcnn"  # the checkout's sources
    if not any(package.glob("_kernels/*.pyx")):
        pytest.skip(f"no source checkout beside the tests (looked for {package})")
    tree = tmp_path / "checkout"
    shutil.copytree(package, tree / "fastcnn", ignore=shutil.ignore_patterns("*.so", "*.pyd"))
    (tree / "setup.py").write_text("# the checkout's build script\n")
    env = {k: v for k, v in os.environ.items() if k not in ("FASTCNN_BACKEND", "PYTHONPATH")}
    proc = subprocess.run(
        [sys.executable, "-W", "always", "-c", "import fastcnn; print(fastcnn.get_backend())"],
        cwd=tree,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "numpy"
    assert f"source tree in {tree}" in proc.stderr
    assert "pip install -e ." in proc.stderr and "--force-reinstall" not in proc.stderr
