"""The targets the benchmark suite scores: read from ``targets.json``, evaluated on results.

Each target in ``targets.json`` names a metric (one of :data:`METRICS`), the result it
reads, a threshold and the reason it exists. :func:`evaluate_targets` turns them into
PASS, FAIL or SKIP (not measured in this run) with the measured value. Targets are
reported, not enforced, unless ``--fail-on-target``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.report import find

TARGETS_FILE = Path(__file__).resolve().with_name("targets.json")

Measured = tuple[float | None, str]  # the value (None: not measured) and a note


def _speedup(results: dict[str, Any], spec: dict[str, Any]) -> Measured:
    """The ``vs`` implementation's time over fastcnn's in one case and pass."""
    entry = find(results, spec["case"], spec.get("pass"))
    if entry is None:
        return None, "not run"
    if entry["impls"].get("fastcnn", {}).get("status") == "wrong":
        return 0.0, "fastcnn's results are wrong"
    other = spec["vs"]
    ratio = entry.get("speedup", {}).get(other)
    if ratio is not None:
        return ratio, ""
    result = entry["impls"].get(other, {})
    return None, f"{other}: " + result.get("reason", result.get("status", "not run"))


def _pct_of_matmul(results: dict[str, Any], spec: dict[str, Any]) -> Measured:
    """fastcnn's GFLOP/s in one case as a percentage of the matrix-product reference."""
    entry = find(results, spec["case"], spec.get("pass"))
    reference = results.get("matmul", {}).get("reference", "not measured")
    return None if entry is None else entry.get("pct_of_matmul"), f"matmul reference: {reference}"


def _memory_ratio(results: dict[str, Any], spec: dict[str, Any]) -> Measured:
    """PyTorch's training-step RSS increase over fastcnn's (inf when fastcnn's is 0)."""
    memory = find(results, spec["case"]) or {"impls": {}}
    fast_mb = memory["impls"].get("fastcnn", {}).get("rss_delta_mb")
    torch_mb = memory["impls"].get("torch", {}).get("rss_delta_mb")
    if fast_mb is None or torch_mb is None:
        return None, ""
    ratio = torch_mb / fast_mb if fast_mb > 0 else math.inf
    return ratio, f"fastcnn {fast_mb:.1f} MB, PyTorch {torch_mb:.1f} MB"


def _scratch_bounded(results: dict[str, Any], spec: dict[str, Any]) -> Measured:
    """1 when the conv scratch at N=64 is within 1.5x that at N=16 plus 16 MB, else 0."""
    scratch = find(results, spec["case"])
    if scratch is None or not all(r.get("status") == "ok" for r in scratch["runs"].values()):
        return None, ""
    small, big = scratch["runs"]["16"]["scratch_mb"], scratch["runs"]["64"]["scratch_mb"]
    # Per-batch scratch would grow by ~4x from N=16 to N=64; allow noise, not growth.
    bounded = big <= 1.5 * max(small, 0.0) + 16.0
    return (1.0 if bounded else 0.0), f"scratch {small:.1f} MB at N=16, {big:.1f} MB at N=64"


def _import_seconds(results: dict[str, Any], spec: dict[str, Any]) -> Measured:
    """Seconds of ``import fastcnn`` in a fresh interpreter, the interpreter's own aside."""
    imported = find(results, spec["case"])
    return None if imported is None else imported["seconds"], ""


def _thread_scaling(results: dict[str, Any], spec: dict[str, Any]) -> Measured:
    """The training step's speed at ``--threads`` over its speed at one thread."""
    one = find(results, spec["case"])
    if one is None:
        return None, "run with --single-thread-too (and --threads >= 2)"
    scaling = one.get("scaling")
    if not scaling:
        return None, ""
    return scaling["speedup"], "interleaved: " + scaling["method"]


METRICS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Measured]] = {
    "speedup": _speedup,
    "pct_of_matmul": _pct_of_matmul,
    "memory_ratio": _memory_ratio,
    "scratch_bounded": _scratch_bounded,
    "import_seconds": _import_seconds,
    "thread_scaling": _thread_scaling,
}
UNITS = ("x", "%", "s", "bool")


def load_targets(path: str | Path = TARGETS_FILE) -> list[dict[str, Any]]:
    """The targets of ``path``, checked: each has a known metric and unit, and a reason."""
    targets: list[dict[str, Any]] = json.loads(Path(path).read_text(encoding="utf-8"))["targets"]
    for spec in targets:
        missing = {"name", "metric", "case", "threshold", "reason"} - set(spec)
        if missing:
            raise ValueError(f"{path}: target {spec.get('name')!r} lacks {sorted(missing)}")
        if spec["metric"] not in METRICS:
            raise ValueError(
                f"{path}: target {spec['name']!r} has an unknown metric {spec['metric']!r}; "
                f"the metrics are {', '.join(METRICS)}"
            )
        if spec.get("unit", "x") not in UNITS:
            raise ValueError(f"{path}: target {spec['name']!r}: unit must be one of {UNITS}")
    return targets


def evaluate_targets(
    results: dict[str, Any], targets: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Score each target on a results dict: PASS, FAIL or SKIP, with the measured value.

    ``targets`` defaults to those of ``targets.json``.
    """
    threads = results.get("settings", {}).get("threads")
    scored = []
    for spec in load_targets() if targets is None else targets:
        measured, note = METRICS[spec["metric"]](results, spec)
        required, higher = spec["threshold"], spec.get("higher_is_better", True)
        if measured is None:
            status = "SKIP"
        elif higher:
            status = "PASS" if measured >= required else "FAIL"
        else:
            status = "PASS" if measured <= required else "FAIL"
        scored.append({
            "target": spec["name"].format(threads=threads), "required": required,
            "measured": measured, "unit": spec.get("unit", "x"),
            "higher_is_better": higher, "status": status, "note": note,
        })  # fmt: skip
    return scored
