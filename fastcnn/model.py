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
more than its own size (see "Reading model files" below).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import uuid
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from typing import Any, cast, overload

import numpy as np
from numpy.typing import ArrayLike

from fastcnn import training
from fastcnn.callbacks import History
from fastcnn.layers import (
    LAYER_REGISTRY,
    Dropout,
    Layer,
    _allocation_budget,
    layer_from_config,
)
from fastcnn.losses import (
    LossFunction,
    _check_sample_weight,
    get_loss,
    softmax,
    softmax_cross_entropy,
)
from fastcnn.optim import SGD, Adam, LRScheduler, Optimizer

__all__ = ["FORMAT_VERSION", "History", "Sequential", "load"]

#: Version of the model file layout written by :meth:`fastcnn.Sequential.save`.
FORMAT_VERSION = 1
_FORMAT_KEY = "__fastcnn_format__"
_ARCH_KEY = "__architecture__"
_ARCH_KIND = "fastcnn.Sequential"
_CKPT_KEY = "__checkpoint__"  # training state in a fit checkpoint; load() skips it

Shape = tuple[int, ...]


# ---------------------------------------------------------------------------------------
# The model


class _LayerIndex(dict[int, Layer]):
    """Map ``id(layer) -> layer`` for a model's layers, with the first layer dtype.

    What :meth:`Sequential.add` checks a new layer against: the layers already there,
    and the dtype of the first one that has a dtype.

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
        self.optimizer: Any = None
        self.history: History | None = None
        self.stop_training = False  # set by a callback to stop fit after the epoch
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

    def non_finite_state(self) -> tuple[str, str] | None:
        """Name the first array of the model's state that holds NaN or infinity.

        Returns ``("parameters" or "buffers", name)``, or None when every parameter and
        buffer is finite: what ``fit`` checks after every epoch.
        """
        for i, layer in enumerate(self.layers):
            for kind, arrays in (("parameters", layer.params), ("buffers", layer.buffers)):
                for name, array in arrays.items():
                    if not np.isfinite(array).all():
                        return kind, f"{i}.{name}"
        return None

    def state_dict(self) -> dict[str, np.ndarray]:
        """Return copies of every parameter and buffer (BatchNorm statistics) by stable name."""
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
        """Return a table of the layers with their output shapes and parameter counts.

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
        """Return :meth:`forward`."""
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
        callbacks: object = None,  # Callback(s), checked by callbacks.check_callbacks
        checkpoint: str | os.PathLike[str] | None = None,
        sample_weight: ArrayLike | None = None,
    ) -> History:
        """Train with minibatch gradient descent; returns the per-epoch :class:`History`.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Any real dtype (e.g. uint8 images); converted once to the model dtype.
        y : array-like of shape (n_samples,)
            Class indices for ``loss='cross_entropy'``; for ``'mse'``, targets of the
            model's output shape.
        epochs, batch_size : int, default 10 and 32
            The last batch of an epoch may be smaller.
        optimizer : Optimizer, {'adam', 'sgd'} or None
            Kept as ``self.optimizer``: the next ``fit`` (or :meth:`train_step`) goes on
            with its state. A name makes one with the class defaults. None: the previous
            one, else ``Adam(1e-3)``.
        loss : {'cross_entropy', 'mse'} or callable, default 'cross_entropy'
            A callable takes ``(output, y_batch)`` and returns ``(loss, grad_output)``.
            Cross-entropy works on logits: the model ends with a Dense layer, no softmax.
        validation_data : (X_val, y_val) or None
            Evaluated after every epoch (``val_loss``, ``val_accuracy``).
        validation_split : float in [0, 1), default 0.0
            Fraction of the samples held out at random for validation instead.
        shuffle : bool, default True
            Reshuffle the training samples every epoch.
        random_state : int, numpy.random.Generator, numpy.random.RandomState or None
            Seeds the split, the shuffling and the Dropout masks.
        verbose : {0, 1, 2}, default 1
            0 silent; 1 a progress bar on stderr, redrawn live on a terminal, one line per
            epoch otherwise; 2 one line per epoch (:class:`~fastcnn.callbacks.ProgbarLogger`).
        callbacks : list of :class:`~fastcnn.callbacks.Callback`, optional
            Called around every epoch and batch. An object with only
            ``on_epoch_end(epoch, logs)`` works too (a schedule of :mod:`fastcnn.optim`).
        checkpoint : path or None
            After every epoch, save the model and the training state to this file,
            atomically (:func:`load` reads it as a model). If it exists, training resumes
            after its last epoch, to exactly the model of an uninterrupted run (with
            ``validation_split``, pass ``random_state``). ``epochs`` counts those done.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weight of each sample's loss, divided by the mean weight: the
            loss is ``sum(w * loss) / sum(w)``. A callable ``loss`` is then called with
            ``sample_weight=w_batch``. Validation scores are unweighted.

        Raises
        ------
        FloatingPointError
            If the loss (before it is applied), or at the end of an epoch a parameter or
            buffer, becomes NaN or infinite; the message names it, the epoch and the rate.

        Notes
        -----
        Ctrl-C stops training after the current batch, returning the History so far.
        """
        options = training.fit_options(self, epochs=epochs, batch_size=batch_size,
            optimizer=optimizer, loss=loss, validation_data=validation_data,
            validation_split=validation_split, shuffle=shuffle, verbose=verbose,
            callbacks=callbacks, checkpoint=checkpoint,
            seeded=random_state is not None)  # fmt: skip
        if not self.layers:
            raise ValueError("the model has no layers; add some before fit")
        rng = training.make_rng(random_state)
        data, val = training.fit_data(self, X, y, sample_weight, validation_data, rng, options)
        self._loss = loss
        return training.fit(self, data, val, rng, options)

    def train_step(
        self,
        x: ArrayLike,
        y: ArrayLike,
        sample_weight: ArrayLike | None = None,
        *,
        optimizer: Optimizer | str | None = None,
        loss: str | LossFunction | None = None,
    ) -> float:
        """One training step on a batch: forward (training mode), loss, backward, update.

        What :meth:`fit` does for each batch, for loops of your own. The batch is
        checked and converted as :meth:`fit` checks ``X`` and ``y``.

        Parameters
        ----------
        x, y : array-like
            One batch, as ``X`` and ``y`` of :meth:`fit`.
        sample_weight : array-like of shape (n_samples,), optional
            Weight of each sample's loss, used as given (``fit`` divides its weights
            by their mean over the data first).
        optimizer : Optimizer, {'adam', 'sgd'} or None
            None: the model's optimizer (that of the last ``fit`` or ``train_step``),
            else a new ``Adam(1e-3)``. One given is kept as ``self.optimizer``.
        loss : {'cross_entropy', 'mse'}, callable or None
            None: the loss of the last ``fit`` or ``train_step`` (cross-entropy before
            any). One given is kept for the next calls and :meth:`evaluate`.

        Returns
        -------
        float
            The batch's loss, before the update.

        Raises
        ------
        FloatingPointError
            If the loss is NaN or infinite; the parameters are then left unchanged
            (the forward pass has updated BatchNorm's running statistics).
        """
        optimizer = training.resolve_optimizer(optimizer, self.optimizer)
        loss = self._loss if loss is None else loss
        loss_fn = get_loss(loss)
        x, out_shape = training.check_X(self, x, "x")
        y = training.check_y(self, y, x.shape[0], out_shape, loss_fn is softmax_cross_entropy)
        w = None if sample_weight is None else _check_sample_weight(sample_weight, x.shape[0])
        self.optimizer, self._loss = optimizer, loss
        return training.train_step(self, optimizer, loss_fn, x, y, w)[0]

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
        batch_size = training.check_int(batch_size, "batch_size", 1)
        X, out_shape = training.check_X(self, X, convert=False)
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
        batch_size = training.check_int(batch_size, "batch_size", 1)
        loss_fn = get_loss(self._loss if loss is None else loss)
        classification = loss_fn is softmax_cross_entropy
        X, out_shape = training.check_X(self, X, convert=False)
        y = training.check_y(self, y, X.shape[0], out_shape, classification)
        return training.evaluate(self, X, y, loss_fn, classification, batch_size)

    # -- architecture and persistence ---------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """The architecture as JSON-able data: layer class names and their configs."""
        layers = []
        for i, layer in enumerate(self.layers):
            name = type(layer).__name__
            if LAYER_REGISTRY.get(name) is not type(layer):
                raise ValueError(
                    f"layer {i} ({layer!r}) is not a registered layer class; register it "
                    "with fastcnn.layers.register_layer to save it"
                )
            layers.append({"class": name, "config": layer.get_config()})
        return {"kind": _ARCH_KIND, "layers": layers}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """Build a model (freshly initialized) from :meth:`get_config` output."""
        if not isinstance(config, dict) or config.get("kind") != _ARCH_KIND:
            raise ValueError(f"not a {_ARCH_KIND} architecture: {str(config)[:200]}")
        specs = config.get("layers")
        if not isinstance(specs, list):
            raise ValueError("architecture has no 'layers' list")
        if len(specs) > _MAX_FILE_LAYERS:  # before building any
            raise ValueError(
                f"the architecture has {len(specs):,} layers; a model file may hold at "
                f"most {_MAX_FILE_LAYERS:,}"
            )
        layers = []
        for i, spec in enumerate(specs):
            if not isinstance(spec, dict) or set(spec) != {"class", "config"}:
                raise ValueError(
                    f"layer {i}: expected {{'class': ..., 'config': ...}}, got {spec!r}"
                )
            try:
                layers.append(layer_from_config(spec["class"], spec["config"]))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"layer {i} ({spec['class']!r}): {exc}") from None
        return cls(layers)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the architecture and weights to one ``.npz`` file, atomically.

        The file is written under a temporary name in the same directory, flushed to
        disk, then renamed over ``path``: a crash or error mid-save leaves any previous
        file at ``path`` intact. ``path`` is used exactly as given (no suffix is added).
        """
        _atomic_savez(os.fspath(path), self._file_arrays())

    def _file_arrays(self) -> dict[str, np.ndarray]:
        if len(self.layers) > _MAX_FILE_LAYERS:
            raise ValueError(
                f"the model has {len(self.layers):,} layers; a model file may hold at most "
                f"{_MAX_FILE_LAYERS:,} (load would refuse this one)"
            )
        try:
            architecture = json.dumps(self.get_config())
        except TypeError as exc:
            raise ValueError(f"the architecture is not JSON-serializable: {exc}") from None
        arrays = {
            _FORMAT_KEY: np.array(FORMAT_VERSION, dtype=np.int64),
            _ARCH_KEY: np.array(architecture),  # a numpy unicode scalar, never an object
        }
        arrays.update(self._state_arrays())
        return arrays

    # -- checkpoints --------------------------------------------------------------------

    def _save_checkpoint(self, path: str, done: int, run: dict[str, Any]) -> None:
        """Model file plus what resuming needs: optimizer state, generators, history."""
        optimizer, rng, history = run["optimizer"], run["rng"], run["history"]
        dropouts = [layer for layer in self.layers if isinstance(layer, Dropout)]
        schedulers = [cb for cb in run["callbacks"] if isinstance(cb, LRScheduler)]
        arrays = self._file_arrays()
        slots = []
        for i, state in enumerate(optimizer._state):
            kinds: dict[str, str | None] = {}
            for key, value in state.items():
                if isinstance(value, np.ndarray):
                    arrays[f"{_CKPT_KEY}.optimizer.{i}.{key}"] = value
                    kinds[key] = "array"
                elif value is None:
                    kinds[key] = None
            slots.append(kinds)
        meta = {
            "epochs_done": done,
            "n_samples": run["n_samples"],
            "batch_size": run["batch_size"],
            "optimizer": {
                "class": type(optimizer).__name__,
                "lr": optimizer.lr,
                "n_steps": optimizer.n_steps,
                "state": slots,
            },
            "rng": rng.bit_generator.state,
            "dropout_rngs": [layer.rng.bit_generator.state for layer in dropouts],
            "schedulers": [scheduler.last_epoch for scheduler in schedulers],
            "history": {"history": history.history, "epoch": history.epoch},
        }
        arrays[_CKPT_KEY] = np.array(json.dumps(meta, default=_jsonable))
        _atomic_savez(path, arrays)

    def _resume(self, path: str, run: dict[str, Any]) -> int:
        """Restore the state saved by :meth:`_save_checkpoint`; returns the epochs done.

        The file is read as :func:`load` reads one: its architecture must be this
        model's, and its entries those that this model and its training state imply.
        """
        where = f"checkpoint {path!r}"
        with _ModelFile(path) as file:
            if file.config != json.loads(json.dumps(self.get_config())):
                raise ValueError(
                    f"{where} was written for a different architecture; delete it or pass "
                    "another checkpoint path to start afresh"
                )
            if file.meta is None:
                raise ValueError(
                    f"{where} is a model file without training state (not a checkpoint)"
                )
            try:
                meta = file.meta
                self._check_run(meta, run)
                expected = _expected_arrays(self, meta)
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{where} cannot be resumed from: {exc}") from None
            file.check(expected)
            arrays = file.read(expected)
        try:
            restored = self._optimizer_state(meta["optimizer"]["state"], arrays)
            done = self._restore_run(meta, run)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where} cannot be resumed from: {exc}") from None
        self.load_state_dict({key: arrays[key] for key in self._state_arrays()})
        optimizer, saved = run["optimizer"], meta["optimizer"]
        optimizer._state = restored
        optimizer.n_steps = int(saved["n_steps"])
        optimizer.lr = float(saved["lr"])
        return done

    def _check_run(self, meta: dict[str, Any], run: dict[str, Any]) -> None:
        """Refuse a checkpoint of another run: other data, batch size or optimizer."""
        for key in ("n_samples", "batch_size"):
            if meta[key] != run[key]:
                raise ValueError(
                    f"it was written for {key}={meta[key]}, got {key}={run[key]}; "
                    "resume with the same data and batch size"
                )
        optimizer, saved = run["optimizer"], meta["optimizer"]
        if saved["class"] != type(optimizer).__name__:
            raise ValueError(
                f"it was written with a {saved['class']} optimizer, got {optimizer!r}"
            )
        if len(saved["state"]) != len(optimizer._state):
            raise ValueError(f"it holds optimizer state for {len(saved['state'])} parameters")

    def _optimizer_state(
        self, slots: list[dict[str, str | None]], arrays: dict[str, np.ndarray]
    ) -> list[dict[str, Any]]:
        """The optimizer's per-parameter state from a checkpoint's checked arrays."""
        restored = []
        for i, (kinds, (param, _)) in enumerate(zip(slots, self.parameters(), strict=True)):
            slot: dict[str, Any] = {}
            for key, kind in kinds.items():
                array = arrays[f"{_CKPT_KEY}.optimizer.{i}.{key}"] if kind else None
                slot[key] = None if array is None else array.astype(param.dtype)  # a copy
            restored.append(slot)
        return restored

    def _restore_run(self, meta: dict[str, Any], run: dict[str, Any]) -> int:
        """Restore the generators, schedulers and history; returns the epochs done."""
        dropouts = [layer for layer in self.layers if isinstance(layer, Dropout)]
        schedulers = [cb for cb in run["callbacks"] if isinstance(cb, LRScheduler)]
        if len(meta["dropout_rngs"]) != len(dropouts):
            raise ValueError(f"it holds {len(meta['dropout_rngs'])} dropout generators")
        run["rng"].bit_generator.state = meta["rng"]
        for layer, rng_state in zip(dropouts, meta["dropout_rngs"], strict=True):
            layer.rng.bit_generator.state = rng_state
        for scheduler, last_epoch in zip(schedulers, meta["schedulers"], strict=False):
            scheduler.last_epoch = last_epoch
        history = run["history"]
        history.history.update(meta["history"]["history"])
        history.epoch[:] = meta["history"]["epoch"]
        return int(meta["epochs_done"])


_OPTIMIZER_NAMES = {"adam": Adam, "sgd": SGD}  # the names CNNClassifier(optimizer=) takes


def _normalized_weights(w: np.ndarray) -> np.ndarray:
    """Sample weights divided by their mean: a batch loss ``sum(w_b * loss_b) / n_b`` then
    averages, over an epoch, to ``sum(w * loss) / sum(w)`` (scikit-learn's weighted mean).
    """
    mean = float(w.mean())
    if mean <= 0.0:
        raise ValueError("sample_weight must have a positive sum, got all weights zero")
    return w / mean


def _jsonable(value: object) -> Any:
    if isinstance(value, np.ndarray | np.generic):  # e.g. an MT19937 generator's key
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as for a plain open().
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:  # name the caller's path, not the hidden temporary file
        reason = f"no directory {directory!r}" if not os.path.isdir(directory) else exc.strerror
        raise type(exc)(exc.errno, f"cannot save to {path!r}: {reason}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            # The keys are array names, never savez's own keyword allow_pickle.
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # persist the rename itself (POSIX)
        with contextlib.suppress(OSError):
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


# ---------------------------------------------------------------------------------------
# Reading model files
#
# A file is read in an order that lets nothing in it cost more than the architecture it
# declares needs:
#   1. the zip directory: every name once (no "k" beside "k.npy"), and the sizes it
#      declares against the size of the file itself;
#   2. the small metadata entries (format version, architecture, a checkpoint's training
#      state), each one capped;
#   3. the layers, at most _MAX_FILE_LAYERS of them, built under an allocation budget;
#   4. the names of the array entries against those the architecture (and a checkpoint's
#      optimizer state) implies, then each one's .npy header (shape, dtype) and the size
#      the directory declares for it;
#   5. only then the array data, with allow_pickle=False.

#: Most layers a model file may hold. The deepest published CNNs have about a thousand
#: (ResNet-1202); ten times that is far beyond any real model, yet small enough that a
#: hostile file's architecture is cheap to refuse. Sequential itself takes any number.
_MAX_FILE_LAYERS = 10_000
#: Most bytes of a text entry (the architecture, a checkpoint's training state), stored
#: as UTF-32: 4M characters, 400 per layer at the layer cap.
_MAX_TEXT_BYTES = 16 << 20
#: Most the entries may declare uncompressed: this many times the file's size, plus
#: _EXPANSION_SLACK bytes. fastcnn stores arrays uncompressed (ratio 1) and deflate
#: shrinks float weights by about 10%, but a deflated run of zeros expands a thousandfold:
#: that is how a small file would ask for gigabytes.
_MAX_EXPANSION = 8
_EXPANSION_SLACK = 1 << 20
#: Most optimizer arrays per parameter in a checkpoint (Adam keeps 2, SGD's momentum 1).
_MAX_STATE_ARRAYS = 4
#: Elements the layers may allocate beyond what the file's array entries declare, so that
#: a merely mismatched file gets the precise "must have shape" message instead.
_LOAD_SLACK = 1 << 22

# What reading a damaged archive can raise: zipfile also raises NotImplementedError (a
# flipped compression or flag field) and RuntimeError ("encrypted"), both RuntimeErrors.
_READ_ERRORS = (
    ValueError, OSError, EOFError, KeyError, RuntimeError, OverflowError, zipfile.BadZipFile,
    zlib.error,
)  # fmt: skip
_META_KEYS = (_FORMAT_KEY, _ARCH_KEY, _CKPT_KEY)

Expected = dict[str, tuple[Shape, np.dtype]]  # array name -> (shape, dtype)


class _ModelFile:
    """A model file open for reading, in the order above; a context manager.

    Opening reads steps 1 and 2: ``config`` (the architecture) and ``meta`` (a
    checkpoint's training state, None in a plain model file). :meth:`build`,
    :meth:`check` and :meth:`read` do steps 3 to 5.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._zip: zipfile.ZipFile | None = None
        self._file = open(name, "rb")  # closed by close(), on error too
        try:
            self._zip = self._open_zip()
            self._entries = self._directory()
            self._check_sizes()
            self._check_version()
            self.config = self._json(_ARCH_KEY, "architecture")
            self.meta = self._json(_CKPT_KEY, "training state") if self._has(_CKPT_KEY) else None
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> _ModelFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        self._file.close()

    @property
    def _opened(self) -> zipfile.ZipFile:
        assert self._zip is not None, "__init__ opens the archive before any read"
        return self._zip

    def _has(self, key: str) -> bool:
        return key in self._entries

    # -- step 1: the zip directory ------------------------------------------------------

    def _open_zip(self) -> zipfile.ZipFile:
        magic = self._file.read(6)
        self._file.seek(0)
        if magic == b"\x93NUMPY":
            raise ValueError(f"{self.name!r} is not a fastcnn model file: it holds a single array")
        try:
            return zipfile.ZipFile(self._file)
        except _READ_ERRORS as exc:
            what = (
                "cannot be read as an .npz archive"
                if magic.startswith(b"PK")
                else "is not an .npz archive (fastcnn never loads pickled data)"
            )
            raise ValueError(
                f"{self.name!r} is not a fastcnn model file: it {what} "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def _directory(self) -> dict[str, zipfile.ZipInfo]:
        """Array name -> zip entry. An array stored twice, or as both ``k`` and ``k.npy``
        (numpy's two spellings of one name), is refused: which one is read is undefined.
        """
        infos = self._opened.infolist()
        counts = collections.Counter(info.filename for info in infos)
        entries: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if counts[info.filename] > 1:
                raise ValueError(
                    f"{self.name!r}: the archive holds an entry named {info.filename!r} "
                    f"{counts[info.filename]} times"
                )
            key = info.filename.removesuffix(".npy")
            if key in entries:
                first, second = sorted((entries[key].filename, info.filename))
                raise ValueError(
                    f"{self.name!r}: entries {first!r} and {second!r} both hold the array {key!r}"
                )
            entries[key] = info
        if _FORMAT_KEY not in entries or _ARCH_KEY not in entries:
            raise ValueError(
                f"{self.name!r} is not a fastcnn model file: it has no {_FORMAT_KEY!r} / "
                f"{_ARCH_KEY!r} entries (found {sorted(entries)[:10]})"
            )
        return entries

    def _check_sizes(self) -> None:
        """Refuse entries that declare more data than the file can hold: compressed, more
        than its size; uncompressed, more than _MAX_EXPANSION times it (a zip bomb).
        """
        length = os.fstat(self._file.fileno()).st_size
        infos = self._entries.values()
        stored = sum(info.compress_size for info in infos)
        if stored > length:
            raise ValueError(
                f"{self.name!r}: its entries declare {stored:,} bytes of data but the file "
                f"has {length:,} bytes (truncated, or entries that overlap)"
            )
        total = sum(info.file_size for info in infos)
        if total > _MAX_EXPANSION * length + _EXPANSION_SLACK:
            key, largest = max(self._entries.items(), key=lambda item: item[1].file_size)
            raise ValueError(
                f"{self.name!r}: entry {key!r} declares {largest.file_size:,} bytes "
                f"uncompressed, and all entries {total:,} bytes: more than {_MAX_EXPANSION} "
                f"times the file's {length:,} bytes, which no model file needs (a zip bomb?)"
            )

    # -- step 2: the metadata -----------------------------------------------------------

    def _check_version(self) -> None:
        shape, dtype = self._header(_FORMAT_KEY)
        if shape != () or dtype.kind not in "iu" or dtype.itemsize > 8:
            raise ValueError(
                f"{self.name!r}: malformed format version entry (shape {shape}, dtype {dtype})"
            )
        version = int(self._array(_FORMAT_KEY))
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{self.name!r} uses model file format {version}; this fastcnn reads format "
                f"{FORMAT_VERSION}"
                + (" (it was written by a newer fastcnn)" if version > FORMAT_VERSION else "")
            )

    def _json(self, key: str, what: str) -> Any:
        """The JSON document in the text entry ``key``."""
        shape, dtype = self._header(key)
        if shape != () or dtype.kind not in "US":
            raise ValueError(f"{self.name!r}: the {what} entry is not a string")
        if dtype.itemsize > _MAX_TEXT_BYTES:
            raise ValueError(
                f"{self.name!r}: entry {key!r} holds a string of {dtype.itemsize:,} bytes; a "
                f"model file's {what} may take at most {_MAX_TEXT_BYTES:,}"
            )
        text = self._array(key).item()
        try:
            return json.loads(text.decode() if isinstance(text, bytes) else text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{self.name!r}: invalid {what}: {exc}") from None

    # -- steps 3 to 5: the layers and the arrays ----------------------------------------

    def build(self) -> Sequential:
        """The model of the architecture, freshly initialized. Its layers may allocate
        little more than the array entries declare (checked in step 1).
        """
        declared = sum(
            info.file_size for key, info in self._entries.items() if not key.startswith(_META_KEYS)
        )
        budget = declared // 4 + _LOAD_SLACK  # 4 bytes: float32, the smallest element
        try:
            with _allocation_budget(budget):
                return Sequential.from_config(self.config)
        except (ValueError, TypeError, RecursionError) as exc:
            raise ValueError(f"{self.name!r}: invalid architecture: {exc}") from None

    def check(self, expected: Expected) -> None:
        """Refuse unless the array entries are exactly ``expected``, each with that shape
        and dtype (in either byte order) in its header. Reads the headers only.
        """
        present = {key for key in self._entries if key not in _META_KEYS}
        missing, extra = sorted(expected.keys() - present), sorted(present - expected.keys())
        if missing or extra:
            raise ValueError(
                f"{self.name!r}: arrays do not match the architecture: missing {missing}, "
                f"unexpected {extra}"
            )
        for key, (shape, dtype) in expected.items():
            held_shape, held_dtype = self._header(key)
            if held_shape != shape or held_dtype.newbyteorder("=") != dtype:
                raise ValueError(
                    f"{self.name!r}: array {key!r} must have shape {shape} and dtype {dtype}, "
                    f"got {held_shape} {held_dtype}"
                )

    def read(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The arrays ``keys``, which :meth:`check` has accepted."""
        return {key: self._array(key) for key in keys}

    # -- one entry ----------------------------------------------------------------------

    def _corrupt(self, key: str, exc: BaseException) -> ValueError:
        return ValueError(
            f"{self.name!r}: entry {key!r} is truncated or corrupt ({type(exc).__name__}: {exc})"
        )

    def _header(self, key: str) -> tuple[Shape, np.dtype]:
        """Shape and dtype in the .npy header of entry ``key``, which must describe exactly
        the size the zip directory declares for it. Reads the header only.
        """
        info = self._entries[key]
        try:
            with self._opened.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                header = f.tell()
        except _READ_ERRORS as exc:
            raise self._corrupt(key, exc) from exc
        if dtype.hasobject:
            raise ValueError(
                f"{self.name!r}: entry {key!r} holds pickled Python objects; fastcnn never "
                "loads those (unpickling can execute code)"
            )
        held = info.file_size - header
        declared = math.prod(shape) * dtype.itemsize
        if declared != held:
            raise self._corrupt(
                key,
                ValueError(
                    f"its header declares an array of shape {shape} and dtype {dtype} "
                    f"({declared:,} bytes) but it holds {held:,} bytes"
                ),
            )
        return shape, dtype

    def _array(self, key: str) -> np.ndarray:
        """The array in entry ``key``, whose header :meth:`_header` has accepted."""
        try:
            with self._opened.open(self._entries[key]) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise self._corrupt(key, exc) from exc


def _expected_arrays(model: Sequential, meta: dict[str, Any] | None) -> Expected:
    """The arrays a file of ``model`` holds: its state, and with a checkpoint's training
    state ``meta`` the optimizer arrays that declares.
    """
    expected = {name: (a.shape, a.dtype) for name, a in model._state_arrays().items()}
    if meta is None:
        return expected
    try:
        slots = meta["optimizer"]["state"]
    except (KeyError, TypeError):
        raise ValueError("the training state has no optimizer state") from None
    params = model.parameters()
    if not isinstance(slots, list) or len(slots) != len(params):
        count = len(slots) if isinstance(slots, list) else repr(slots)[:50]
        raise ValueError(
            f"it holds optimizer state for {count} parameters, the architecture has {len(params)}"
        )
    for i, (slot, (param, _)) in enumerate(zip(slots, params, strict=True)):
        kinds = slot.values() if isinstance(slot, dict) else None
        if kinds is None or any(kind not in ("array", None) for kind in kinds):
            raise ValueError(f"malformed optimizer state for parameter {i}: {str(slot)[:100]}")
        keys = [key for key, kind in slot.items() if kind == "array"]
        if len(keys) > _MAX_STATE_ARRAYS:
            raise ValueError(
                f"the training state declares {len(keys)} arrays for parameter {i}; an "
                f"optimizer keeps at most {_MAX_STATE_ARRAYS} per parameter"
            )
        for key in keys:
            expected[f"{_CKPT_KEY}.optimizer.{i}.{key}"] = (param.shape, param.dtype)
    return expected


def load(path: str | os.PathLike[str]) -> Sequential:
    """Load a model written by :meth:`Sequential.save` (or a ``fit`` checkpoint).

    Nothing in the file is executed: arrays are read with ``allow_pickle=False`` and layers
    are rebuilt only from classes in :data:`fastcnn.layers.LAYER_REGISTRY`. Before any
    array data is read, the names, shapes and dtypes of the file's entries are checked
    against its architecture, which may have at most 10,000 layers, and the sizes they
    declare against the size of the file: a small crafted file cannot make us allocate
    or decompress more than a few times its own size.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        If ``path`` cannot be opened.
    ValueError
        If the file is not a fastcnn model, is truncated or corrupt, contains a pickled
        object, has an unsupported format version, or its arrays do not match its
        architecture (names, shapes, dtypes), or it declares more data than it can hold
        (a zip bomb). The message names the file and the problem.
    """
    name = os.fspath(path)
    with _ModelFile(name) as file:
        model = file.build()
        try:
            expected = _expected_arrays(model, file.meta)
        except ValueError as exc:
            raise ValueError(f"{name!r}: invalid training state: {exc}") from None
        file.check(expected)
        state = file.read(model._state_arrays())  # a checkpoint's optimizer state is not
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise ValueError(f"{name!r}: {exc}") from None
    return model
