"""LeNet-5 cases of the benchmark suite: training step, inference, thread scaling, epoch.

The PyTorch and textbook-loops implementations are built from fastcnn's ``lenet5()``
layer by layer, with a copy of its weights, and cross-checked on logits, loss, every
parameter gradient and the inference output before anything is timed.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.harness import (
    BLOCK_WARMUP_CALLS,
    IMPL_LABELS,
    IMPLS,
    INTERLEAVE_ROUNDS,
    MODEL_TOLERANCE,
    Context,
    add_speedups,
    fastcnn_threads,
    impl_backend,
    interleave_note,
    limit_threads,
    max_rel_error,
    measure,
    measure_interleaved,
    scale_to_batch,
)
from benchmarks.loops import LoopsNet

LENET_TRAIN_BATCH = 64
LENET_INFER_BATCH = 256
EPOCH_IMAGES = 60_000
LEARNING_RATE = 0.01


def fastcnn_lenet() -> tuple[Any, str]:
    """Fastcnn's LeNet-5 for 28x28 input (falls back to the same stack built from layers)."""
    try:
        from fastcnn.models import lenet5

        try:
            model, source = lenet5(input_size=28, random_state=0), "lenet5(random_state=0)"
        except TypeError:  # an older signature
            model, source = lenet5(), "lenet5()"
        if model.output_shape((1, 28, 28)) != (10,):  # pragma: no cover - defensive
            raise ValueError(f"lenet5() does not map (1, 28, 28) to (10,): {model!r}")
        return model, f"fastcnn.models.{source}"
    except (ImportError, AttributeError):
        from fastcnn import Sequential
        from fastcnn.layers import AvgPool2D, Conv2D, Dense, Flatten, Tanh

        model = Sequential(
            Conv2D(1, 6, 5, padding=2, rng=0), Tanh(), AvgPool2D(2),
            Conv2D(6, 16, 5, rng=1), Tanh(), AvgPool2D(2), Flatten(),
            Dense(400, 120, rng=2), Tanh(), Dense(120, 84, rng=3), Tanh(), Dense(84, 10, rng=4),
        )  # fmt: skip
        return model, "LeNet-5 built by the benchmark (fastcnn.models.lenet5 not available)"


def torch_twin(model, torch):
    """An ``nn.Sequential`` with the same layers and a copy of the same weights."""
    nn = torch.nn
    modules = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            module = nn.Conv2d(
                layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                layer.padding, layer.dilation, layer.groups, bias=layer.use_bias,
            )  # fmt: skip
        elif kind == "Dense":
            module = nn.Linear(layer.in_features, layer.out_features, bias=layer.use_bias)
        elif kind == "AvgPool2D":
            module = nn.AvgPool2d(
                layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                layer.count_include_pad, layer.divisor_override,
            )  # fmt: skip
        elif kind == "MaxPool2D":
            module = nn.MaxPool2d(
                layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                ceil_mode=layer.ceil_mode,
            )  # fmt: skip
        elif kind in ("Tanh", "ReLU", "Sigmoid", "Flatten"):
            module = getattr(nn, kind)()
        elif kind == "LeakyReLU":
            module = nn.LeakyReLU(layer.negative_slope)
        elif kind == "Dropout":
            module = nn.Dropout(layer.p)
        else:
            raise NotImplementedError(f"no PyTorch twin for layer {layer!r}")
        modules.append(module)
    twin = nn.Sequential(*modules)
    with torch.no_grad():
        for layer, module in zip(model.layers, modules, strict=True):
            for name, value in layer.params.items():
                getattr(module, name).copy_(torch.from_numpy(value))
    return twin


def lenet_data(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic MNIST-shaped data: pixels in [0, 1), labels 0-9."""
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


def fastcnn_train_step(model, x, y) -> Callable[[], float]:
    """One SGD training step of ``model`` on ``(x, y)``, as a callable returning the loss."""
    # The public pieces of Sequential.train_step without its per-batch data checks, so the
    # step times the same work as PyTorch's loop below.
    from fastcnn.losses import softmax_cross_entropy
    from fastcnn.optim import SGD

    params = model.parameters()
    optimizer = SGD(lr=LEARNING_RATE)
    optimizer.bind(params)

    def step() -> float:
        out = model.forward(x, training=True)
        loss, grad = softmax_cross_entropy(out, y)
        model.backward(grad, input_grad=False)
        optimizer.step(params)
        return loss

    return step


def torch_train_step(twin, torch, x, y) -> Callable[[], Any]:
    """The usual PyTorch training step: zero_grad, forward, cross_entropy, backward, step."""
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    optimizer = torch.optim.SGD(twin.parameters(), lr=LEARNING_RATE)
    cross_entropy = torch.nn.functional.cross_entropy

    def step() -> Any:  # the loss, a torch tensor
        optimizer.zero_grad()
        loss = cross_entropy(twin(tx), ty)
        loss.backward()
        optimizer.step()
        return loss

    return step


def check_lenet(model, twin, loops, torch, x, y, x_infer, ctx: Context) -> dict[str, float]:
    """Check logits, loss and every gradient of each implementation; returns the errors."""
    import fastcnn
    from fastcnn.losses import softmax_cross_entropy

    def fastcnn_outputs(xb, yb, backend):
        with fastcnn.use_backend(backend):
            logits = model.forward(xb, training=True)
            loss, grad = softmax_cross_entropy(logits, yb)
            model.backward(grad, input_grad=False)
            grads = [g.copy() for _, g in model.parameters()]
            return [logits, loss, *grads, model.forward(x_infer)]

    reference = fastcnn_outputs(x, y, "numpy")
    errors: dict[str, float] = {}
    if "fastcnn" not in ctx.unavailable:
        errors["fastcnn"] = max_rel_error(fastcnn_outputs(x, y, "cython"), reference)
    errors["numpy"] = 0.0  # the reference for this check
    if twin is not None:
        twin.zero_grad()
        logits = twin(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))
        loss.backward()
        with torch.no_grad():
            infer = twin(torch.from_numpy(x_infer))
        outputs = [logits, loss, *(p.grad for p in twin.parameters()), infer]
        errors["torch"] = max_rel_error(outputs, reference)
    if loops is not None:
        small = fastcnn_outputs(x[:1], y[:1], "numpy")
        logits = loops.forward(x[:1])
        loss, grads = loops.train_step(x[:1], y[:1], lr=0.0)
        flat = [
            g for i in sorted(grads) for name, g in grads[i].items() if name in loops.layers[i][2]
        ]
        outputs = [logits, loss, *flat, loops.forward(x_infer[:1])]
        errors["loops"] = max_rel_error(outputs, [*small[:-1], reference[-1][:1]])
    return errors


def run_lenet(ctx: Context) -> list[dict[str, Any]]:
    """LeNet-5 training step (batch 64) and inference (batch 256), every implementation."""
    setup = _LenetSetup(ctx)
    entries = []
    for case, pass_, batch, fns in (
        ("lenet5_train", f"train b{LENET_TRAIN_BATCH}", LENET_TRAIN_BATCH, setup.train_fns),
        ("lenet5_infer", f"infer b{LENET_INFER_BATCH}", LENET_INFER_BATCH, setup.infer_fns),
    ):
        if case in ctx.selected:
            ctx.progress(f"lenet5 {pass_}")
            entries.append(_time_lenet_case(ctx, setup, case, pass_, batch, fns))
    if "lenet5_threads1" in ctx.selected and ctx.single_thread and ctx.settings.threads > 1:
        ctx.progress("lenet5 train at 1 thread")
        entries.append(lenet_one_thread(ctx, setup.train_fns, setup.reasons, setup.errors))
    return entries


class _LenetSetup:
    """The model, its twins, their data, checks and step functions, built once per run."""

    def __init__(self, ctx: Context) -> None:
        torch = ctx.torch
        rng = np.random.default_rng(2)
        model, source = fastcnn_lenet()
        x, y = lenet_data(rng, LENET_TRAIN_BATCH)
        x_infer, _ = lenet_data(rng, LENET_INFER_BATCH)
        ctx.results["lenet5_model"] = {"source": source, "layers": [repr(la) for la in model]}
        twins: dict[str, Any] = {}
        self.reasons = dict(ctx.unavailable)
        for impl, build in (
            ("torch", lambda: torch_twin(model, torch)),
            ("loops", lambda: LoopsNet(model)),
        ):
            if impl in self.reasons:
                continue
            try:
                twins[impl] = build()
            except NotImplementedError as exc:
                self.reasons[impl] = str(exc)
        self.errors = check_lenet(
            model, twins.get("torch"), twins.get("loops"), torch, x, y, x_infer, ctx
        )
        self.train_fns: dict[str, Callable[[], object]] = {}
        self.infer_fns: dict[str, Callable[[], object]] = {}
        for impl in ("fastcnn", "numpy"):
            if impl not in self.reasons:
                self.train_fns[impl] = fastcnn_train_step(model, x, y)
                self.infer_fns[impl] = lambda: model.forward(x_infer)
        if "loops" in twins:
            net = twins["loops"]
            self.train_fns["loops"] = lambda: net.train_step(x[:1], y[:1], LEARNING_RATE)
            self.infer_fns["loops"] = lambda: net.forward(x_infer[:1])
        if "torch" in twins:
            twin = twins["torch"]
            self.train_fns["torch"] = torch_train_step(twin, torch, x, y)

            def torch_infer():
                with torch.inference_mode():
                    return twin(torch.from_numpy(x_infer))

            self.infer_fns["torch"] = torch_infer


def _time_lenet_case(ctx: Context, setup: _LenetSetup, case, pass_, batch, fns) -> dict[str, Any]:
    """Time the implementations of one LeNet-5 case that passed the cross-check."""
    settings, reasons, errors = ctx.settings, setup.reasons, setup.errors
    entry: dict[str, Any] = {
        "case": case, "group": "model", "label": "lenet5", "pass": pass_,
        "shape": "LeNet-5, 1x28x28 input", "batch": batch, "unit": "ms",
        "reference": "numpy backend (float32 cross-check of logits, loss, all grads)",
        "timing": (
            f"one block of {settings.budget:.3g} s per implementation (--quick)"
            if settings.quick else interleave_note(settings)
        ),
        "impls": {},
    }  # fmt: skip
    outcome: dict[str, dict[str, Any]] = {}
    timed: dict[str, Callable[[], object]] = {}
    for impl in IMPLS:
        if impl in reasons or impl not in fns:
            outcome[impl] = {"status": "skipped", "reason": reasons.get(impl, "not available")}
            continue
        err = errors.get(impl, math.inf)
        if err > MODEL_TOLERANCE:
            outcome[impl] = {"status": "wrong", "max_rel_error": err}
            ctx.errors.append(
                f"{case}: {IMPL_LABELS[impl]} disagrees with the reference "
                f"(max relative error {err:.3g} > {MODEL_TOLERANCE:g}); not timed"
            )
            continue
        timed[impl] = fns[impl]
    for impl, timing in _time_lenet_impls(settings, timed).items():
        measured_batch = 1 if impl == "loops" else batch
        result = {"status": "ok", "max_rel_error": errors[impl], **timing}
        result["measured_batch"] = measured_batch
        if measured_batch != batch:
            scale_to_batch(result, batch / measured_batch)
        result["images_per_s"] = batch / (result["median_ms"] / 1e3)
        outcome[impl] = result
    entry["impls"] = {impl: outcome[impl] for impl in IMPLS}  # in table order
    add_speedups(entry)
    return entry


def _time_lenet_impls(settings, timed: dict[str, Callable[[], object]]) -> dict[str, Any]:
    """Textbook loops in one block of their own, the others in alternating rounds."""
    timings: dict[str, dict[str, Any]] = {}
    loops_step = timed.pop("loops", None)
    if loops_step is not None:  # seconds per call, scaled to the batch by the caller
        with impl_backend("loops"):
            timings["loops"] = measure(loops_step, settings.loops_budget, 1, warmup_calls=0)
    # --quick keeps one short block per implementation (a smoke test, not a measurement).
    rounds = 1 if settings.quick else INTERLEAVE_ROUNDS
    block_warmup = 0 if settings.quick else BLOCK_WARMUP_CALLS
    timings |= measure_interleaved(
        timed, settings.budget, settings.min_repeats, settings.warmup,
        settings.warmup_calls, rounds=rounds, contexts=impl_backend,
        block_warmup_calls=block_warmup,
    )  # fmt: skip
    return timings


def lenet_one_thread(ctx: Context, train_fns, reasons, errors) -> dict[str, Any]:
    """The training step again with every library limited to one thread."""
    settings = ctx.settings
    entry: dict[str, Any] = {
        "case": "lenet5_threads1", "group": "model", "label": "lenet5",
        "pass": f"train b{LENET_TRAIN_BATCH} @1 thread", "shape": "LeNet-5, 1x28x28 input",
        "batch": LENET_TRAIN_BATCH, "unit": "ms", "threads": 1, "impls": {},
    }  # fmt: skip
    with limit_threads(1, ctx.torch):
        for impl in ("fastcnn", "numpy", "torch"):
            if impl in reasons or impl not in train_fns or errors.get(impl, 0) > MODEL_TOLERANCE:
                entry["impls"][impl] = {"status": "skipped", "reason": reasons.get(impl, "")}
                continue
            with impl_backend(impl):
                if impl == "fastcnn":
                    timing, entry["scaling"] = interleaved_scaling(ctx, train_fns[impl])
                else:
                    timing = measure(
                        train_fns[impl], settings.budget, settings.min_repeats,
                        settings.warmup, settings.warmup_calls,
                    )  # fmt: skip
            timing["images_per_s"] = LENET_TRAIN_BATCH / (timing["median_ms"] / 1e3)
            entry["impls"][impl] = {"status": "ok", **timing}
    entry["impls"]["loops"] = {"status": "skipped", "reason": "single-threaded anyway"}
    add_speedups(entry)
    return entry


SCALING_ROUNDS = 8


def interleaved_scaling(ctx: Context, step: Callable[[], object]):
    """Fastcnn's training step at 1 thread and at ``--threads``, in alternating blocks.

    A shared machine drifts over seconds; two medians taken seconds apart can differ by
    more than the thread count changes them. Alternating short blocks gives both counts
    the same conditions. Only fastcnn's count changes between blocks: its kernels pin
    BLAS to one thread anyway, and switching the BLAS libraries' and PyTorch's pools
    every block would wake their workers, which then spin on the second core. Returns
    the one-thread timing and the scaling record.
    """
    settings = ctx.settings
    # N threads, then 1, then N again, ...: strictly alternating blocks, no initial warm-up
    # (the blocks' own calls are the warm-up).
    timings = measure_interleaved(
        {settings.threads: step, 1: step}, settings.budget, settings.min_repeats,
        warmup=0.0, warmup_calls=0, rounds=SCALING_ROUNDS, contexts=fastcnn_threads,
        block_warmup_calls=max(2, settings.warmup_calls), serpentine=False,
    )  # fmt: skip
    one = timings[1]
    many = timings[settings.threads]["median_ms"]
    block = settings.budget / SCALING_ROUNDS
    scaling = {
        "threads": settings.threads, "rounds": SCALING_ROUNDS,
        "median_ms_1_thread": one["median_ms"], "median_ms_n_threads": many,
        "speedup": one["median_ms"] / many,
        "method": f"{SCALING_ROUNDS} alternating blocks of {block:.3g} s per thread count",
    }  # fmt: skip
    return one, scaling


def run_epoch(ctx: Context, train_entry: dict[str, Any] | None) -> dict[str, Any]:
    """One epoch of 60,000 synthetic images at batch 64: run (fastcnn, torch) or extrapolate."""
    settings = ctx.settings
    entry: dict[str, Any] = {
        "case": "lenet5_epoch", "group": "epoch", "label": "lenet5",
        "pass": f"epoch {EPOCH_IMAGES // 1000}k b{LENET_TRAIN_BATCH}",
        "shape": f"{EPOCH_IMAGES} synthetic 1x28x28 images", "batch": LENET_TRAIN_BATCH,
        "unit": "s", "impls": {},
    }  # fmt: skip
    train_impls = (train_entry or {}).get("impls", {})
    data = None
    for impl in IMPLS:
        measured = train_impls.get(impl, {})
        predicted = (
            EPOCH_IMAGES / measured["images_per_s"] if measured.get("status") == "ok" else None
        )
        run = (
            not settings.quick
            and impl in ("fastcnn", "torch")
            and impl not in ctx.unavailable
            and predicted is not None
            and predicted <= 90
        )
        if not run:
            if predicted is None:
                entry["impls"][impl] = {"status": "skipped", "reason": "no training-step timing"}
            else:
                entry["impls"][impl] = {
                    "status": "ok", "seconds": predicted, "extrapolated": True,
                    "note": "60,000 / measured training-step images/s",
                }  # fmt: skip
            continue
        ctx.progress(f"lenet5 epoch ({IMPL_LABELS[impl]})")
        if data is None:
            data = lenet_data(np.random.default_rng(3), EPOCH_IMAGES)
        gc.collect()
        if impl == "fastcnn":
            seconds, how = _fastcnn_epoch(*data)
        else:
            seconds, how = _torch_epoch(ctx.torch, *data)
        entry["impls"][impl] = {
            "status": "ok", "seconds": seconds, "extrapolated": False, "how": how,
            "images_per_s": EPOCH_IMAGES / seconds,
        }  # fmt: skip
    fast = entry["impls"].get("fastcnn", {})
    entry["speedup"] = {
        impl: r["seconds"] / fast["seconds"]
        for impl, r in entry["impls"].items()
        if impl != "fastcnn" and r.get("status") == "ok" and fast.get("status") == "ok"
    }
    return entry


def _fastcnn_epoch(X: np.ndarray, Y: np.ndarray) -> tuple[float, str]:
    """Seconds of one ``Sequential.fit`` epoch on the compiled backend, and how it ran."""
    import fastcnn
    from fastcnn.optim import SGD

    model, _ = fastcnn_lenet()
    with fastcnn.use_backend("cython"):
        start = time.perf_counter()
        model.fit(
            X, Y, epochs=1, batch_size=LENET_TRAIN_BATCH, optimizer=SGD(lr=LEARNING_RATE),
            shuffle=True, random_state=0, verbose=0,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    return seconds, "Sequential.fit(epochs=1, batch_size=64, SGD, shuffle=True, verbose=0)"


def _torch_epoch(torch, X: np.ndarray, Y: np.ndarray) -> tuple[float, str]:
    """Seconds of the usual shuffled PyTorch training loop over one epoch, and how it ran."""
    twin = torch_twin(fastcnn_lenet()[0], torch)
    tX, tY = torch.from_numpy(X), torch.from_numpy(Y)
    optimizer = torch.optim.SGD(twin.parameters(), lr=LEARNING_RATE)
    start = time.perf_counter()
    order = torch.randperm(EPOCH_IMAGES, generator=torch.Generator().manual_seed(0))
    for lo in range(0, EPOCH_IMAGES, LENET_TRAIN_BATCH):
        idx = order[lo : lo + LENET_TRAIN_BATCH]
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(twin(tX[idx]), tY[idx])
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    return seconds, "shuffled index batches, zero_grad/forward/cross_entropy/backward/step"
