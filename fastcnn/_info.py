"""``fastcnn.show_config()`` and ``python -m fastcnn info``: what this installation runs on."""

from __future__ import annotations

import argparse
import platform
import sys
import time
from typing import Any

from fastcnn import _backend, _threads


def config() -> dict[str, Any]:
    """Collect the version, backend, threads, OpenMP, BLAS and build flags in a dict."""
    import fastcnn

    info: dict[str, Any] = {
        "fastcnn": fastcnn.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "backend": _backend.get_backend(),
        "available_backends": list(_backend.available_backends()),
        "num_threads": _threads.get_num_threads(),
    }
    if "cython" not in _backend.available_backends():
        info["compiled_extension"] = f"not available ({_backend.backend_import_error()})"
    else:
        info["compiled_extension"] = "available"
        from fastcnn._kernels import _conv, _openmp

        info["openmp"] = bool(_openmp.openmp_enabled())
        info["build"] = _openmp.build_info()

        info["direct_conv_simd"] = _conv.direct_simd()
    try:
        import scipy.linalg.cython_blas  # noqa: F401  (the BLAS the kernels call; lazy otherwise)
        from threadpoolctl import threadpool_info

        info["blas"] = [
            f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('threading_layer')}, "
            f"{lib.get('num_threads')} threads) {lib.get('filepath')}"
            for lib in threadpool_info()
            if lib.get("user_api") == "blas"
        ]
    except ImportError:
        info["blas"] = ["unknown (threadpoolctl not installed)"]
    return info


def show_config() -> None:
    """Print the fastcnn version, backend, thread count, OpenMP, BLAS and build flags."""
    for key, value in config().items():
        if isinstance(value, list):
            value = "\n    ".join([""] + [str(v) for v in value]) if value else "none"
        print(f"{key:>20}: {value}")


def _time_lenet_conv(repeats: int = 20) -> dict[str, float]:
    """Time one LeNet-sized conv2d forward on each backend: median milliseconds."""
    import numpy as np

    from fastcnn import functional as F

    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 32, 32), dtype=np.float32)
    weight = rng.standard_normal((6, 1, 5, 5), dtype=np.float32)
    results = {}
    for name in _backend.available_backends():
        with _backend.use_backend(name):
            F.conv2d(x, weight)  # warm-up
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                F.conv2d(x, weight)
                times.append(time.perf_counter() - start)
        results[name] = 1e3 * float(np.median(times))
    return results


def main(argv: list[str] | None = None) -> int:
    """Run ``fastcnn info``: print the configuration and time one conv2d; returns 0."""
    parser = argparse.ArgumentParser(
        prog="fastcnn info", description="Show the configuration and time one conv2d."
    )
    parser.add_argument("--no-timing", action="store_true", help="skip the conv2d timing")
    args = parser.parse_args(argv)
    show_config()
    if not args.no_timing:
        print("\nconv2d forward, N=64 1->6 32x32 k5 float32 (median of 20):")
        timings = _time_lenet_conv()
        for name, ms in timings.items():
            print(f"{name:>20}: {ms:8.3f} ms")
        if "cython" in timings and "numpy" in timings:
            print(f"{'speedup':>20}: {timings['numpy'] / timings['cython']:8.1f}x")
    return 0
