#!/usr/bin/env python
"""The benchmark chart: ``python benchmarks/plot.py [RESULTS.json] [-o CHART.png]``.

Grouped bars, on a log scale, of the median time per call of every conv, pooling and
LeNet-5 case and implementation, with fastcnn's speedup over a reference above each
group. ``benchmarks/run.py`` draws it into ``results/latest.png`` after each run; this
script redraws it from a saved ``latest.json``. Needs matplotlib (``pip install
matplotlib``); it draws on a :class:`matplotlib.figure.Figure` of its own, never through
pyplot, so it works headless.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent

# Colours of the implementations; any other takes one of the spare colours.
IMPL_COLORS = {"fastcnn": "#1f77b4", "numpy": "#ff7f0e", "loops": "#7f7f7f", "torch": "#d62728"}
SPARE_COLORS = ("#9467bd", "#2ca02c", "#8c564b", "#e377c2", "#bcbd22", "#17becf")
CHART_GROUPS = ("conv", "pool", "model")


def load_results(results: Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    """The results dict itself, or read from the path of its JSON file; checked."""
    if isinstance(results, str | os.PathLike):
        path = results
        with open(path, encoding="utf-8") as file:
            try:
                results = json.load(file)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{os.fspath(path)!r} is not JSON: {exc}") from None
    if not isinstance(results, Mapping):
        raise TypeError(
            "results must be the benchmark results dict or the path of its JSON file, "
            f"got {type(results).__name__}"
        )
    if not isinstance(results.get("results"), list):
        raise ValueError(
            "results does not look like fastcnn benchmark results: it has no 'results' "
            "list (see benchmarks/README.md, 'JSON layout')"
        )
    return results


def chart_entries(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The timed per-call cases (conv, pool, model) with at least one measured time."""
    return [
        entry
        for entry in results["results"]
        if entry.get("group") in CHART_GROUPS
        and any(
            r.get("status") == "ok" and r.get("median_ms") is not None
            for r in entry.get("impls", {}).values()
        )
    ]


def _median(entry: Mapping[str, Any], impl: str) -> float:
    timing = entry["impls"].get(impl, {})
    if timing.get("status") != "ok" or timing.get("median_ms") is None:
        return math.nan
    return float(timing["median_ms"])


def _chosen(
    labels: Mapping[str, str],
    entries: list[dict[str, Any]],
    impls: Sequence[str] | None,
    speedup: str | Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    """The implementations to draw and the speedup references, checked against the results."""
    timed = [impl for impl in labels if any(not math.isnan(_median(e, impl)) for e in entries)]
    if impls is None:
        drawn = timed
    else:
        drawn = [impls] if isinstance(impls, str) else list(impls)
        unknown = [impl for impl in drawn if impl not in timed]
        if unknown or not drawn:
            raise ValueError(f"impls: unknown or never timed {unknown}; the results time {timed}")
    if speedup is None:
        return drawn, []
    references = [speedup] if isinstance(speedup, str) else list(speedup)
    unknown = [ref for ref in references if ref not in labels or ref == "fastcnn"]
    if unknown:
        raise ValueError(
            f"speedup: cannot compare fastcnn with {unknown}; choose from "
            f"{[impl for impl in labels if impl != 'fastcnn']}"
        )
    return drawn, references


def _annotate_speedups(
    ax: Axes,
    entries: list[dict[str, Any]],
    impls: list[str],
    references: list[str],
    colors: Mapping[str, str],
) -> None:
    """Above each group, one ``"3.3x"`` line per reference, stacked upwards."""
    for i, entry in enumerate(entries):
        heights = [_median(entry, impl) for impl in impls]
        if all(math.isnan(h) for h in heights):
            continue
        ratios = [entry.get("speedup", {}).get(ref) for ref in references]
        # Coloured like the reference's bars (black when there is only one, as the title
        # says which it is).
        lines = [(ref, r) for ref, r in zip(references, ratios, strict=True) if r is not None]
        for k, (ref, ratio) in enumerate(lines):
            ax.annotate(
                f"{ratio:.1f}x",
                (i, np.nanmax(heights)),
                textcoords="offset points",
                xytext=(0, 3 + 9 * k),
                ha="center",
                fontsize=7,
                color="black" if len(references) == 1 else colors[ref],
            )


def _draw_bars(
    ax: Axes,
    entries: list[dict[str, Any]],
    impls: list[str],
    labels: Mapping[str, str],
    colors: Mapping[str, str],
) -> None:
    """One group of bars per case and pass, one bar per implementation, on a log scale."""
    width, x = 0.8 / len(impls), np.arange(len(entries))
    for j, impl in enumerate(impls):
        heights = [_median(entry, impl) for entry in entries]
        ax.bar(
            x + (j - (len(impls) - 1) / 2) * width, heights, width, label=labels[impl],
            color=colors[impl], hatch="//" if impl == "loops" else None,
        )  # fmt: skip
    ticks = [
        f"{e['case'] if e['group'] == 'pool' else e.get('label', e['case'])}\n{e.get('pass', '')}"
        for e in entries
    ]
    ax.set_xticks(x, ticks, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("median time per call, ms (log scale)")


def _title(results: Mapping[str, Any], labels: Mapping[str, str], references: list[str]) -> str:
    cpu = results.get("machine", {}).get("cpu", {}).get("model", "unknown CPU")
    title = f"fastcnn benchmark: {cpu}, {results.get('settings', {}).get('threads', '?')} threads"
    if len(references) == 1:
        title += f"; numbers above bars: {labels[references[0]]} time / fastcnn time"
    elif references:
        title += "; numbers above bars: time of the implementation of that colour / fastcnn time"
    return title


def plot_benchmark(
    results: Mapping[str, Any] | str | os.PathLike[str],
    *,
    impls: Sequence[str] | None = None,
    speedup: str | Sequence[str] | None = "torch",
    path: str | os.PathLike[str] | None = None,
    dpi: float = 100,
) -> Figure:
    """Grouped bars of the median time per call of every case and implementation.

    Parameters
    ----------
    results : dict, str or path-like
        What ``python benchmarks/run.py`` measured: its results dict, or the path of the
        ``latest.json`` it writes (layout in ``benchmarks/README.md``). The conv, pool
        and model cases are drawn; the epoch, memory and import cases are not per-call
        times and are left out.
    impls : sequence of str, optional
        Implementations to draw (``"fastcnn"``, ``"numpy"``, ``"loops"``, ``"torch"``),
        in the results' order. Default: every one with at least one measured time.
    speedup : str, sequence of str or None, default 'torch'
        Above each group, that implementation's time over fastcnn's (the results'
        ``speedup`` field; above 1 means fastcnn is faster), e.g. ``"3.3x"``; with
        several, one line each, coloured like that implementation's bars. None: no labels.
    path : str or path-like, optional
        Also save the figure there.
    dpi : float, default 100
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes[0]``: one bar container per implementation (label: its name from the
        results, e.g. ``"PyTorch CPU"``; height: ``median_ms``, NaN where it was not
        timed), in ``impls`` order, on a log y axis; one x tick per case and pass; the
        speedup labels as ``ax.texts``. The title names the CPU and thread count.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    OSError
        If ``results`` is a path that cannot be read.
    TypeError
        If ``results`` is neither a dict nor a path.
    ValueError
        If the file is not JSON, ``results`` has no ``'results'`` list or no timed conv,
        pool or model case, or ``impls`` or ``speedup`` names an implementation the
        results do not hold (or ``speedup`` names fastcnn itself).
    """
    from matplotlib.figure import Figure

    results = load_results(results)
    entries = chart_entries(results)
    if not entries:
        raise ValueError("results holds no timed conv, pool or model case to chart")
    labels = dict(results.get("settings", {}).get("implementations") or {})
    for entry in entries:
        for impl in entry["impls"]:
            labels.setdefault(impl, impl)
    drawn, references = _chosen(labels, entries, impls, speedup)
    fig = Figure(figsize=(max(8.0, 0.6 * len(entries) + 2), 6.0), layout="constrained")
    ax = fig.add_subplot()
    spare = itertools.cycle(SPARE_COLORS)
    colors = {impl: IMPL_COLORS.get(impl) or next(spare) for impl in labels}
    _draw_bars(ax, entries, drawn, labels, colors)
    _annotate_speedups(ax, entries, drawn, references, colors)
    ax.set_title(_title(results, labels, references), fontsize=9)
    if references:
        # Room above the tallest bars for the labels: a share of the log range per line.
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * (high / low) ** (0.04 * len(references)))
    try:
        fig.legend(loc="outside lower center", ncol=len(drawn), fontsize=8)
    except ValueError:  # matplotlib < 3.7 has no "outside" legends
        ax.legend(fontsize=8)
    ax.grid(axis="y", which="both", alpha=0.3)
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi)
    return fig


def plot(results: dict[str, Any], path: str | os.PathLike[str]) -> Path | None:
    """Write the chart of :func:`plot_benchmark` to ``path``.

    Returns the path written, or None when matplotlib is not installed or no conv, pool
    or model case was timed.
    """
    if not chart_entries(results):
        return None
    try:
        plot_benchmark(results, path=path, dpi=120)
    except ImportError:
        return None
    return Path(path)


def main(argv: list[str] | None = None) -> int:
    """Redraw the chart of a saved run; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/plot.py",
        description="Draw the benchmark chart of a saved run (latest.json).",
    )
    default = HERE / "results" / "latest.json"
    parser.add_argument("results", nargs="?", default=str(default), help="results JSON file")
    parser.add_argument("-o", "--output", default=None, help="image file (default: next to it)")
    parser.add_argument(
        "--speedup", default="torch", help="comma-separated references for the labels"
    )
    args = parser.parse_args(argv)
    output = args.output or str(Path(args.results).with_suffix(".png"))
    try:
        plot_benchmark(args.results, speedup=args.speedup.split(","), path=output, dpi=120)
    except (OSError, TypeError, ValueError, ImportError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
