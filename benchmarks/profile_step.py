#!/usr/bin/env python
"""Where a LeNet-5 training step spends its time, layer by layer, at 1 and N threads.

``python benchmarks/profile_step.py [--threads N] [--steps S] [--batch B]``

The step of ``benchmarks/run.py`` (forward, softmax cross-entropy, backward without the
first layer's input gradient, SGD), with each layer's forward and backward timed inside
the step, where caches and the OpenMP team are as training leaves them: a layer timed
alone runs warmer than it does between its neighbours. The two thread counts take turns
in rounds of S/8 steps, so a drifting machine affects both alike. The table gives each
part's median at 1 and N threads and its speedup; parts that hardly speed up are the
serial share that bounds the thread scaling of the whole step.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

try:
    import fastcnn
except ImportError:  # a source checkout that was never installed: use it in place
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import fastcnn

from fastcnn.losses import softmax_cross_entropy
from fastcnn.models import lenet5
from fastcnn.optim import SGD

ROUNDS = 8


def _timed_step(layers, params, optimizer, x, y, record) -> None:
    """One training step; each part's seconds appended to ``record[(part, index)]``."""
    clock = time.perf_counter
    h = x
    for i, layer in enumerate(layers):
        start = clock()
        h = layer.forward(h, training=True)
        record[("forward", i)].append(clock() - start)
    start = clock()
    _, grad = softmax_cross_entropy(h, y)
    record[("loss", -1)].append(clock() - start)
    for i in range(len(layers) - 1, -1, -1):
        start = clock()
        grad = layers[i].backward(grad)
        record[("backward", i)].append(clock() - start)
    start = clock()
    optimizer.step(params)
    record[("sgd", -1)].append(clock() - start)


def profile(threads: int, steps: int, batch: int) -> tuple[list[str], dict, dict]:
    """Per-part samples at 1 and ``threads`` threads: (layer names, {1: ..., N: ...}, totals)."""
    rng = np.random.default_rng(0)
    model = lenet5()
    layers = list(model)
    layers[0].needs_input_grad = False  # as Sequential.fit trains: no gradient for the data
    params = model.parameters()
    optimizer = SGD(lr=0.01)
    optimizer.bind(params)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    counts = (1, threads) if threads > 1 else (1,)
    parts: dict[int, dict] = {n: defaultdict(list) for n in counts}
    totals: dict[int, list[float]] = {n: [] for n in counts}
    scratch: dict = defaultdict(list)
    per_round = max(1, steps // ROUNDS)
    for _ in range(ROUNDS):
        for n in counts:
            fastcnn.set_num_threads(n)
            for _ in range(3):  # untimed: the team wakes, the caches refill
                _timed_step(layers, params, optimizer, x, y, scratch)
            for _ in range(per_round):
                start = time.perf_counter()
                _timed_step(layers, params, optimizer, x, y, parts[n])
                totals[n].append(time.perf_counter() - start)
    fastcnn.set_num_threads(None)
    names = [repr(layer).split("(")[0] for layer in layers]
    return names, parts, totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=fastcnn.get_num_threads())
    parser.add_argument("--steps", type=int, default=400, help="timed steps per thread count")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.steps < 1 or args.batch < 1:
        parser.error("--threads, --steps and --batch must be >= 1")
    if fastcnn.get_backend() != "cython":
        print(f"note: the {fastcnn.get_backend()} backend is active, not the compiled one")
    names, parts, totals = profile(args.threads, args.steps, args.batch)
    counts = sorted(parts)
    n = counts[-1]

    def median_us(samples) -> float:
        return float(np.median(samples)) * 1e6

    header = f"{'part':<28} {'1 thread us':>12}"
    if n > 1:
        header += f" {f'{n} threads us':>13} {'speedup':>8}"
    print(f"LeNet-5 training step, batch {args.batch}, medians of {args.steps} steps")
    print(header)
    print("-" * len(header))
    for key in parts[1]:
        kind, i = key
        label = f"{kind} {names[i]} {i}" if i >= 0 else kind
        line = f"{label:<28} {median_us(parts[1][key]):>12.1f}"
        if n > 1:
            many = median_us(parts[n][key])
            line += f" {many:>13.1f} {median_us(parts[1][key]) / many:>7.2f}x"
        print(line)
    one = median_us(totals[1])
    line = f"{'whole step':<28} {one:>12.1f}"
    if n > 1:
        line += f" {median_us(totals[n]):>13.1f} {one / median_us(totals[n]):>7.2f}x"
    print("-" * len(header))
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
