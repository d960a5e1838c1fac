"""The report of a benchmark run: the printed tables, markdown, and the JSON file.

The text and markdown reports share :func:`tables`; ``latest.json`` keeps everything
(layout in ``benchmarks/README.md``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import IMPL_LABELS, IMPLS


def find(results: dict[str, Any], case: str, pass_: str | None = None) -> dict[str, Any] | None:
    """The first result of ``case`` (and ``pass_`` when given), or None."""
    for entry in results.get("results", []):
        if entry.get("case") == case and (pass_ is None or entry.get("pass") == pass_):
            found: dict[str, Any] = entry
            return found
    return None


def fmt_ms(value: float | None) -> str:
    """Milliseconds, with the digits that matter."""
    if value is None:
        return "-"
    if value < 1:
        return f"{value:.3f}"
    if value < 100:
        return f"{value:.3g}" if value < 10 else f"{value:.1f}"
    return f"{value:,.0f}"


def fmt_ratio(value: float | None) -> str:
    """A ratio such as ``2.35x``."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:,.0f}x"


def cell(
    result: dict[str, Any], key: str = "median_ms", fmt: Callable[[Any], str] = fmt_ms
) -> str:
    status = result.get("status")
    if status == "ok":
        text = fmt(result.get(key))
        return text + ("*" if result.get("scaled") or result.get("extrapolated") else "")
    return {"wrong": "WRONG", "error": "ERROR"}.get(str(status), "-")


Table = tuple[str, list[str], list[list[str]]]  # title, header, rows


def tables(results: dict[str, Any]) -> list[Table]:
    """The report as (title, header, rows) tables, shared by the text and markdown output."""
    built = (
        _ops_table(results["results"]),
        _model_table(results["results"]),
        _memory_table(results),
        _targets_table(results.get("targets", [])),
    )
    return [table for table in built if table is not None]


def _ops_table(entries: list[dict[str, Any]]) -> Table | None:
    """Conv and pooling cases: median ms per implementation, ratios, GFLOP/s."""
    ops = [e for e in entries if e["group"] in ("conv", "pool")]
    if not ops:
        return None
    header = [
        "case", "pass", "fastcnn ms", "numpy ms", "loops ms*", "torch ms",
        "vs numpy", "vs loops", "vs torch", "GFLOP/s", "% matmul",
    ]  # fmt: skip
    rows = []
    for e in ops:
        impls, speed = e["impls"], e.get("speedup", {})
        fast = impls.get("fastcnn", {})
        pct = e.get("pct_of_matmul")
        rows.append([
            f"conv {e.get('label')}" if e["group"] == "conv" else e["case"], e["pass"],
            *(cell(impls.get(i, {})) for i in IMPLS),
            *(fmt_ratio(speed.get(i)) for i in ("numpy", "loops", "torch")),
            f"{fast['gflops']:.1f}" if fast.get("gflops") else "-",
            f"{pct:.0f}%" if pct is not None else "-",
        ])  # fmt: skip
    return "Ops (median ms per call; vs X = X's time / fastcnn's)", header, rows


def _model_table(entries: list[dict[str, Any]]) -> Table | None:
    """LeNet-5 cases: images per second (seconds for the epoch) and ratios."""
    model = [e for e in entries if e["group"] in ("model", "epoch")]
    if not model:
        return None
    header = [
        "LeNet-5", "fastcnn", "numpy", "loops*", "torch", "vs numpy", "vs loops", "vs torch",
    ]  # fmt: skip
    rows = []
    for e in model:
        key, fmt = ("seconds", fmt_s) if e["group"] == "epoch" else ("images_per_s", fmt_ips)
        unit = "s" if e["group"] == "epoch" else "img/s"
        speed = e.get("speedup", {})
        rows.append([
            f"{e['pass']} ({unit})", *(cell(e["impls"].get(i, {}), key, fmt) for i in IMPLS),
            *(fmt_ratio(speed.get(i)) for i in ("numpy", "loops", "torch")),
        ])  # fmt: skip
    return "LeNet-5 (images/s, or seconds per epoch)", header, rows


def _memory_table(results: dict[str, Any]) -> Table | None:
    """The training step's memory per implementation, in MB."""
    memory = find(results, "lenet5_memory")
    if memory is None:
        return None
    rows = []
    for impl in ("fastcnn", "numpy", "torch"):
        r = memory["impls"].get(impl, {})
        rows.append([
            IMPL_LABELS[impl],
            f"{r['rss_delta_mb']:.1f}" if "rss_delta_mb" in r else r.get("status", "-"),
            f"{r['cold_step_rss_delta_mb']:.1f}" if "cold_step_rss_delta_mb" in r else "-",
            f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-",
            f"{r['tracemalloc_peak_mb']:.1f}" if "tracemalloc_peak_mb" in r else "-",
        ])  # fmt: skip
    header = [
        "implementation", "RSS delta MB", "first step MB", "peak RSS MB", "tracemalloc MB",
    ]  # fmt: skip
    return "LeNet-5 training-step memory (fresh interpreter each)", header, rows


def _targets_table(targets: list[dict[str, Any]]) -> Table | None:
    """Each target's measured value, requirement, status and note."""
    if not targets:
        return None
    rows = []
    for t in targets:
        measured, unit = t["measured"], t["unit"]
        if measured is None:
            text = "-"
        elif unit == "x":
            text = fmt_ratio(measured)
        elif unit == "%":
            text = f"{measured:.1f}%"
        elif unit == "s":
            text = f"{measured:.3f} s"
        else:
            text = "yes" if measured else "no"
        op = ">=" if t["higher_is_better"] else "<="
        required = {"x": f"{t['required']:g}x", "%": f"{t['required']:g}%",
                    "s": f"{t['required']:g} s", "bool": "yes"}[unit]  # fmt: skip
        rows.append([t["target"], text, f"{op} {required}", t["status"], t["note"]])
    return "Targets", ["target", "measured", "required", "status", "note"], rows


def fmt_ips(value: float | None) -> str:
    """Images per second."""
    return "-" if value is None else f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def fmt_s(value: float | None) -> str:
    """Seconds."""
    return "-" if value is None else f"{value:,.1f}" if value >= 10 else f"{value:.2f}"


def header_lines(results: dict[str, Any]) -> list[str]:
    """The report's header: machine, threads, timing, versions, references, warnings."""
    m = results["machine"]
    cpu, v = m["cpu"], m["versions"]
    blas = ", ".join(
        f"{t['internal_api']} {t['version']} ({t.get('architecture') or '?'})"
        for t in m.get("threadpools", [])
        if t.get("user_api") == "blas"
    )
    env = " ".join(f"{k}={val}" for k, val in m["env"].items()) or "none"
    mm = results.get("matmul", {})
    timing = results["settings"].get("timing")  # absent from results older than the rounds
    lines = [
        f"fastcnn benchmark, {results['created']}",
        f"machine: {cpu.get('model')}, {cpu.get('physical_cores', '?')} cores / "
        f"{cpu.get('logical_cpus')} logical CPUs, {cpu.get('memory_gb', '?')} GB; "
        f"{m['platform']}",
        f"threads: {results['settings']['threads']} (fastcnn, BLAS via threadpoolctl, torch)",
        *([f"timing: {timing}"] if timing else []),
        f"versions: python {v['python']}, numpy {v['numpy']}, scipy {v['scipy']}, "
        f"fastcnn {v['fastcnn']} ({m.get('fastcnn_path', '?')}), "
        f"torch {v['torch'] or 'not used'}",
        f"BLAS: {blas or 'unknown'}; env: {env}",
    ]
    if mm.get("reference_gflops"):
        lines.append(
            f"matmul reference: {mm['reference_gflops']:.1f} GFLOP/s ({mm['reference']}; "
            f"numpy {mm.get('numpy', {}).get('gflops', math.nan):.1f}, scipy "
            f"{mm.get('scipy', {}).get('gflops', math.nan):.1f})"
        )
    imported = find(results, "import")
    if imported is not None:
        heavy = ", ".join(
            f"{k} {s:.2f}s" for k, s in imported.get("heaviest_imports_s", {}).items()
        )
        lines.append(
            f"import fastcnn: {imported['seconds']:.3f} s (heaviest imports it makes: {heavy})"
        )
    scratch = find(results, "conv_scratch")
    if scratch is not None:
        parts = [
            f"N={n}: {r['scratch_mb']:.1f} MB" if r.get("status") == "ok" else f"N={n}: error"
            for n, r in scratch["runs"].items()
        ]
        lines.append("conv large fwd+bwd scratch beyond outputs: " + ", ".join(parts))
    load = m.get("load_average_at_start")
    if load and load[0] > 0.5 * (cpu.get("usable_cpus") or cpu.get("logical_cpus") or 1):
        lines.append(
            f"WARNING: load average {load[0]:.1f} at start, "
            f"{(m.get('load_average_at_end') or [math.nan])[0]:.1f} at end, on "
            f"{cpu.get('usable_cpus') or cpu.get('logical_cpus')} CPUs: other processes "
            "competed for the CPUs, so these timings are unreliable"
        )
    if {"OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"} & set(m["env"]):
        lines.append(
            "note: OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE are set (recorded above, left as they "
            "are); they can slow numpy's own OpenBLAS (numpy backend, Dense layers, matmul)"
        )
    lines.append(f"command: {results['command']}")
    return lines


FOOTNOTE = (
    "* loops: textbook per-output-pixel Python loops timed on 1 sample and scaled linearly "
    "to the batch; epoch values marked * are extrapolated from the training step. "
    "WRONG: disagreed with the oracle, not timed."
)


def left_columns(header: list[str]) -> set[int]:
    """Text columns (left-aligned); numbers are right-aligned."""
    return {0} | {i for i, name in enumerate(header) if name in ("pass", "status", "note")}


def format_text(results: dict[str, Any]) -> str:
    """The printed report: header, tables and targets as aligned plain text."""
    out = [*header_lines(results), ""]
    for title, header, rows in tables(results):
        left = left_columns(header)
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        out.append(title)
        for k, row in enumerate([header, *rows]):
            cells = [
                str(c).ljust(widths[i]) if i in left else str(c).rjust(widths[i])
                for i, c in enumerate(row)
            ]  # fmt: skip
            out.append("  ".join(cells).rstrip())
            if k == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
    out.append(FOOTNOTE)
    counts = {
        s: sum(t["status"] == s for t in results.get("targets", []))
        for s in ("PASS", "FAIL", "SKIP")
    }
    out.append(
        f"targets: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP; "
        f"wall time {results['wall_time_s']:.1f} s"
    )
    for error in results.get("errors", []):
        out.append(f"ERROR: {error}")
    return "\n".join(out) + "\n"


def format_markdown(results: dict[str, Any]) -> str:
    """The same report as markdown, for the README."""
    lines = [f"### {header_lines(results)[0]}", ""]
    lines += [f"- {line}" for line in header_lines(results)[1:-1]]
    lines += [f"- command: `{results['command']}`", ""]
    for title, header, rows in tables(results):
        lines += [f"**{title}**", ""]
        lines.append("| " + " | ".join(header) + " |")
        left = left_columns(header)
        lines.append(
            "|" + "|".join("---" if i in left else "---:" for i in range(len(header))) + "|"
        )
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
        lines.append("")
    lines.append(FOOTNOTE.replace("*", "\\*", 1))
    return "\n".join(lines) + "\n"


def json_safe(value):
    """``value`` with NaN and infinities as None and numpy scalars as Python numbers."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so no reader sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
