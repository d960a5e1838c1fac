#!/usr/bin/env python
"""Run fastcnn's benchmark suite: ``python benchmarks/run.py [options]``.

Times, in one process and at one thread count, side by side:

* ``fastcnn``: the compiled backend (``fastcnn.use_backend("cython")``);
* ``numpy``: fastcnn's pure-numpy reference backend (``use_backend("numpy")``);
* ``loops``: textbook code, one Python loop iteration per output pixel as beginners write
  it, timed on a small batch (one sample) and scaled linearly to the case's batch size;
  always labelled "scaled";
* ``torch``: PyTorch CPU, when it imports (``--no-torch`` leaves it out).

Cases: conv2d and 2x2 pooling (max with indices, avg), forward and forward+backward
(``cases.py``); LeNet-5 training step (batch 64) and inference (batch 256) in images/s and
one MNIST-sized epoch of synthetic data (``lenet.py``); the float32 matrix-product GFLOP/s
of the machine as the compute-efficiency reference; peak memory of the training step and
convolution scratch, and ``import fastcnn`` time, in fresh interpreters (``fresh.py``).
Then the targets of ``targets.json`` are scored (PASS/FAIL with the measured value) and
the results are printed and written to ``results/``: ``latest.json`` (every sample),
``latest.md`` and ``latest.png`` (``report.py``, ``plot.py``). ``benchmarks/README.md``
describes the options, the cases and the columns.

The suite measures the fastcnn that ``import fastcnn`` finds: an installed one first, else
the checkout this script sits in.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if __package__ in (None, ""):  # run as a script: make the `benchmarks` package importable
    # Appended, not prepended, so that an installed fastcnn still comes before the
    # checkout's sources.
    sys.path.append(str(HERE.parent))

import numpy as np  # noqa: E402

from benchmarks import fresh, lenet  # noqa: E402
from benchmarks.cases import (  # noqa: E402
    CONV_SHAPES,
    POOL_SHAPES,
    bench_matmul,
    op_cases,
    run_op_case,
)
from benchmarks.harness import (  # noqa: E402
    IMPL_LABELS,
    IMPLS,
    INTERLEAVE_ROUNDS,
    MODEL_TOLERANCE,
    OP_TOLERANCE,
    Context,
    Settings,
    limit_threads,
    machine_info,
    run_timing_note,
)
from benchmarks.plot import plot  # noqa: E402
from benchmarks.report import (  # noqa: E402
    find,
    format_markdown,
    format_text,
    json_safe,
    write_atomic,
)
from benchmarks.targets import evaluate_targets  # noqa: E402

COMMAND = "python benchmarks/run.py"
PROG = "benchmarks/run.py"

# Everything a run can measure, in order; ``--cases`` selects among these ids.
CASE_IDS = (
    *(f"conv_{name}" for name, *_ in CONV_SHAPES),
    *(f"{kind}pool_{n}x{c}x{hw}" for kind in ("max", "avg") for n, c, hw in POOL_SHAPES),
    "lenet5_train",
    "lenet5_infer",
    "lenet5_threads1",
    "lenet5_epoch",
    "lenet5_memory",
    "conv_scratch",
    "import",
)
QUICK_CASES = (
    "conv_lenet_c1", "conv_digits", "maxpool_64x6x28", "avgpool_64x6x28",
    "lenet5_train", "lenet5_infer", "lenet5_epoch", "lenet5_memory", "import",
)  # fmt: skip


def select(patterns: str | None, quick: bool) -> set[str]:
    """The case ids that ``--cases`` selects (default: all, or the quick subset)."""
    if not patterns:
        return set(QUICK_CASES if quick else CASE_IDS)
    selected = set()
    for token in (t.strip() for t in patterns.split(",")):
        if not token:
            continue
        if any(ch in token for ch in "*?["):
            matched = {c for c in CASE_IDS if fnmatch.fnmatch(c, token)}
        else:
            matched = {c for c in CASE_IDS if token in c}
        if not matched:
            raise ValueError(
                f"--cases: {token!r} matches no case; the cases are: {', '.join(CASE_IDS)}"
            )
        selected |= matched
    return selected


def parser() -> argparse.ArgumentParser:
    """The options of ``benchmarks/run.py``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Time fastcnn's compiled backend against its numpy backend, textbook loops and "
            "PyTorch CPU (when installed) at one thread count; check every result first; "
            "score the targets of benchmarks/targets.json; write latest.json, latest.md "
            "and latest.png."
        ),
    )
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for fastcnn, BLAS and torch (default: "
                        "fastcnn.get_num_threads())")  # fmt: skip
    parser.add_argument(
        "--quick", action="store_true", help="tiny budgets and a subset of cases (for smoke tests)"
    )
    parser.add_argument(
        "--cases",
        default=None,
        help="comma-separated substrings or globs of case ids (see --list)",
    )
    parser.add_argument("--list", action="store_true", help="list the case ids and exit")
    parser.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    parser.add_argument("--impls", default=None,
                        help="comma-separated implementations to time, among "
                        f"{', '.join(IMPLS)} (default: all available)")  # fmt: skip
    parser.add_argument(
        "--out",
        default=str(HERE / "results"),
        help="directory for latest.json/.md/.png (default: %(default)s)",
    )
    parser.add_argument(
        "--plot",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write latest.png (default: when matplotlib imports)",
    )
    parser.add_argument("--single-thread-too", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="repeat the LeNet-5 training step at 1 thread to report the "
                        "scaling (default: on, except with --quick)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timed calls per implementation and case "
                        "(default 0.5, --quick 0.02)")  # fmt: skip
    parser.add_argument(
        "--fail-on-target", action="store_true", help="exit with status 2 when a target FAILs"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--memory-worker", help=argparse.SUPPRESS)
    parser.add_argument("--memory-steps", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark suite; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``); see ``--help``.

    Returns
    -------
    status : int
        0 when every implementation's results were right (targets are reported, not
        enforced, unless ``--fail-on-target``); 1 when an implementation was wrong or
        raised; 2 for bad arguments, or a failed target with ``--fail-on-target``.
    """
    options = parser()
    args = options.parse_args(argv)
    import fastcnn

    threads = args.threads if args.threads is not None else fastcnn.get_num_threads()
    if threads < 1:
        options.error(f"--threads must be >= 1, got {threads}")
    if args.memory_worker:
        result = fresh.memory_worker(args.memory_worker, threads, args.memory_steps or 10)
        print(fresh.RESULT_PREFIX + json.dumps(json_safe(result)), flush=True)
        return 0
    if args.list:
        print("\n".join(CASE_IDS))
        return 0
    try:
        selected = select(args.cases, args.quick)
        unavailable, torch = _implementations(args)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    ctx = Context(_settings(args, threads), selected, torch, unavailable)
    ctx.single_thread = (
        args.single_thread_too if args.single_thread_too is not None else not args.quick
    )
    results = _run(ctx, argv)
    _write(results, Path(args.out), args.plot)
    if ctx.errors:
        return 1
    if args.fail_on_target and any(t["status"] == "FAIL" for t in results["targets"]):
        return 2
    return 0


def _settings(args: argparse.Namespace, threads: int) -> Settings:
    """The run's budgets: tiny ones under ``--quick``."""
    quick = args.quick
    return Settings(
        threads=threads,
        quick=quick,
        budget=args.budget if args.budget is not None else (0.02 if quick else 0.5),
        warmup=0.005 if quick else 0.1,
        min_repeats=1 if quick else 3,
        warmup_calls=0 if quick else 1,
        loops_budget=0.0 if quick else 1.0,
        import_runs=3 if quick else 7,
        memory_steps=2 if quick else 10,
        matmul_size=512 if quick else 2048,
        verbose=not args.quiet,
    )


def _implementations(args: argparse.Namespace) -> tuple[dict[str, str], Any]:
    """Why each implementation left out is (``unavailable``), and the torch module or None."""
    import fastcnn

    unavailable: dict[str, str] = {}
    if args.impls:
        wanted = {i.strip() for i in args.impls.split(",") if i.strip()}
        unknown = wanted - set(IMPLS)
        if unknown:
            raise ValueError(
                f"--impls: unknown {sorted(unknown)}; choose among {', '.join(IMPLS)}"
            )
        unavailable.update({i: "left out by --impls" for i in IMPLS if i not in wanted})
    if "cython" not in fastcnn.available_backends():
        unavailable["fastcnn"] = f"compiled backend unavailable: {fastcnn.backend_import_error()}"
    torch: Any = None
    if args.no_torch:
        unavailable["torch"] = "--no-torch"
    elif "torch" not in unavailable:
        try:
            import torch as torch_module

            torch = torch_module
        except ImportError as exc:
            unavailable["torch"] = f"not installed ({exc})"
    return unavailable, torch


def _run(ctx: Context, argv: list[str] | None) -> dict[str, Any]:
    """Every selected case, then the targets: the results dict of the run."""
    settings, start = ctx.settings, time.perf_counter()
    results = ctx.results
    results["schema"] = 1
    results["created"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    arguments = shlex.join(argv if argv is not None else sys.argv[1:])
    results["command"] = f"{COMMAND} {arguments}".strip()
    results["settings"] = {
        "threads": settings.threads, "quick": settings.quick, "budget_s": settings.budget,
        "min_repeats": settings.min_repeats, "cases": sorted(ctx.selected),
        "single_thread_too": ctx.single_thread, "op_tolerance": OP_TOLERANCE,
        "model_tolerance": MODEL_TOLERANCE, "implementations": IMPL_LABELS,
        "unavailable": ctx.unavailable, "interleave_rounds": INTERLEAVE_ROUNDS,
        "timing": run_timing_note(settings),
    }  # fmt: skip
    results["results"] = []
    with limit_threads(settings.threads, ctx.torch):
        _run_in_process(ctx)
    _run_fresh(ctx)
    for entry in results["results"]:
        for impl, r in entry.get("impls", {}).items():
            if r.get("status") == "error":
                ctx.errors.append(f"{entry['case']}: {IMPL_LABELS[impl]}: {r.get('reason')}")
    if hasattr(os, "getloadavg"):
        results["machine"]["load_average_at_end"] = list(os.getloadavg())
    results["targets"] = evaluate_targets(results)
    results["errors"] = ctx.errors
    results["wall_time_s"] = time.perf_counter() - start
    return results


def _run_in_process(ctx: Context) -> None:
    """The machine, the matmul reference, the op cases and LeNet-5, in this process."""
    settings, selected, results = ctx.settings, ctx.selected, ctx.results
    results["machine"] = machine_info(ctx.torch, settings.threads)
    ctx.progress(f"matmul reference ({settings.matmul_size}x{settings.matmul_size} float32)")
    results["matmul"] = bench_matmul(settings)
    for case in op_cases(selected, np.random.default_rng(0)):
        for pass_ in case.passes:
            ctx.progress(f"{case.id} {pass_} ({case.shape})")
            results["results"].append(run_op_case(case, pass_, ctx))
        case.forget_oracle()
    if selected & {"lenet5_train", "lenet5_infer", "lenet5_threads1", "lenet5_epoch"}:
        try:
            results["results"] += lenet.run_lenet(ctx)
        except Exception as exc:
            ctx.errors.append(f"LeNet-5 benchmark raised {type(exc).__name__}: {exc}")
    if "lenet5_epoch" in selected:
        try:
            results["results"].append(lenet.run_epoch(ctx, find(results, "lenet5_train")))
        except Exception as exc:
            ctx.errors.append(f"LeNet-5 epoch raised {type(exc).__name__}: {exc}")


def _run_fresh(ctx: Context) -> None:
    """The memory and import cases, each in fresh interpreters."""
    for case_id, run in (
        ("lenet5_memory", fresh.run_memory),
        ("conv_scratch", fresh.run_conv_scratch),
        ("import", fresh.run_import),
    ):
        if case_id not in ctx.selected:
            continue
        if case_id == "conv_scratch" and "fastcnn" in ctx.unavailable:
            continue
        try:
            ctx.results["results"].append(run(ctx))
        except (OSError, subprocess.SubprocessError) as exc:
            ctx.errors.append(f"{case_id} raised {type(exc).__name__}: {exc}")


def _write(results: dict[str, Any], out_dir: Path, want_plot: bool | None) -> None:
    """Write latest.json, latest.md and (when asked or possible) latest.png; print the text."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png = None
    if want_plot is None or want_plot:
        png = plot(results, out_dir / "latest.png")
        if png is None and want_plot:
            print(f"{PROG}: matplotlib is not installed; no chart", file=sys.stderr)
    results["files"] = {
        "json": str(out_dir / "latest.json"), "markdown": str(out_dir / "latest.md"),
        "chart": None if png is None else str(png),
    }  # fmt: skip
    text = format_text(results)
    write_atomic(out_dir / "latest.json", json.dumps(json_safe(results), indent=1) + "\n")
    write_atomic(out_dir / "latest.md", format_markdown(results))
    print(text, end="")
    print(f"wrote {', '.join(p for p in results['files'].values() if p)}")


if __name__ == "__main__":
    sys.exit(main())
