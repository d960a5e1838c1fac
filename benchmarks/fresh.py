"""Measurements in a fresh interpreter: training-step memory, conv scratch, import time.

Memory is measured where it can be compared honestly: the peak RSS increase over a few
training steps in a fresh interpreter per implementation (``python benchmarks/run.py
--memory-worker IMPL``; RSS also sees PyTorch's and the compiled kernels' own
allocations), plus tracemalloc's peak for the numpy-side implementations.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import IMPL_LABELS, Context, blas_limits
from benchmarks.lenet import (
    LENET_TRAIN_BATCH,
    fastcnn_lenet,
    fastcnn_train_step,
    lenet_data,
    torch_train_step,
    torch_twin,
)

# The worker prints its result on a line of its own, after this prefix.
RESULT_PREFIX = "FASTCNN_BENCH_RESULT "
RUN_SCRIPT = Path(__file__).resolve().with_name("run.py")


def proc_status_kb(field: str) -> int | None:
    """A field of ``/proc/self/status`` in kB (None without ``/proc``)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def memory_worker(kind: str, threads: int, steps: int) -> dict[str, Any]:
    """Run inside a fresh interpreter: peak RSS (and tracemalloc) of one workload."""
    import fastcnn

    fastcnn.set_num_threads(threads)
    torch: Any = None
    if kind == "torch":
        import torch as torch_module

        torch = torch_module
        torch.set_num_threads(threads)
    with blas_limits(threads):
        if kind.startswith("conv:"):
            return conv_scratch_worker(int(kind.split(":")[1]))
        model, _ = fastcnn_lenet()
        x, y = lenet_data(np.random.default_rng(4), LENET_TRAIN_BATCH)
        if kind == "torch":
            step = torch_train_step(torch_twin(model, torch), torch, x, y)
        else:
            fastcnn.set_backend("cython" if kind == "fastcnn" else "numpy")
            step = fastcnn_train_step(model, x, y)
        # The first step also pays each library's one-time set-up (fastcnn loads scipy's
        # BLAS and starts its thread team there, PyTorch its allocator pools): recorded
        # apart, as the cold step, so the steady-state figure is the step's own memory.
        gc.collect()
        cold_baseline = proc_status_kb("VmRSS")
        resettable = reset_peak_rss()
        step()
        cold_peak = proc_status_kb("VmHWM")
        gc.collect()
        baseline = proc_status_kb("VmRSS")
        resettable = reset_peak_rss() and resettable
        for _ in range(steps):
            step()
        peak = proc_status_kb("VmHWM")
        result: dict[str, Any] = {"kind": kind, "steps": steps}
        if (  # None where /proc is absent
            baseline is not None
            and peak is not None
            and cold_baseline is not None
            and cold_peak is not None
        ):
            result.update(
                baseline_rss_mb=baseline / 1024,
                peak_rss_mb=peak / 1024,
                rss_delta_mb=(peak - baseline) / 1024,
                cold_step_rss_delta_mb=(cold_peak - cold_baseline) / 1024,
                peak_reset=resettable,
            )
        if kind != "torch":
            import tracemalloc

            gc.collect()
            tracemalloc.start()
            for _ in range(min(3, steps)):
                step()
            current, peak_traced = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            result["tracemalloc_peak_mb"] = peak_traced / 2**20
        return result


def conv_scratch_worker(n: int) -> dict[str, Any]:
    """Peak RSS of one ``large`` conv forward+backward beyond its inputs and outputs."""
    from fastcnn import functional as F

    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, 64, 56, 56), dtype=np.float32)
    w = rng.standard_normal((64, 64, 3, 3), dtype=np.float32)
    gy = rng.standard_normal((n, 64, 56, 56), dtype=np.float32)
    F.conv2d(x[:1], w, padding=1)  # start the thread pool before the baseline
    gc.collect()
    baseline = proc_status_kb("VmRSS")
    resettable = reset_peak_rss()
    y = F.conv2d(x, w, padding=1)
    grads = F.conv2d_backward(gy, x, w, padding=1)
    peak = proc_status_kb("VmHWM")
    outputs = (y.nbytes + sum(g.nbytes for g in grads if g is not None)) / 2**20
    if baseline is None or peak is None:
        return {"kind": f"conv:{n}", "status": "unavailable"}
    delta = (peak - baseline) / 1024
    return {
        "kind": f"conv:{n}", "batch": n, "rss_delta_mb": delta, "outputs_mb": outputs,
        "scratch_mb": delta - outputs, "peak_reset": resettable,
    }  # fmt: skip


def subprocess_env() -> dict[str, str]:
    """The parent's environment, with the directory this fastcnn came from on the path."""
    import fastcnn

    env = dict(os.environ)
    root = str(Path(fastcnn.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_worker(kind: str, threads: int, steps: int) -> dict[str, Any]:
    """Run :func:`memory_worker` in a fresh interpreter and return its result."""
    cmd = [
        sys.executable, str(RUN_SCRIPT), "--memory-worker", kind,
        "--threads", str(threads), "--memory-steps", str(steps),
    ]  # fmt: skip
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=subprocess_env(), cwd=tempfile.gettempdir(),
        timeout=600,
    )  # fmt: skip
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {"status": "ok", **json.loads(line[len(RESULT_PREFIX) :])}
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"status": "error", "reason": f"exit {proc.returncode}: {' | '.join(tail)}"}


def run_memory(ctx: Context) -> dict[str, Any]:
    """Peak memory of the LeNet-5 training step, one fresh interpreter per implementation."""
    entry: dict[str, Any] = {
        "case": "lenet5_memory", "group": "memory", "label": "lenet5",
        "pass": f"train b{LENET_TRAIN_BATCH} peak memory",
        "method": (
            "in a fresh interpreter per implementation, after one warm-up step (the cold "
            "step, one-time library set-up included, is reported apart): peak RSS (VmHWM, "
            f"reset after the warm-up) during {ctx.settings.memory_steps} training steps "
            "minus RSS before them; tracemalloc peak over up to 3 further steps for the "
            "numpy-side implementations"
        ),
        "impls": {},
    }  # fmt: skip
    for impl in ("fastcnn", "numpy", "torch"):
        if impl in ctx.unavailable:
            entry["impls"][impl] = {"status": "skipped", "reason": ctx.unavailable[impl]}
            continue
        if impl != "fastcnn" and ctx.settings.quick:  # each costs a fresh import
            entry["impls"][impl] = {"status": "skipped", "reason": "--quick"}
            continue
        ctx.progress(f"lenet5 memory ({IMPL_LABELS[impl]}, fresh interpreter)")
        entry["impls"][impl] = run_worker(impl, ctx.settings.threads, ctx.settings.memory_steps)
    entry["impls"]["loops"] = {"status": "skipped", "reason": "not measured"}
    return entry


def run_conv_scratch(ctx: Context) -> dict[str, Any]:
    """The compiled conv's scratch memory at N=16 and N=64, in fresh interpreters."""
    ctx.progress("conv scratch memory at N=16 and N=64 (fresh interpreters)")
    runs = {str(n): run_worker(f"conv:{n}", ctx.settings.threads, 1) for n in (16, 64)}
    return {
        "case": "conv_scratch", "group": "memory", "label": "conv large",
        "pass": "fwd+bwd scratch",
        "method": (
            "compiled backend, conv 'large' (64->64, 56x56, k3 pad1) forward+backward: peak "
            "RSS increase minus the bytes of the outputs and gradients, at N=16 and N=64"
        ),
        "runs": runs,
    }  # fmt: skip


def run_import(ctx: Context) -> dict[str, Any]:
    """Median wall time of ``python -c "import fastcnn"`` minus that of ``python -c pass``."""
    env, cwd = subprocess_env(), tempfile.gettempdir()

    def wall(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, check=True)
        return time.perf_counter() - start

    ctx.progress(f"import fastcnn ({ctx.settings.import_runs} fresh interpreters)")
    wall("import fastcnn")  # compiles any stale .pyc, warms the file cache
    imports, bases = [], []
    for _ in range(ctx.settings.import_runs):
        imports.append(wall("import fastcnn"))
        bases.append(wall("pass"))
    seconds = statistics.median(imports) - statistics.median(bases)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fastcnn"],
        env=env, cwd=cwd, capture_output=True, text=True,
    )  # fmt: skip
    return {
        "case": "import", "group": "import", "seconds": seconds,
        "import_samples_s": imports, "baseline_samples_s": bases,
        "heaviest_imports_s": heaviest_imports(proc.stderr),
    }  # fmt: skip


def heaviest_imports(importtime: str, top: int = 6) -> dict[str, float]:
    """Modules that fastcnn's own modules import directly, by cumulative seconds.

    Parses ``python -X importtime`` output, where a module's line follows those of the
    modules it imported, indented one level deeper.
    """
    entries = []
    for line in importtime.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            entries.append((depth, name.strip(), int(parts[1]) / 1e6))
    heaviest = []
    ancestors: list[str] = []
    for depth, name, seconds in reversed(entries):  # parents come before children here
        del ancestors[depth:]
        parent = ancestors[-1] if ancestors else None
        ours = parent is not None and (parent == "fastcnn" or parent.startswith("fastcnn."))
        if ours and not name.startswith("fastcnn"):
            heaviest.append((seconds, name))
        ancestors.append(name)
    heaviest.sort(reverse=True)
    return {name: round(seconds, 4) for seconds, name in heaviest[:top]}
