"""Pictures of a network: filters, feature maps, learning curves, confusion matrices.

matplotlib is an optional dependency (``pip install 'fastcnn[plot]'``), imported when a
function is called, never by ``import fastcnn.plotting``; a missing matplotlib raises
:class:`ImportError` naming that extra. Every function draws on a
:class:`matplotlib.figure.Figure` of its own, never through ``pyplot``, so it works
headless and leaves matplotlib's global state (backend, current figure) alone. Each
returns that Figure; with ``path=`` it also saves it there (the format follows the file
extension, PNG by default) at ``dpi`` dots per inch. In a notebook, a returned Figure
displays as usual; ``fig.savefig(...)`` writes it in any other format. Wherever a model is
expected, a :class:`fastcnn.Sequential` or a fitted :class:`fastcnn.CNNClassifier` (its
``model_``) is accepted.
"""

from __future__ import annotations

import math
import numbers
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fastcnn._validation import check_int

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage
    from numpy.typing import ArrayLike

    from fastcnn.estimator import CNNClassifier
    from fastcnn.layers import Conv2D
    from fastcnn.model import History, Sequential

__all__ = ["plot_confusion", "plot_feature_maps", "plot_filters", "plot_history"]


_INSTALL_HINT = "fastcnn.plotting needs matplotlib: pip install 'fastcnn[plot]'"
_HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def require_matplotlib() -> type[Figure]:
    """Return matplotlib's Figure class, or raise ImportError naming the ``plot`` extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return Figure


def _finish(fig: Figure, path: str | os.PathLike[str] | None, dpi: float) -> Figure:
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi)
    return fig


def _unfitted_estimator(obj: object) -> bool:
    # An object can only be a CNNClassifier if fastcnn.estimator (and scikit-learn) has
    # been imported, so asking costs no import.
    estimator = sys.modules.get("fastcnn.estimator")
    return estimator is not None and isinstance(obj, estimator.CNNClassifier)


def _as_model(obj: object, name: str) -> Sequential:
    """Get the Sequential behind ``obj``: itself, or a fitted CNNClassifier's ``model_``."""
    from fastcnn.model import Sequential

    if isinstance(obj, Sequential):
        return obj
    model = getattr(obj, "model_", None)
    if isinstance(model, Sequential):
        return model
    if _unfitted_estimator(obj):
        raise ValueError(f"{name} is a CNNClassifier that is not fitted yet; call fit first")
    raise TypeError(
        f"{name} must be a fastcnn.Sequential or a fitted CNNClassifier, got {type(obj).__name__}"
    )


def _layer_index(model: Sequential, layer: object, name: str = "layer") -> int:
    n = len(model.layers)
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise TypeError(f"{name} must be an int index into the model's layers, got {layer!r}")
    if not -n <= int(layer) < n:
        raise ValueError(
            f"{name}={layer} is out of range for a model of {n} layers (valid: {-n}..{n - 1})"
        )
    return int(layer) % n


def _conv_indices(model: Sequential) -> list[int]:
    from fastcnn.layers import Conv2D

    return [i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D)]


def _first_conv(model: Sequential) -> int:
    indices = _conv_indices(model)
    if not indices:
        kinds = ", ".join(type(layer).__name__ for layer in model.layers) or "no layers"
        raise ValueError(f"the model has no Conv2D layer (it has {kinds})")
    return indices[0]


def _grid(n: int, max_cols: int = 8) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _shape_text(shape: Sequence[int]) -> str:
    return str(tuple(int(s) for s in shape))


def _select_conv(layer_or_model: object, layer: int | None) -> tuple[Conv2D, str]:
    """Find the Conv2D to draw, and how to name it in the title."""
    from fastcnn.layers import Conv2D

    if isinstance(layer_or_model, Conv2D):
        if layer is not None:
            raise ValueError(
                f"layer={layer!r} selects a layer of a model, but a Conv2D layer was given"
            )
        return layer_or_model, repr(layer_or_model)
    try:
        model = _as_model(layer_or_model, "layer_or_model")
    except TypeError:
        raise TypeError(
            "layer_or_model must be a fastcnn.layers.Conv2D, a fastcnn.Sequential or a "
            f"fitted CNNClassifier, got {type(layer_or_model).__name__}"
        ) from None
    index = _first_conv(model) if layer is None else _layer_index(model, layer)
    conv = model.layers[index]
    if not isinstance(conv, Conv2D):  # a layer the caller chose (_first_conv finds one)
        raise TypeError(
            f"layer {index} of the model is {conv!r}, not a Conv2D; the "
            f"model's Conv2D layers are at {_conv_indices(model)}"
        )
    return conv, f"layer {index}: {conv!r}"


def _filter_mosaic(
    Figure: type[Figure], kernels: np.ndarray, cmap: str, limit: float
) -> tuple[Figure, AxesImage, list[Axes]]:
    """Every (output, input) kernel in one image, one output channel per row of kernels.

    One image rather than one axes per kernel: a layer has thousands of kernels, and
    matplotlib takes seconds per thousand axes.
    """
    c_out, c_in, kh, kw = kernels.shape
    # A NaN row and column after each kernel: transparent gaps in the mosaic.
    padded = np.pad(kernels, ((0, 0), (0, 0), (0, 1), (0, 1)), constant_values=np.nan)
    mosaic = padded.transpose(0, 2, 1, 3).reshape(c_out * (kh + 1), c_in * (kw + 1))
    mosaic = mosaic[:-1, :-1]
    inch = min(0.12, 9.0 / max(mosaic.shape))  # per mosaic pixel; at most 9 inches across
    fig = Figure(
        figsize=(max(4.0, inch * mosaic.shape[1] + 2.0), max(3.0, inch * mosaic.shape[0] + 1.2)),
        layout="constrained",
    )
    ax = fig.add_subplot()
    ax.set_facecolor("0.7")  # grey gaps, told apart from the white of zero weights
    image = ax.imshow(mosaic, cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
    for axis, count, size, label in (
        (ax.xaxis, c_in, kw, "input"),
        (ax.yaxis, c_out, kh, "output"),
    ):
        step = math.ceil(count / 16)  # at most 16 tick labels per axis
        channels = range(0, count, step)
        axis.set_ticks(
            [c * (size + 1) + (size - 1) / 2 for c in channels], [str(c) for c in channels]
        )
        axis.set_label_text(f"{label} channel")
    ax.tick_params(length=0, labelsize=7)
    return fig, image, [ax]


def plot_filters(
    layer_or_model: Conv2D | Sequential | CNNClassifier,
    *,
    layer: int | None = None,
    in_channel: str | int = "mean",
    cmap: str = "RdBu_r",
    path: str | os.PathLike[str] | None = None,
    dpi: float = 100,
) -> Figure:
    """Draw the learned kernels of a convolution layer as a grid of small images.

    Parameters
    ----------
    layer_or_model : Conv2D, Sequential or fitted CNNClassifier
        The layer, or a model holding it.
    layer : int, optional
        With a model: index of the Conv2D in ``model.layers`` (negative counts from the
        end). Default: the first Conv2D. Not allowed with a layer.
    in_channel : {'mean', 'all'} or int, default 'mean'
        Which slice of the weight ``(C_out, C_in / groups, kH, kW)`` to show: one panel
        per output channel averaged over the input channels (``'mean'``), or taken at
        one input channel (an int in ``[0, C_in / groups)``; with ``groups > 1`` it
        indexes the channels within each group); or ``'all'``: every kernel, in one
        mosaic image of ``C_out`` rows by ``C_in / groups`` columns of kernels.
    cmap : str, default 'RdBu_r'
        A diverging colormap suits weights: every panel shares the colour limits
        ``[-m, m]``, ``m`` the largest absolute value shown, so 0 is the middle colour
        and panels compare directly.
    path, dpi : str or path-like, optional; float, default 100
        Also save the figure there, at that resolution (dots per inch).

    Returns
    -------
    matplotlib.figure.Figure
        With ``'mean'`` or an int: one image axes per output channel, in row-major order
        (8 per row), titled with the channel index. With ``'all'``: one axes whose image
        holds kernel ``(i, j)`` at rows ``i * (kH + 1)`` to ``i * (kH + 1) + kH - 1`` and
        columns ``j * (kW + 1)`` to ``j * (kW + 1) + kW - 1``, with NaN gaps between
        kernels, x-label ``"input channel"``, y-label ``"output channel"``. Then a
        colorbar axes. The figure title names the layer (its index in the model), the
        weight shape and the slice shown.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    TypeError
        If ``layer_or_model`` is neither a Conv2D nor a model, if ``layer`` does not
        select a Conv2D, or if ``in_channel`` is neither a str nor an int.
    ValueError
        If the model has no Conv2D layer, ``layer`` is out of range or given with a
        layer, ``in_channel`` is out of range or an unknown string, or the estimator is
        not fitted.
    """
    Figure = require_matplotlib()
    conv, name = _select_conv(layer_or_model, layer)
    weight = np.asarray(conv.weight, dtype=np.float64)
    kernels, what = _filter_slice(weight, in_channel)
    limit = float(np.abs(kernels).max()) or 1.0  # all-zero weights still get a scale
    if in_channel == "all":
        fig, image, shown = _filter_mosaic(Figure, kernels, cmap, limit)
    else:
        fig, image, shown = _filter_panels(Figure, kernels, cmap, limit)
    fig.colorbar(image, ax=shown, shrink=0.8, label="weight")
    fig.suptitle(f"{name}\nweight {_shape_text(weight.shape)}, {what}", fontsize=9)
    return _finish(fig, path, dpi)


def _filter_slice(weight: np.ndarray, in_channel: str | int) -> tuple[np.ndarray, str]:
    """Select the kernels that ``in_channel`` asks for, with a caption of the slice."""
    c_in = weight.shape[1]
    if isinstance(in_channel, str):
        if in_channel == "mean":
            return weight.mean(axis=1, keepdims=True), (
                f"mean over {c_in} input channel{'s' * (c_in != 1)}"
            )
        if in_channel == "all":
            return weight, "every input channel"
        raise ValueError(f"in_channel must be 'mean', 'all' or an int, got {in_channel!r}")
    if isinstance(in_channel, numbers.Integral) and not isinstance(in_channel, bool):
        if not 0 <= in_channel < c_in:
            raise ValueError(
                f"in_channel={in_channel} is out of range: the weight of shape "
                f"{_shape_text(weight.shape)} has {c_in} input channel(s) per group"
            )
        return weight[:, [int(in_channel)]], f"input channel {int(in_channel)}"
    raise TypeError(f"in_channel must be 'mean', 'all' or an int, got {in_channel!r}")


def _filter_panels(
    Figure: type[Figure], kernels: np.ndarray, cmap: str, limit: float
) -> tuple[Figure, AxesImage, list[Axes]]:
    """Draw one small image per output channel, 8 per row, titled with its index."""
    c_out = kernels.shape[0]
    rows, cols = _grid(c_out)
    fig = Figure(figsize=(max(5.0, cols * 0.8 + 1.3), rows * 0.8 + 1.0), layout="constrained")
    shown = []
    for out, ax in enumerate(fig.subplots(rows, cols, squeeze=False).flat):
        if out >= c_out:
            fig.delaxes(ax)  # the unused end of the last row
            continue
        image = ax.imshow(
            kernels[out, 0], cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest"
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(str(out), fontsize=7, pad=2)
        shown.append(ax)
    return fig, image, shown


def _one_image(image: ArrayLike) -> np.ndarray:
    """``image`` as one (C, H, W) sample."""
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"image must hold real numbers, got dtype {array.dtype}")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    elif array.ndim == 2:
        array = array[None]
    elif array.ndim != 3:
        raise ValueError(
            "image must be one image of shape (C, H, W), (1, C, H, W) or (H, W), got "
            f"shape {array.shape}"
        )
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("image contains NaN or infinity")
    return array


def _end_of_first_block(model: Sequential) -> int:
    """Find the end of the first conv block: a Conv2D and the norm/dropout/activations after it."""
    from fastcnn.layers import GELU, BatchNorm2D, Dropout, LeakyReLU, ReLU, Sigmoid, SiLU, Tanh

    block = (BatchNorm2D, Dropout, ReLU, LeakyReLU, Tanh, Sigmoid, GELU, SiLU)
    index = _first_conv(model)
    for following in model.layers[index + 1 :]:
        if not isinstance(following, block):
            break
        index += 1
    return index


def _display_image(image: np.ndarray) -> tuple[np.ndarray, str | None, str]:
    """Choose what to show for a (C, H, W) input: the array, its colormap and a caption."""
    if image.shape[0] == 3:
        rgb = np.moveaxis(image.astype(np.float64), 0, -1)
        low, high = rgb.min(), rgb.max()
        # imshow wants RGB floats in [0, 1]; stretch whatever range the input uses.
        rgb = (rgb - low) / (high - low) if high > low else np.zeros_like(rgb)
        return rgb, None, "input (RGB)"
    if image.shape[0] == 1:
        return image[0], "gray", "input"
    return image.mean(axis=0), "gray", f"input (mean of {image.shape[0]} channels)"


def plot_feature_maps(
    model: Sequential | CNNClassifier,
    image: ArrayLike,
    *,
    layer: int | None = None,
    max_channels: int = 32,
    cmap: str = "viridis",
    path: str | os.PathLike[str] | None = None,
    dpi: float = 100,
) -> Figure:
    """Show one image next to each channel of the model's activations after ``layer``.

    Runs ``model.layers[0 : layer + 1]`` in inference mode on the image.

    Parameters
    ----------
    model : Sequential or fitted CNNClassifier
    image : array-like of shape (C, H, W), (1, C, H, W) or (H, W)
        One input sample (``(H, W)`` means one channel), of the shape the model takes.
        Converted to the model dtype.
    layer : int, optional
        Index in ``model.layers`` (negative counts from the end) of the layer whose output
        is shown; it must output feature maps ``(C, H, W)``. Default: the end of the
        first convolution block, i.e. the first Conv2D followed by the BatchNorm2D,
        Dropout and activation layers directly after it (``digits_cnn``: its first
        ReLU; ``lenet5``: its first Tanh); the activation is what the next layer sees.
    max_channels : int, default 32
        Draw at most this many channels (the first ones).
    cmap : str, default 'viridis'
        Colormap of the activations. All channels share one colour scale (the minimum
        and maximum over the channels shown), so weak and dead channels look weak.
    path, dpi : str or path-like, optional; float, default 100
        Also save the figure there, at that resolution (dots per inch).

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes[0]`` shows the input, titled ``"input"`` (grey for one channel);
        ``"input (RGB)"`` (three channels, stretched to [0, 1]) or ``"input (mean of C
        channels)"`` otherwise; ``fig.axes[1 : 1 + n]`` the channels, titled with their
        index; then a colorbar axes. The figure title starts with
        ``"after layer {index}: {layer class name}"``, e.g. ``"after layer 2: ReLU"``.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    TypeError
        If ``model`` is not a model, ``image`` is not numeric or ``layer`` or
        ``max_channels`` is not an int.
    ValueError
        If ``image`` has the wrong shape for the model or contains NaN or infinity,
        ``layer`` is out of range or does not output feature maps, the model has no
        Conv2D layer (with the default ``layer``), ``max_channels < 1``, or the estimator
        is not fitted.
    """
    Figure = require_matplotlib()
    model = _as_model(model, "model")
    max_channels = check_int(max_channels, "max_channels", 1)
    x = _one_image(image)
    index, stack = _feature_stack(model, x, layer)
    maps = stack.forward(x[None])[0]
    n = min(maps.shape[0], max_channels)
    fig = _feature_map_figure(Figure, x, maps[:n], cmap)
    path_text = " -> ".join(type(item).__name__ for item in stack.layers)
    count = f"{n} of {maps.shape[0]}" if n < maps.shape[0] else f"all {n}"
    fig.suptitle(
        f"after layer {index}: {type(model.layers[index]).__name__}\n"
        f"{path_text}; output {_shape_text(maps.shape)}, {count} channels shown",
        fontsize=9,
    )
    return _finish(fig, path, dpi)


def _feature_stack(model: Sequential, x: np.ndarray, layer: int | None) -> tuple[int, Sequential]:
    """Find the layer to show and the model up to it; check that it outputs feature maps."""
    if not model.layers:
        raise ValueError("the model has no layers")
    index = _end_of_first_block(model) if layer is None else _layer_index(model, layer)
    stack = model[: index + 1]
    try:
        out_shape = stack.output_shape(x.shape)
    except ValueError as exc:
        raise ValueError(f"image of shape {x.shape} does not fit the model: {exc}") from None
    if len(out_shape) != 3:
        raise ValueError(
            f"layer {index} ({model.layers[index]!r}) outputs samples of shape "
            f"{_shape_text(out_shape)}, not feature maps (C, H, W); choose a layer before it"
        )
    return index, stack


def _feature_map_figure(
    Figure: type[Figure], x: np.ndarray, maps: np.ndarray, cmap: str
) -> Figure:
    """Draw the input ``x`` on the left and each of ``maps`` beside it, on one colour scale."""
    n = maps.shape[0]
    rows, cols = _grid(n)
    input_width = min(rows, 3)  # the input gets up to 3 map widths of room
    fig = Figure(
        figsize=(max(5.0, (cols + input_width) * 0.9 + 1.4), rows * 0.9 + 1.2),
        layout="constrained",
    )
    grid = fig.add_gridspec(rows, cols + 1, width_ratios=[input_width] + [1] * cols)
    ax_in = fig.add_subplot(grid[:, 0])
    shown, in_cmap, caption = _display_image(x)
    ax_in.imshow(shown, cmap=in_cmap, interpolation="nearest")
    ax_in.set_title(caption, fontsize=8)
    ax_in.set_xticks([])
    ax_in.set_yticks([])
    low, high = float(maps.min()), float(maps.max())
    axes = []
    for c in range(n):
        ax = fig.add_subplot(grid[c // cols, 1 + c % cols])
        image_artist = ax.imshow(maps[c], cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        ax.set_title(str(c), fontsize=7, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
        axes.append(ax)
    fig.colorbar(image_artist, ax=axes, shrink=0.8, label="activation")
    return fig


def _history_records(history: Any) -> tuple[Mapping[str, Any], Sequence[int] | None]:
    """Get the per-epoch lists of ``history`` and, for a History, its 0-based epochs."""
    if isinstance(getattr(history, "history", None), Mapping) and hasattr(history, "epoch"):
        return history.history, history.epoch
    if isinstance(history, Mapping):
        return history, None
    curve = getattr(history, "loss_curve_", None)
    if curve is not None:
        records = {"loss": curve}
        scores = getattr(history, "validation_scores_", None)
        if scores:
            records["val_accuracy"] = scores
        return records, None
    if _unfitted_estimator(history):
        raise ValueError("history is a CNNClassifier that is not fitted yet; call fit first")
    raise TypeError(
        "history must be a fastcnn History, a dict of per-epoch lists or a fitted "
        f"CNNClassifier, got {type(history).__name__}"
    )


def plot_history(
    history: History | Mapping[str, Sequence[float]] | CNNClassifier,
    *,
    validation_label: str = "validation",
    path: str | os.PathLike[str] | None = None,
    dpi: float = 100,
) -> Figure:
    """Plot the loss and accuracy per epoch, training and validation.

    Parameters
    ----------
    history : History, dict or fitted CNNClassifier
        What :meth:`fastcnn.Sequential.fit` returned; or a dict with any of the keys
        ``"loss"``, ``"accuracy"``, ``"val_loss"``, ``"val_accuracy"`` (others, such as
        ``"time"`` and ``"lr"``, are ignored), each a list of per-epoch values; or a
        fitted CNNClassifier (its ``loss_curve_``, and ``validation_scores_`` as the
        validation accuracy when it trained with ``early_stopping``).
    validation_label : str, default 'validation'
        Legend label of the ``val_*`` curves (e.g. ``"test"`` when the held-out data
        was the test set).
    path, dpi : str or path-like, optional; float, default 100
        Also save the figure there, at that resolution (dots per inch).

    Returns
    -------
    matplotlib.figure.Figure
        One axes titled ``"loss"`` when there are loss values and one titled
        ``"accuracy"`` when there are accuracy values, in that order; x is the 1-based
        epoch (``"epoch"`` x-label). Training lines are labelled ``"train"``, validation
        lines ``validation_label``.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    TypeError
        If ``history`` is none of the above or a curve holds non-numbers.
    ValueError
        If no curve has any epoch, the curves have different lengths (or, for a History,
        a length other than the number of epochs), a curve is not 1-D, or the estimator
        is not fitted.
    """
    Figure = require_matplotlib()
    records, epochs = _history_records(history)
    x, curves = _history_curves(records, epochs)
    n = len(x)
    panels = [name for name in ("loss", "accuracy") if name in curves or "val_" + name in curves]
    fig = Figure(figsize=(4.5 * len(panels) + 0.5, 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    from matplotlib.ticker import MaxNLocator

    marker = "o" if n <= 30 else None
    for ax, name in zip(axes, panels, strict=True):
        for key, label, style in ((name, "train", "-"), ("val_" + name, validation_label, "--")):
            if key in curves:
                ax.plot(x, curves[key], style, marker=marker, markersize=3, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"learning curves, {n} epoch{'s' * (n != 1)}", fontsize=10)
    return _finish(fig, path, dpi)


def _history_curves(
    records: Mapping[str, Any], epochs: Sequence[int] | None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Check the per-epoch curves; return the 1-based epochs and each non-empty curve."""
    curves: dict[str, np.ndarray] = {}
    for key in _HISTORY_KEYS:
        values = records.get(key)
        if values is None:
            continue
        try:
            array = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"history[{key!r}] must be a list of numbers") from None
        if array.ndim != 1:
            raise ValueError(f"history[{key!r}] must be 1-D, got shape {array.shape}")
        if array.size:
            curves[key] = array
    if not curves:
        raise ValueError(
            f"history has no epochs: no values for any of {', '.join(map(repr, _HISTORY_KEYS))}"
        )
    lengths = {key: len(values) for key, values in curves.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"history curves have different lengths: {lengths}")
    n = next(iter(lengths.values()))
    if epochs is None:
        return np.arange(1, n + 1), curves
    if len(epochs) != n:
        raise ValueError(f"history has {len(epochs)} epoch(s) but curves of length {n}")
    return np.asarray(epochs, dtype=np.int64) + 1, curves


def plot_confusion(
    model: Any,  # any object with predict(X), checked at run time
    X: ArrayLike,
    y: ArrayLike,
    *,
    normalize: str | None = None,
    labels: ArrayLike | None = None,
    cmap: str = "Blues",
    path: str | os.PathLike[str] | None = None,
    dpi: float = 100,
) -> Figure:
    """Plot the confusion matrix of ``model.predict(X)`` against ``y``.

    Parameters
    ----------
    model : object with a ``predict(X)`` method
        A fastcnn.Sequential, a fitted CNNClassifier, any scikit-learn classifier.
    X : array-like
        Samples, as ``model.predict`` takes them.
    y : array-like of shape (n_samples,)
        True labels, in the same terms as the predictions (class indices for a
        Sequential).
    normalize : {None, 'true', 'pred', 'all'}, default None
        As :func:`sklearn.metrics.confusion_matrix`: show counts, or fractions of each
        true class (rows), of each predicted class (columns) or of all samples.
    labels : array-like, optional
        Classes to show, in this order (default: every label in ``y`` or the predictions,
        sorted).
    cmap : str, default 'Blues'
    path, dpi : str or path-like, optional; float, default 100
        Also save the figure there, at that resolution (dots per inch).

    Returns
    -------
    matplotlib.figure.Figure
        ``fig.axes[0]`` holds the matrix as an image (rows: true label, y-label
        ``"true label"``; columns: predicted label, x-label ``"predicted label"``), each
        cell annotated with its count (or fraction, 2 decimals) when there are at most 30
        classes, titled with the accuracy over all samples, e.g.
        ``"accuracy 0.9917 (357/360)"``; then a colorbar axes.

    Raises
    ------
    ImportError
        If matplotlib is not installed.
    TypeError
        If ``model`` has no ``predict`` method.
    ValueError
        If ``normalize`` is not one of the above, ``y`` is not 1-D, the predictions do
        not have the shape of ``y``, or ``labels`` is empty or repeats a label
        (scikit-learn also refuses labels that occur in neither ``y`` nor the
        predictions).
    """
    Figure = require_matplotlib()
    from sklearn.metrics import confusion_matrix

    y, y_pred, shown = _confusion_inputs(model, X, y, normalize, labels)
    matrix = confusion_matrix(y, y_pred, labels=shown, normalize=normalize)
    fig, ax = _confusion_figure(Figure, matrix, [str(label) for label in shown], normalize, cmap)
    correct = int(np.count_nonzero(y_pred == y))
    title = f"accuracy {correct / y.size:.4f} ({correct}/{y.size})"
    if normalize:
        title += {"true": ", rows sum to 1", "pred": ", columns sum to 1"}.get(
            normalize, ", fractions of all samples"
        )
    ax.set_title(title, fontsize=10)
    return _finish(fig, path, dpi)


def _confusion_figure(
    Figure: type[Figure], matrix: np.ndarray, names: list[str], normalize: str | None, cmap: str
) -> tuple[Figure, Axes]:
    """Draw the matrix as an image, each cell annotated when there are at most 30 classes."""
    n = len(names)
    side = min(9.0, 2.5 + 0.45 * n)
    fig = Figure(figsize=(side + 1.0, side), layout="constrained")
    ax = fig.add_subplot()
    vmax = 1.0 if normalize else max(int(matrix.max()), 1)
    image = ax.imshow(matrix, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 3 else 0)
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    if n <= 30:
        fontsize = 8 if n <= 12 else 6
        for (i, j), value in np.ndenumerate(matrix):
            text = f"{value:.2f}" if normalize else f"{int(value)}"
            # Light text on the dark half of the colormap keeps every number readable.
            color = "white" if value > vmax / 2 else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction" if normalize else "count")
    return fig, ax


def _confusion_inputs(
    model: Any, X: ArrayLike, y: ArrayLike, normalize: str | None, labels: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check the arguments of :func:`plot_confusion`; return y, the predictions and labels."""
    if not callable(getattr(model, "predict", None)):
        raise TypeError(f"model must have a predict method, got {type(model).__name__}")
    if normalize not in (None, "true", "pred", "all"):
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', got {normalize!r}")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (n_samples,), got shape {y.shape}")
    y_pred = np.asarray(model.predict(X))
    if y_pred.shape != y.shape:
        raise ValueError(
            f"model.predict(X) returned shape {y_pred.shape}, but y has shape {y.shape}"
        )
    if labels is None:
        return y, y_pred, np.unique(np.concatenate([y, y_pred]))
    chosen = np.asarray(labels)
    if chosen.ndim != 1 or chosen.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D list, got shape {chosen.shape}")
    if len(np.unique(chosen)) != chosen.size:
        raise ValueError(f"labels must not repeat a label, got {chosen.tolist()}")
    return y, y_pred, chosen
