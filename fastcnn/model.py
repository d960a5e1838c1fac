"""``Sequential``: a stack of layers with training, inference and save/load.

The model is the boundary of the library: it converts user input (lists, uint8 images,
float64 arrays) to the model dtype once, checks shapes against every layer before any
work starts, and batches inference so memory stays bounded. Inside, each batch is one
``forward`` per layer, a loss, one ``backward`` per layer and an optimizer step.

Model files are ``.npz`` archives holding only plain arrays: the architecture as a JSON
string, a format version, and every weight and BatchNorm statistic under a stable name
(``"0.weight"``, ``"3.running_var"``). They are loaded with ``allow_pickle=False`` and the
layers are rebuilt only from :data:`fastcnn.layers.LAYER_REGISTRY`, so opening a model
file can never execute code; and what a file's entries declare is checked against its
architecture before any array is read, so it cannot make us allocate or decompress much
more than its own size (see :mod:`fastcnn.saving`).
"""

from __future__ import annotations

import math
import numbers
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any, Protocol, TextIO, cast, overload

import numpy as np
from numpy.typing import ArrayLike

from fastcnn import saving
from fastcnn.layers import Dropout, Layer
from fastcnn.losses import (
    LossFunction,
    _check_sample_weight,
    get_loss,
    softmax,
    softmax_cross_entropy,
)
from fastcnn.optim import SGD, Adam, Optimizer
from fastcnn.saving import FORMAT_VERSION
from fastcnn.saving import load_model as load

__all__ = ["FORMAT_VERSION", "History", "Sequential", "load"]

Shape = tuple[int, ...]


class Callback(Protocol):
    """What :meth:`Sequential.fit` calls after every epoch; returning True stops training."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> bool | None: ...


class History:
    """Per-epoch record of a :meth:`Sequential.fit` call (as Keras' ``History``).

    Attributes
    ----------
    history : dict of str to list of float
        ``"loss"`` (mean training loss of the epoch), ``"accuracy"`` (cross-entropy
        only), ``"val_loss"`` and ``"val_accuracy"`` (with validation data), ``"time"``
        (seconds per epoch, validation included) and ``"lr"`` (learning rate during the
        epoch). The keys exist from the start, even if no epoch completes.
    epoch : list of int
        0-based indices of the completed epochs.
    interrupted : bool
        True if training was stopped with Ctrl-C (KeyboardInterrupt).
    stopped_by_callback : bool
        True if a callback's ``on_epoch_end`` returned True.
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.history: dict[str, list[float]] = {key: [] for key in keys}
        self.epoch: list[int] = []
        self.interrupted = False
        self.stopped_by_callback = False

    def _append(self, epoch: int, logs: dict[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


# ---------------------------------------------------------------------------------------
# Progress bar and Ctrl-C handling


class _ProgressBar:
    """One line per epoch on stderr; redrawn in place with ``\\r`` when it is a terminal."""

    def __init__(
        self, epoch: int, epochs: int, n_batches: int, verbose: int, stream: TextIO | None = None
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = verbose > 0
        isatty = getattr(self.stream, "isatty", None)
        self.live = verbose == 1 and bool(isatty and isatty())
        self.prefix = f"Epoch {epoch + 1}/{epochs}"
        self.n_batches = n_batches
        self.start = time.perf_counter()
        self._last_draw = -math.inf
        self._width = 0  # length of the line currently on screen, 0 if none is open

    def _bar(self, done: int) -> str:
        width = 20
        filled = width * done // self.n_batches
        arrow = ">" if 0 < filled < width else ""
        return "[" + "=" * filled + arrow + "." * (width - filled - len(arrow)) + "]"

    def _write(self, line: str, end: str = "") -> None:
        # Pad with spaces so a shorter line fully covers the previous one.
        self.stream.write("\r" + line.ljust(self._width) + end)
        self.stream.flush()
        self._width = 0 if end else len(line)

    def update(self, done: int, seen: int, metrics: dict[str, float]) -> None:
        if not self.live:
            return
        now = time.perf_counter()
        if done < self.n_batches and now - self._last_draw < 0.1:
            return  # redrawing every batch would cost more than tiny batches do
        self._last_draw = now
        elapsed = max(now - self.start, 1e-9)
        eta = elapsed / done * (self.n_batches - done)
        values = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        self._write(
            f"{self.prefix} {self._bar(done)} {done}/{self.n_batches}  {values}  "
            f"{seen / elapsed:,.0f} img/s  ETA {eta:.1f}s"
        )

    def finish(self, seen: int, train_time: float, logs: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k not in ("time", "lr"))
        rate = seen / max(train_time, 1e-9)
        self._write(
            f"{self.prefix} {self._bar(self.n_batches)} {self.n_batches}/{self.n_batches}  "
            f"{values}  {rate:,.0f} img/s  {logs['time']:.1f}s",
            end="\n",
        )

    def close(self) -> None:
        """End a half-drawn line (on interrupt or error) so later output starts cleanly."""
        if self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


class _StopRequest:
    """Turns the first Ctrl-C into a request to stop after the current batch.

    Only installed from the main thread and only over Python's default handler; a second
    Ctrl-C raises KeyboardInterrupt at once, for a loop that does not come back.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write(
            "\nInterrupt received: stopping after the current batch "
            "(press Ctrl-C again to stop at once).\n"
        )
        sys.stderr.flush()

    def __enter__(self) -> _StopRequest:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


# ---------------------------------------------------------------------------------------
# Argument checks


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_callbacks(callbacks: object) -> list[Callback]:
    if callbacks is None:
        return []
    if not isinstance(callbacks, list | tuple):
        callbacks = [callbacks]
    for i, callback in enumerate(callbacks):
        if not callable(getattr(callback, "on_epoch_end", None)):
            raise TypeError(
                f"callbacks[{i}] ({callback!r}) must have an on_epoch_end(epoch, logs) method"
            )
    return list(callbacks)


# ---------------------------------------------------------------------------------------
# The model


class _LayerIndex(dict[int, Layer]):
    """``id(layer) -> layer`` for a model's layers, and the dtype of the first one that
    has a dtype: what :meth:`Sequential.add` checks a new layer against.

    Kept up to date by ``add``, so adding a layer costs O(1) and building a model of n
    layers O(n); a scan of every layer per ``add`` made loading a file of 100,000 layers
    take minutes. It describes the list it was built for while that list has
    the length and last layer it last saw; after other edits of ``model.layers`` it is
    rebuilt. The values keep the layers alive, so an id in it is never reused.
    """

    def __init__(self, layers: list[Layer]) -> None:
        super().__init__()
        self.layers, self.count = layers, 0
        self.last: Layer | None = None
        self.dtype: np.dtype | None = None
        for layer in layers:
            self.note(layer)

    def note(self, layer: Layer) -> None:
        """Record ``layer``, just appended to the list."""
        self[id(layer)] = self.last = layer
        self.count = len(self.layers)
        if self.dtype is None:
            self.dtype = layer.dtype

    def describes(self, layers: list[Layer]) -> bool:
        count = len(layers)
        return (
            layers is self.layers
            and count == self.count
            and (count == 0 or layers[-1] is self.last)
        )


class Sequential:
    """A stack of layers applied in order, trained by backpropagation.

    Parameters
    ----------
    *layers : Layer, or one list of layers
        ``Sequential(a, b, c)`` and ``Sequential([a, b, c])`` are the same. Layers with
        parameters must share one dtype, the model's :attr:`dtype`.

    Attributes
    ----------
    layers : list of Layer
    optimizer : Optimizer or None
        The optimizer of the last :meth:`fit` (reused by the next ``fit`` if none is given).
    history : History or None
        What the last :meth:`fit` returned.

    Notes
    -----
    Gradients are overwritten, never accumulated, by every :meth:`backward`, so there is no
    ``zero_grad`` to call between steps.

    Examples
    --------
    >>> from fastcnn.layers import Conv2D, ReLU, MaxPool2D, Flatten, Dense
    >>> model = Sequential([Conv2D(1, 8, 3, padding=1, rng=0), ReLU(), MaxPool2D(2),
    ...                     Flatten(), Dense(8 * 4 * 4, 10, rng=0)])
    >>> model.output_shape((1, 8, 8))
    (10,)
    """

    def __init__(self, *layers: Layer | Iterable[Layer]) -> None:
        if len(layers) == 1 and isinstance(layers[0], list | tuple):
            layers = tuple(layers[0])
        self.layers: list[Layer] = []
        self.optimizer = None
        self.history: History | None = None
        self._loss: Any = "cross_entropy"
        for layer in layers:
            self.add(layer)  # type: ignore[arg-type]

    def add(self, layer: Layer) -> Sequential:
        """Append a layer; returns the model."""
        index = len(self.layers)
        if not isinstance(layer, Layer):
            raise TypeError(f"layer {index} must be a fastcnn Layer, got {type(layer).__name__}")
        known = self._layer_index()
        # The index only says "maybe" (it may predate an edit of `layers`): confirm.
        if known.get(id(layer)) is layer and any(layer is other for other in self.layers):
            raise ValueError(
                f"layer {index} ({layer!r}) is already in the model; a layer object keeps "
                "its own forward state, so build a new one to use it twice"
            )
        dtype = known.dtype
        if layer.dtype is not None and dtype is not None and layer.dtype != dtype:
            raise ValueError(
                f"layer {index} ({layer!r}) has dtype {layer.dtype} but the model's other "
                f"layers have dtype {dtype}; build every layer with the same dtype"
            )
        self.layers.append(layer)
        known.note(layer)
        return self

    def _layer_index(self) -> _LayerIndex:
        index = self.__dict__.get("_index")
        if index is None or not index.describes(self.layers):
            index = self._index = _LayerIndex(self.layers)
        return index

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_index", None)  # keyed by id(): meaningless in another process
        return state

    # -- containers and introspection ---------------------------------------------------

    def _param_dtype(self) -> np.dtype | None:
        for layer in self.layers:
            if layer.dtype is not None:
                return layer.dtype
        return None

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the parameters (float32 if no layer has parameters)."""
        dtype = self._param_dtype()
        return np.dtype(np.float32) if dtype is None else dtype

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    @overload
    def __getitem__(self, index: slice) -> Sequential: ...
    @overload
    def __getitem__(self, index: int) -> Layer: ...
    def __getitem__(self, index: int | slice) -> Layer | Sequential:
        if isinstance(index, slice):
            return Sequential(self.layers[index])
        return self.layers[index]

    def __repr__(self) -> str:
        lines = [f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)" if lines else "Sequential()"

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every learnable array with its gradient, as ``(param, grad)`` pairs.

        The arrays themselves, not copies, in layer order and, within a layer, in the
        order of ``layer.params``. Both stay the same objects for the life of the model
        (updates happen in place), so an optimizer can bind to this list once.
        """
        return [
            (p, layer.grads[name]) for layer in self.layers for name, p in layer.params.items()
        ]

    def named_parameters(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """As :meth:`parameters`, with names ``"<layer index>.<param name>"``."""
        return [
            (f"{i}.{name}", p, layer.grads[name])
            for i, layer in enumerate(self.layers)
            for name, p in layer.params.items()
        ]

    @property
    def num_params(self) -> int:
        """Number of learnable scalars."""
        return sum(layer.num_params for layer in self.layers)

    def _state_arrays(self) -> dict[str, np.ndarray]:
        state = {}
        for i, layer in enumerate(self.layers):
            for name, array in (*layer.params.items(), *layer.buffers.items()):
                state[f"{i}.{name}"] = array
        return state

    def _non_finite_state(self) -> tuple[str, str] | None:
        """``("parameters" or "buffers", name)`` of the first array of the model's state
        that holds NaN or infinity, else None.
        """
        for i, layer in enumerate(self.layers):
            for kind, arrays in (("parameters", layer.params), ("buffers", layer.buffers)):
                for name, array in arrays.items():
                    if not np.isfinite(array).all():
                        return kind, f"{i}.{name}"
        return None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer (BatchNorm statistics) by stable name."""
        return {name: array.copy() for name, array in self._state_arrays().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy arrays from ``state`` into the model, in place.

        Every name must be present, with the exact shape and dtype (in either byte
        order); nothing is copied unless all of them match.
        """
        expected = self._state_arrays()
        missing = sorted(expected.keys() - state.keys())
        extra = sorted(state.keys() - expected.keys())
        if missing or extra:
            raise ValueError(
                f"arrays do not match the architecture: missing {missing}, unexpected {extra}"
            )
        for name, target in expected.items():
            array = state[name]
            if (
                not isinstance(array, np.ndarray)
                or array.shape != target.shape
                or array.dtype.newbyteorder("=") != target.dtype  # '>f4' from a big-endian file
            ):
                raise ValueError(
                    f"array {name!r} must have shape {target.shape} and dtype {target.dtype}, "
                    f"got {getattr(array, 'shape', None)} {getattr(array, 'dtype', type(array))}"
                )
        for name, target in expected.items():
            np.copyto(target, state[name])

    def output_shape(self, input_shape: Shape) -> Shape:
        """Shape of one output sample for one input sample of shape ``input_shape``."""
        shape = tuple(int(s) for s in input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise ValueError(f"layer {i}: {exc}") from None
        return shape

    def summary(self, input_shape: Shape) -> str:
        """A table of the layers with their output shapes and parameter counts.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of one input sample, e.g. ``(1, 28, 28)``.

        Returns
        -------
        str
            Ready to ``print``.
        """
        shape = tuple(int(s) for s in input_shape)
        rows = [("#", "Layer", "Output shape", "Params")]
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise ValueError(f"layer {i}: {exc}") from None
            rows.append((str(i), repr(layer), str(shape), f"{layer.num_params:,}"))
        widths = [max(len(row[c]) for row in rows) for c in range(4)]

        def fmt(row: tuple[str, str, str, str]) -> str:
            return (
                f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  "
                f"{row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}"
            )

        rule = "-" * len(fmt(rows[0]))
        lines = [
            f"Sequential: input {tuple(int(s) for s in input_shape)}, dtype {self.dtype}",
            rule,
            fmt(rows[0]),
            rule,
            *(fmt(row) for row in rows[1:]),
            rule,
            f"Total params: {self.num_params:,}",
        ]
        return "\n".join(lines)

    # -- forward and backward -----------------------------------------------------------

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def _backward(
        self, grad: np.ndarray, input_grad: bool, retain_activations: bool = False
    ) -> np.ndarray | None:
        layers = self.layers
        if not layers:
            return grad if input_grad else None
        first = layers[0]
        first.needs_input_grad = input_grad  # saves the first conv's input-gradient GEMM
        try:
            for layer in reversed(layers):
                # None only from the first layer, run last, when input_grad is False.
                grad = cast(np.ndarray, layer.backward(grad))
                if not retain_activations:
                    # As PyTorch frees a graph's saved tensors: the activations go back
                    # to the recycled buffers now, and the next forward reuses them
                    # instead of allocating a second set while these are still held.
                    layer._release_activations()
        finally:
            first.needs_input_grad = True
        return grad if input_grad else None

    def forward(self, x: ArrayLike, training: bool = False) -> np.ndarray:
        """Output for a batch ``x`` (converted to the model dtype if needed).

        In training mode Dropout drops and BatchNorm uses (and updates) batch statistics.
        """
        return self._forward(np.asarray(x, dtype=self.dtype), training)

    def __call__(self, x: ArrayLike, training: bool = False) -> np.ndarray:
        return self.forward(x, training)

    def backward(
        self,
        grad_out: np.ndarray,
        *,
        input_grad: bool = True,
        retain_activations: bool = False,
    ) -> np.ndarray | None:
        """Backpropagate dLoss/dOutput of the last :meth:`forward` through every layer.

        Fills every layer's ``grads`` and returns dLoss/dInput, or None when
        ``input_grad=False`` (which lets the first layer skip that work, as in training).

        Each layer lets go of the activations it saved in the forward pass once its
        gradients are computed, as PyTorch frees a graph after ``backward()``, so a
        training loop holds one set of activations, not two. A second ``backward`` then
        needs a new ``forward``; ``retain_activations=True`` keeps them for it.
        """
        return self._backward(grad_out, input_grad, retain_activations)

    # -- input checks -------------------------------------------------------------------

    def _check_X(
        self, X: ArrayLike, name: str = "X", convert: bool = True
    ) -> tuple[np.ndarray, Shape]:
        """Validate a batch of samples; return it (as the model dtype if ``convert``) and
        the output shape of one sample.
        """
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {X.dtype}")
        if X.ndim < 2:
            raise ValueError(
                f"{name} must be a batch of samples of shape (n_samples, ...), got shape "
                f"{X.shape}{self._one_sample_hint(X.shape, name)}"
            )
        if X.shape[0] == 0:
            raise ValueError(f"{name} has 0 samples, shape {X.shape}")
        if convert:
            X = X.astype(self.dtype, copy=False)
        if X.dtype.kind == "f" and X.size and not (np.isfinite(X.min()) and np.isfinite(X.max())):
            raise ValueError(f"{name} contains NaN or infinity (in the model dtype {self.dtype})")
        try:
            out_shape = self.output_shape(X.shape[1:])
        except ValueError as exc:
            raise ValueError(
                f"{name} of shape {X.shape} does not fit the model: "
                f"{exc}{self._one_sample_hint(X.shape, name)}"
            ) from None
        return X, out_shape

    def _one_sample_hint(self, shape: Shape, name: str) -> str:
        """Advice for a single sample given without its batch axis (``model.predict(X[0])``):
        when ``shape`` itself is a shape the model accepts per sample.
        """
        try:
            self.output_shape(tuple(shape))
        except ValueError:
            return ""
        return (
            f"; {name} looks like one sample of shape {tuple(shape)}: add the batch axis, "
            f"e.g. {name}[None] (or {name}[np.newaxis]), to pass a batch of one"
        )

    def _check_y(
        self, y: ArrayLike, n: int, out_shape: Shape, classification: bool, name: str = "y"
    ) -> np.ndarray:
        y = np.asarray(y)
        if not classification:
            if y.shape != (n, *out_shape):
                raise ValueError(
                    f"{name} must have shape {(n, *out_shape)} (the model's output), got {y.shape}"
                )
            if y.dtype.kind not in "biuf":
                raise TypeError(f"{name} must hold real numbers, got dtype {y.dtype}")
            y = y.astype(self.dtype, copy=False)
            if y.size and not (np.isfinite(y.min()) and np.isfinite(y.max())):
                raise ValueError(
                    f"{name} contains NaN or infinity (in the model dtype {self.dtype})"
                )
            return y
        if len(out_shape) != 1:
            raise ValueError(
                f"cross-entropy needs the model to output (n_classes,) logits per sample, "
                f"but it outputs {out_shape}; end the model with Flatten() and Dense()"
            )
        if y.ndim == 2 and y.shape[1] == 1:
            raise ValueError(f"{name} must be 1-D of shape ({n},), got {y.shape}; use y.ravel()")
        if y.ndim != 1 or y.shape[0] != n:
            raise ValueError(f"{name} must have shape ({n},) to match the samples, got {y.shape}")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError(f"{name} must hold integer class indices, got non-integer floats")
        elif y.dtype.kind not in "biu":
            raise TypeError(
                f"{name} must hold integer class indices 0..n_classes-1, got dtype {y.dtype}; "
                "encode other labels with sklearn.preprocessing.LabelEncoder, or use "
                "fastcnn.CNNClassifier, which accepts any labels"
            )
        n_classes = out_shape[0]
        if y.min() < 0 or y.max() >= n_classes:
            raise ValueError(
                f"{name} must hold class indices in [0, {n_classes}) for a model with "
                f"{n_classes} outputs, got values in [{y.min()}, {y.max()}]"
            )
        return y.astype(np.intp, copy=False)

    # -- training -----------------------------------------------------------------------

    def fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        epochs: int = 10,
        batch_size: int = 32,
        optimizer: Optimizer | str | None = None,
        loss: str | LossFunction = "cross_entropy",
        validation_data: tuple[ArrayLike, ArrayLike] | None = None,
        validation_split: float = 0.0,
        shuffle: bool = True,
        random_state: int | np.random.Generator | None = None,
        verbose: int = 1,
        callbacks: object = None,  # Callback(s), checked at run time by _check_callbacks
        checkpoint: str | os.PathLike[str] | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> History:
        """Train with minibatch gradient descent; returns the per-epoch :class:`History`.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Any real dtype (e.g. uint8 images); converted once to the model dtype.
        y : array-like of shape (n_samples,)
            Integer class indices for ``loss='cross_entropy'``; for ``'mse'``, targets
            of the model's output shape.
        epochs : int, default 10
        batch_size : int, default 32
            The last batch of an epoch may be smaller.
        optimizer : Optimizer, {'adam', 'sgd'} or None
            Updated in place and kept (as ``self.optimizer``) so the next ``fit`` can
            continue with its state. A name makes a new one with the class defaults
            (``Adam()``, ``SGD()``), as :class:`~fastcnn.CNNClassifier` names them. None:
            the previous fit's optimizer, else ``Adam(1e-3)``.
        loss : {'cross_entropy', 'mse'} or callable, default 'cross_entropy'
            A callable takes ``(output, y_batch)`` and returns ``(loss, grad_output)``.
            Cross-entropy works on logits: the model ends with a Dense layer, no softmax.
        validation_data : (X_val, y_val) or None
            Evaluated after every epoch (``val_loss``, ``val_accuracy``).
        validation_split : float in [0, 1), default 0.0
            Fraction of the samples held out at random (drawn with ``random_state``)
            for validation instead; not together with ``validation_data``.
        shuffle : bool, default True
            Reshuffle the training samples every epoch.
        random_state : int, numpy.random.Generator, numpy.random.RandomState or None
            Seeds the split, the shuffling and the Dropout masks (the weights are seeded
            when the layers are built).
        verbose : {0, 1, 2}, default 1
            0 silent; 1 a progress bar on stderr, redrawn live on a terminal, one line per
            epoch otherwise; 2 one line per epoch.
        callbacks : list of objects with ``on_epoch_end(epoch, logs)``, optional
            Called after every epoch with the epoch index and its metrics; returning
            True stops training. Learning-rate schedulers (:mod:`fastcnn.optim`) qualify.
        checkpoint : path or None
            After every epoch, save the model, the optimizer state, the random generators,
            the learning-rate schedulers' epoch and the history to this file, atomically
            (as :meth:`save`; :func:`load` reads it as a model). If the file exists when
            ``fit`` starts, training resumes after its last epoch, so a ``fit`` that was
            interrupted (Ctrl-C, a crash, a killed process) and is called again with the
            same arguments ends with exactly the model of an uninterrupted run (with
            ``validation_split``, pass ``random_state`` so the split is the same). The
            file is kept when training ends; ``epochs`` counts the epochs already done.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weight of each sample's loss, shuffled and batched with it. The
            weights are divided by their mean over the training samples, so the reported
            loss is the weighted average ``sum(w * loss) / sum(w)`` and, in a batch that
            holds every sample, a weight of 2 acts as the sample given twice. A callable
            ``loss`` is then called as ``loss(output, y_batch, sample_weight=w_batch)``.
            Validation scores are unweighted.

        Returns
        -------
        History

        Raises
        ------
        FloatingPointError
            If the loss, or at the end of an epoch any array of the model's state (a
            parameter, or a buffer such as BatchNorm's running statistics, as
            :meth:`state_dict` returns them), becomes NaN or infinite (training
            diverged); the message names the array, the epoch and the learning rate.

        Notes
        -----
        Ctrl-C (KeyboardInterrupt) stops training after the current batch: a notice is
        printed, the model keeps its latest weights and the History of the completed
        epochs is returned (with ``interrupted=True``).
        """
        epochs = _check_int(epochs, "epochs", 0)
        batch_size = _check_int(batch_size, "batch_size", 1)
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2, got {verbose!r}")
        if not isinstance(shuffle, bool | np.bool_):
            raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
        loss_fn = get_loss(loss)
        classification = loss_fn is softmax_cross_entropy
        callbacks = _check_callbacks(callbacks)
        if isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real):
            raise TypeError(f"validation_split must be a float, got {validation_split!r}")
        if not 0.0 <= validation_split < 1.0:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split!r}")
        if validation_split and validation_data is not None:
            raise ValueError("give either validation_data or validation_split, not both")
        if optimizer is None:
            optimizer = self.optimizer if self.optimizer is not None else Adam(1e-3)
        elif isinstance(optimizer, str):
            if optimizer not in _OPTIMIZER_NAMES:
                raise ValueError(
                    f"optimizer must be one of {sorted(_OPTIMIZER_NAMES)} or a fastcnn.optim "
                    f"optimizer, got {optimizer!r}"
                )
            optimizer = _OPTIMIZER_NAMES[optimizer]()
        elif not callable(getattr(optimizer, "step", None)):
            raise TypeError(
                f"optimizer must be a fastcnn.optim optimizer (with a step method), got "
                f"{optimizer!r}"
            )
        if not self.layers:
            raise ValueError("the model has no layers; add some before fit")
        if checkpoint is not None:
            checkpoint = os.fspath(checkpoint)
            if not isinstance(optimizer, Optimizer):
                raise TypeError(
                    f"checkpoint needs a fastcnn.optim optimizer, whose state it can save; "
                    f"got {optimizer!r}"
                )

        X, out_shape = self._check_X(X)
        y = self._check_y(y, X.shape[0], out_shape, classification)
        w = None if sample_weight is None else _check_sample_weight(sample_weight, X.shape[0])
        if isinstance(random_state, np.random.RandomState):  # scikit-learn's convention
            random_state = int(random_state.randint(2**31))
        try:
            rng = np.random.default_rng(random_state)
        except (TypeError, ValueError):
            raise TypeError(
                "random_state must be None, an int, a numpy Generator or RandomState, got "
                f"{random_state!r}"
            ) from None
        X_val = y_val = None
        if validation_split:
            n_val = math.ceil(X.shape[0] * validation_split)
            if n_val >= X.shape[0]:
                raise ValueError(
                    f"validation_split={validation_split} leaves no training samples out of "
                    f"{X.shape[0]}"
                )
            order = rng.permutation(X.shape[0])
            val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
            X, X_val, y, y_val = X[train_idx], X[val_idx], y[train_idx], y[val_idx]
            w = None if w is None else w[train_idx]
        elif validation_data is not None:
            if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, y_val)")
            X_val, val_shape = self._check_X(validation_data[0], "X_val")
            y_val = self._check_y(
                validation_data[1], X_val.shape[0], val_shape, classification, "y_val"
            )
        if random_state is not None:  # make the dropout masks part of the seeded run
            for layer in self.layers:
                if isinstance(layer, Dropout):
                    layer.rng = np.random.default_rng(rng.integers(2**63))

        if w is not None:
            w = _normalized_weights(w)
        params = self.parameters()
        if callable(getattr(optimizer, "bind", None)):
            optimizer.bind(params)
        self.optimizer = optimizer
        self._loss = loss
        keys = ["loss"] + (["accuracy"] if classification else [])
        if X_val is not None:
            keys += ["val_" + key for key in keys]
        history = History([*keys, "time", "lr"])
        self.history = history

        n = X.shape[0]
        n_batches = math.ceil(n / batch_size)
        first = 0
        if checkpoint is not None:
            run = {"optimizer": optimizer, "rng": rng, "history": history, "n_samples": n,
                   "batch_size": batch_size, "callbacks": callbacks}  # fmt: skip
            if os.path.exists(checkpoint):
                first = self._resume(checkpoint, run)
        epoch = batch = 0
        bar = None
        with _StopRequest() as stop:
            try:
                for epoch in range(first, epochs):
                    bar = _ProgressBar(epoch, epochs, n_batches, verbose)
                    start = time.perf_counter()
                    order = rng.permutation(n) if shuffle else None
                    total_loss, correct, seen = 0.0, 0, 0
                    for batch in range(n_batches):
                        lo, hi = batch * batch_size, min(n, (batch + 1) * batch_size)
                        idx = slice(lo, hi) if order is None else order[lo:hi]
                        xb, yb = X[idx], y[idx]
                        out = self._forward(xb, True)
                        if w is None:
                            batch_loss, grad = loss_fn(out, yb)
                        else:
                            batch_loss, grad = loss_fn(out, yb, sample_weight=w[idx])
                        if not math.isfinite(batch_loss):
                            raise FloatingPointError(
                                f"training diverged: the loss became {batch_loss} at epoch "
                                f"{epoch + 1}/{epochs}, batch {batch + 1}/{n_batches}, with "
                                f"learning rate {getattr(optimizer, 'lr', '?')}. Lower the "
                                "learning rate or scale the inputs (e.g. to [0, 1])."
                            )
                        self._backward(grad, input_grad=False)
                        optimizer.step(params)
                        total_loss += batch_loss * (hi - lo)
                        seen += hi - lo
                        metrics = {"loss": total_loss / seen}
                        if classification:
                            correct += int(np.count_nonzero(out.argmax(axis=1) == yb))
                            metrics["acc"] = correct / seen
                        bar.update(batch + 1, seen, metrics)
                        if stop.requested:
                            raise KeyboardInterrupt
                    # The loss check cannot see the last step's update, nor statistics
                    # that only eval mode uses: check every parameter and buffer.
                    bad = self._non_finite_state()
                    if bad is not None:
                        raise FloatingPointError(
                            f"training diverged: {bad[0]} became NaN or infinite in epoch "
                            f"{epoch + 1}/{epochs}, with learning rate "
                            f"{getattr(optimizer, 'lr', '?')} (first: {bad[1]!r}). Lower the "
                            "learning rate or scale the inputs (e.g. to [0, 1])."
                        )
                    train_time = time.perf_counter() - start
                    logs = {"loss": total_loss / seen}
                    if classification:
                        logs["accuracy"] = correct / seen
                    if X_val is not None:
                        scores = self._evaluate(X_val, y_val, loss_fn, classification, 256)
                        logs.update({"val_" + k: v for k, v in scores.items()})
                    logs["time"] = time.perf_counter() - start
                    logs["lr"] = float(getattr(optimizer, "lr", math.nan))
                    history._append(epoch, logs)
                    bar.finish(seen, train_time, logs)
                    stop_now = False
                    for callback in callbacks:
                        if callback.on_epoch_end(epoch, dict(logs)) is True:
                            stop_now = True
                    if checkpoint is not None:
                        self._save_checkpoint(checkpoint, epoch + 1, run)
                    if stop_now:
                        history.stopped_by_callback = True
                        break
                    if stop.requested:  # Ctrl-C during validation or a callback
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                history.interrupted = True
                if bar is not None:
                    bar.close()
                sys.stderr.write(
                    f"Training interrupted at epoch {epoch + 1}/{epochs}, batch "
                    f"{batch + 1}/{n_batches}; the model keeps its current weights and the "
                    f"history holds the {len(history.epoch)} completed epoch(s).\n"
                )
                sys.stderr.flush()
            finally:
                if bar is not None:
                    bar.close()
        return history

    # -- inference ----------------------------------------------------------------------

    def _batches(self, X: np.ndarray, batch_size: int) -> Iterator[tuple[slice, np.ndarray]]:
        # Converting batch by batch keeps memory bounded for large uint8 inputs.
        for lo in range(0, X.shape[0], batch_size):
            sl = slice(lo, lo + batch_size)
            yield sl, np.asarray(X[sl], dtype=self.dtype)

    def decision_function(self, X: ArrayLike, batch_size: int = 256) -> np.ndarray:
        """Raw model outputs (logits for a classifier), computed in eval mode in batches.

        Returns
        -------
        ndarray of shape ``(n_samples, *output_shape)``, the model dtype
        """
        batch_size = _check_int(batch_size, "batch_size", 1)
        X, out_shape = self._check_X(X, convert=False)
        out = np.empty((X.shape[0], *out_shape), dtype=self.dtype)
        for sl, xb in self._batches(X, batch_size):
            out[sl] = self._forward(xb, False)
        return out

    def predict_proba(self, X: ArrayLike, batch_size: int = 256) -> np.ndarray:
        """Class probabilities: softmax of the logits, in eval mode, in batches.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), the model dtype; rows sum to 1.
        """
        logits = self.decision_function(X, batch_size)
        if logits.ndim != 2:
            raise ValueError(
                f"predict_proba needs (n_classes,) outputs per sample, got {logits.shape[1:]}"
            )
        return softmax(logits, axis=1)

    def predict(self, X: ArrayLike, batch_size: int = 256) -> np.ndarray:
        """Predicted class indices (argmax of the logits), shape (n_samples,)."""
        logits = self.decision_function(X, batch_size)
        if logits.ndim != 2:
            raise ValueError(
                f"predict needs (n_classes,) outputs per sample, got {logits.shape[1:]}"
            )
        labels: np.ndarray = logits.argmax(axis=1)
        return labels

    def _evaluate(
        self,
        X: np.ndarray,
        y: np.ndarray,
        loss_fn: LossFunction,
        classification: bool,
        batch_size: int,
    ) -> dict[str, float]:
        total, correct = 0.0, 0
        for sl, xb in self._batches(X, batch_size):
            out = self._forward(xb, False)
            batch_loss, _ = loss_fn(out, y[sl])
            total += batch_loss * xb.shape[0]
            if classification:
                correct += int(np.count_nonzero(out.argmax(axis=1) == y[sl]))
        n = X.shape[0]
        scores = {"loss": total / n}
        if classification:
            scores["accuracy"] = correct / n
        return scores

    def evaluate(
        self,
        X: ArrayLike,
        y: ArrayLike,
        batch_size: int = 256,
        loss: str | LossFunction | None = None,
    ) -> dict[str, float]:
        """Mean loss (and accuracy for cross-entropy) over ``(X, y)``, in eval mode.

        Parameters
        ----------
        X, y : as for :meth:`fit`
        batch_size : int, default 256
        loss : str, callable or None
            Defaults to the loss of the last :meth:`fit` (cross-entropy before any).

        Returns
        -------
        dict
            ``{"loss": float, "accuracy": float}`` (no ``accuracy`` for other losses).
        """
        batch_size = _check_int(batch_size, "batch_size", 1)
        loss_fn = get_loss(self._loss if loss is None else loss)
        classification = loss_fn is softmax_cross_entropy
        X, out_shape = self._check_X(X, convert=False)
        y = self._check_y(y, X.shape[0], out_shape, classification)
        return self._evaluate(X, y, loss_fn, classification, batch_size)

    # -- architecture and persistence ---------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Return the architecture as JSON-able data: layer class names and their configs."""
        return saving.model_config(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """Build a model (freshly initialized) from :meth:`get_config` output."""
        return cls(saving.layers_from_config(config))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the architecture and weights to one ``.npz`` file, atomically.

        The file is written under a temporary name in the same directory, flushed to
        disk, then renamed over ``path``: a crash or error mid-save leaves any previous
        file at ``path`` intact. ``path`` is used exactly as given (no suffix is added).
        """
        saving.save_model(self, path)

    def _save_checkpoint(self, path: str, done: int, run: dict[str, Any]) -> None:
        """Write a checkpoint of this model and ``run`` (:mod:`fastcnn.saving.checkpoints`)."""
        saving.save_checkpoint(self, path, done, run)

    def _resume(self, path: str, run: dict[str, Any]) -> int:
        """Restore a checkpoint into this model and ``run``; returns the epochs done."""
        return saving.resume(self, path, run)


_OPTIMIZER_NAMES = {"adam": Adam, "sgd": SGD}  # the names CNNClassifier(optimizer=) takes


def _normalized_weights(w: np.ndarray) -> np.ndarray:
    """Sample weights divided by their mean: a batch loss ``sum(w_b * loss_b) / n_b`` then
    averages, over an epoch, to ``sum(w * loss) / sum(w)`` (scikit-learn's weighted mean).
    """
    mean = float(w.mean())
    if mean <= 0.0:
        raise ValueError("sample_weight must have a positive sum, got all weights zero")
    return w / mean
