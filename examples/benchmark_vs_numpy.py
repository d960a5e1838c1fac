"""
Compiled kernels against plain numpy
====================================

How much faster are the compiled kernels than plain numpy? Time them and see.

fastcnn has two backends behind the same ops: compiled Cython kernels (the default) and a
pure-numpy reference written to be obviously right. This times a training step's worth of
work, forward and backward, for a few convolutions and a max pooling on both backends
(median of ``--repeats`` runs after a warm-up run), prints the speedup and checks that
both backends computed the same numbers::

    python examples/benchmark_vs_numpy.py              # a few seconds
    python examples/benchmark_vs_numpy.py --quick      # smaller shapes, for a smoke test
    OMP_NUM_THREADS=1 python examples/benchmark_vs_numpy.py   # single-threaded kernels

For the full suite (more cases, PyTorch, textbook loops, speed targets, a chart) run
``python benchmarks/run.py`` from a checkout. Exit status: 0 when
the backends agree, 1 when they do not or the compiled backend is not available.
"""

import argparse
import statistics
import sys
import time

import numpy as np

import fastcnn
import fastcnn.functional as F

# Relative to the largest value of each result: float32 sums in a different order (GEMM
# blocks vs numpy's einsum) differ by a few units in the 7th digit, not more.
TOLERANCE = 1e-5


def conv_case(n, c_in, c_out, size, k, padding, rng):
    """conv2d forward and backward on random data: returns a function of no arguments."""
    x = rng.standard_normal((n, c_in, size, size), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in, k, k), dtype=np.float32)
    b = rng.standard_normal(c_out, dtype=np.float32)
    out_size = size + 2 * padding - k + 1
    grad_y = rng.standard_normal((n, c_out, out_size, out_size), dtype=np.float32)

    def step():
        y = F.conv2d(x, w, b, padding=padding)
        grad_x, grad_w, grad_b = F.conv2d_backward(grad_y, x, w, padding=padding)
        return y, grad_x, grad_w, grad_b

    return f"conv N={n} {c_in}->{c_out} {size}x{size} k{k}", step


def maxpool_case(n, c, size, rng):
    """2x2 max pooling forward and backward on random data."""
    x = rng.standard_normal((n, c, size, size), dtype=np.float32)
    grad_y = rng.standard_normal((n, c, size // 2, size // 2), dtype=np.float32)

    def step():
        y, indices = F.max_pool2d(x, 2)
        return y, F.max_pool2d_backward(grad_y, indices, x.shape)

    return f"maxpool 2x2 N={n} C={c} {size}x{size}", step


def median_ms(step, repeats: int) -> float:
    step()  # warm-up: first-touch page faults, BLAS start-up, scratch allocation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    # The median, not the mean: one run slowed down by another process should not count.
    return 1e3 * statistics.median(times)


def max_relative_difference(results_a, results_b) -> float:
    return max(
        float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
        for a, b in zip(results_a, results_b, strict=True)
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Compiled kernels vs the numpy backend.")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per case")
    parser.add_argument("--quick", action="store_true", help="small shapes, for a smoke test")
    args = parser.parse_args(argv)

    if "cython" not in fastcnn.available_backends():
        print(f"the compiled backend is not available: {fastcnn.backend_import_error()}")
        return 1

    rng = np.random.default_rng(0)
    if args.quick:
        cases = [
            conv_case(64, 1, 16, 8, 3, 1, rng),
            conv_case(16, 6, 16, 14, 5, 0, rng),
            maxpool_case(8, 16, 32, rng),
        ]
    else:  # the digits CNN's first layer, LeNet-5's two convs, a mid-sized 3x3 conv
        cases = [
            conv_case(256, 1, 16, 8, 3, 1, rng),
            conv_case(64, 1, 6, 32, 5, 0, rng),
            conv_case(64, 6, 16, 14, 5, 0, rng),
            conv_case(32, 32, 64, 32, 3, 1, rng),
            maxpool_case(32, 64, 32, rng),
        ]

    print(
        f"float32, forward + backward, {fastcnn.get_num_threads()} thread(s), "
        f"median of {args.repeats} runs, in ms"
    )
    header = f"{'case':<32}{'compiled':>10}{'numpy':>10}{'speedup':>10}{'max rel diff':>14}"
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name, step in cases:
        with fastcnn.use_backend("cython"):
            compiled_ms = median_ms(step, args.repeats)
            compiled_results = step()
        with fastcnn.use_backend("numpy"):
            numpy_ms = median_ms(step, args.repeats)
            numpy_results = step()
        diff = max_relative_difference(compiled_results, numpy_results)
        worst = max(worst, diff)
        print(
            f"{name:<32}{compiled_ms:>10.3f}{numpy_ms:>10.3f}"
            f"{numpy_ms / compiled_ms:>9.1f}x{diff:>14.1e}"
        )
    print("-" * len(header))
    if worst > TOLERANCE:
        print(f"results DIFFER: the backends disagree by up to {worst:.1e} (relative)")
        return 1
    print(f"results agree: both backends match within {TOLERANCE:g} (relative)")
    print("the full benchmark suite: python benchmarks/run.py (from a checkout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
