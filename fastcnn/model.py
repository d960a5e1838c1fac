"""``Sequential``, a stack of layers, and what every model shares (``BaseModel``).

``BaseModel`` holds training, inference, state and save/load for :class:`Sequential`
and the graph :class:`fastcnn.Model` (:mod:`fastcnn.graph`) alike.

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

import os
from collections.abc import Iterable, Iterator
from typing import Any, cast, overload

import numpy as np
from numpy.typing import ArrayLike

from fastcnn import saving, training
from fastcnn._validation import check_int, check_sample_weight, check_X, check_y
from fastcnn.callbacks import History
from fastcnn.layers import Layer
from fastcnn.losses import (
    LossFunction,
    get_loss,
    softmax,
    softmax_cross_entropy,
)
from fastcnn.optim import Optimizer
from fastcnn.saving import FORMAT_VERSION
from fastcnn.saving import load_model as load

__all__ = ["FORMAT_VERSION", "BaseModel", "History", "Sequential", "load"]

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


class BaseModel:
    """What every model has: training, inference, state and files, over its graph of layers.

    :class:`Sequential` and :class:`fastcnn.Model` inherit it. A subclass provides the
    layers (``layers``), ``_forward(x, training)``, ``_backward(grad, input_grad,
    retain_activations)``, :meth:`parameters`, ``_state_arrays()`` (every parameter and
    buffer by its stable name), :meth:`output_shape`, :attr:`dtype`, ``get_config`` and
    ``from_config``; the trainer (``fastcnn.training``) drives any of them alike.
    """

    layers: list[Any]
    optimizer: Any
    history: History | None
    stop_training: bool
    _loss: Any

    def _init_training_state(self) -> None:
        self.optimizer = None
        self.history = None
        self.stop_training = False  # set by a callback to stop fit after the epoch
        self._loss = "cross_entropy"

    # -- what a subclass provides -------------------------------------------------------

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the parameters."""
        raise NotImplementedError

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every learnable array with its gradient, as ``(param, grad)`` pairs."""
        raise NotImplementedError

    def output_shape(self, input_shape: Shape) -> Shape:
        """Shape of one output sample for one input sample of shape ``input_shape``."""
        raise NotImplementedError

    def layer_calls(self, input_shape: Any) -> list[tuple[Layer, Any, Shape]]:
        """Return each layer call with its input and output sample shapes, in run order."""
        raise NotImplementedError

    def _state_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _forward(self, x: np.ndarray, training: bool) -> np.ndarray:
        raise NotImplementedError

    def _backward(
        self, grad: np.ndarray, input_grad: bool, retain_activations: bool = False
    ) -> np.ndarray | None:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Return the architecture as JSON-able data."""
        raise NotImplementedError

    @property
    def num_params(self) -> int:
        """Number of learnable scalars."""
        return sum(layer.num_params for layer in self.layers)

    # -- state --------------------------------------------------------------------------

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

    # -- forward and backward -----------------------------------------------------------

    def forward(self, x: ArrayLike, training: bool = False) -> np.ndarray:
        """Output for a batch ``x`` (converted to the model dtype if needed).

        In training mode Dropout drops and BatchNorm uses (and updates) batch statistics.
        """
        return self._forward(np.asarray(x, dtype=self.dtype), training)

    def __call__(self, x: ArrayLike, training: bool = False) -> Any:
        """Return :meth:`forward`; called on graph nodes, record a node of a graph instead.

        A model called on a :class:`fastcnn.graph.Node` (or a list of them) is used as
        a layer of a :class:`fastcnn.Model` (see :func:`fastcnn.Input`).
        """
        if not isinstance(x, np.ndarray):
            from fastcnn import graph  # not at the top: fastcnn.graph imports this module

            if graph.is_symbolic(x):
                return graph.call(self, x)
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
        """Train with minibatch gradient descent; returns the per-epoch :class:`fastcnn.History`.

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
            atomically (:func:`fastcnn.load` reads it as a model). If it exists, training resumes
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
        x, out_shape = check_X(self, x, "x")
        y = check_y(self, y, x.shape[0], out_shape, loss_fn is softmax_cross_entropy)
        w = None if sample_weight is None else check_sample_weight(sample_weight, x.shape[0])
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
        batch_size = check_int(batch_size, "batch_size", 1)
        X, out_shape = check_X(self, X, convert=False)
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
        batch_size = check_int(batch_size, "batch_size", 1)
        loss_fn = get_loss(self._loss if loss is None else loss)
        classification = loss_fn is softmax_cross_entropy
        X, out_shape = check_X(self, X, convert=False)
        y = check_y(self, y, X.shape[0], out_shape, classification)
        return training.evaluate(self, X, y, loss_fn, classification, batch_size)

    # -- persistence --------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the architecture and weights to one ``.npz`` file, atomically.

        The file is written under a temporary name in the same directory, flushed to
        disk, then renamed over ``path``: a crash or error mid-save leaves any previous
        file at ``path`` intact. ``path`` is used exactly as given (no suffix is added).
        """
        saving.save_model(self, path)


class Sequential(BaseModel):
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
        self._init_training_state()
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

    def output_shape(self, input_shape: Shape) -> Shape:
        """Shape of one output sample for one input sample of shape ``input_shape``."""
        shape = tuple(int(s) for s in input_shape)
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise ValueError(f"layer {i}: {exc}") from None
        return shape

    def layer_calls(self, input_shape: Shape) -> list[tuple[Layer, Shape, Shape]]:
        """Return each layer with the input and output sample shapes it is called on."""
        shape, calls = tuple(int(s) for s in input_shape), []
        for layer in self.layers:
            out = layer.output_shape(shape)
            calls.append((layer, shape, out))
            shape = out
        return calls

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

    # -- architecture and persistence ---------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Return the architecture as JSON-able data: layer class names and their configs."""
        return saving.model_config(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """Build a model (freshly initialized) from :meth:`get_config` output."""
        return cls(saving.layers_from_config(config))
