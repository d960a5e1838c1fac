"""The base class of every layer, and the allocation budget a model file is held to."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

from fastcnn._validation import (
    RngLike,
    check_bool,
    check_dtype,
    check_rng,
)

Shape = tuple[int, ...]


# ---------------------------------------------------------------------------------------
# Allocation budget: what a model file may make us allocate

# Elements that parameters and buffers may still take, or None for no limit. Set by
# fastcnn.load (fastcnn.saving.npz) while it rebuilds the layers a file names, so that a
# crafted file declaring enormous layers is refused before their arrays are allocated.
_budget: ContextVar[list[int] | None] = ContextVar("fastcnn_allocation_budget", default=None)


@contextlib.contextmanager
def allocation_budget(n_elements: int) -> Iterator[None]:
    """Limit what the layers built within the block may allocate.

    They may allocate at most ``n_elements`` parameter and buffer elements in all; a
    layer that would exceed it raises ValueError instead. Used by the model file reader.
    """
    token = _budget.set([int(n_elements)])
    try:
        yield
    finally:
        _budget.reset(token)


def reserve(shape: Shape, what: str) -> None:
    """Take ``shape``'s elements from the budget, or refuse ``what`` when it is spent."""
    budget = _budget.get()
    if budget is None:
        return
    count = math.prod(shape)
    if count > budget[0]:
        raise ValueError(
            f"{what} of shape {shape} ({count:,} elements) is far more than the model "
            f"file holds ({budget[0]:,} elements left)"
        )
    budget[0] -= count


# ---------------------------------------------------------------------------------------
# Base class


class Layer:
    """Base class: a differentiable function of a batch, with named parameters.

    Subclasses implement ``forward``, ``backward`` and, when the shape changes,
    ``_output_shape``; layers with parameters also ``reset_parameters``.

    Attributes
    ----------
    params : dict of str to ndarray
        Learnable arrays by name (``"weight"``, ``"bias"``, ``"gamma"``, ...).
    grads : dict of str to ndarray
        Gradient of the loss with respect to each parameter, same keys and shapes;
        overwritten (not accumulated) by every ``backward``.
    buffers : dict of str to ndarray
        Non-learnable state that is saved with the model (BatchNorm running statistics).
    dtype : numpy.dtype or None
        dtype of the parameters and of the accepted input; None for parameter-free layers,
        which follow their input.
    needs_input_grad : bool
        When False, ``backward`` may skip the input gradient and return None. A
        :class:`~fastcnn.Sequential` clears it on its first layer, whose input gradient
        nobody uses.
    """

    dtype: np.dtype | None = None
    #: True for a layer whose ``rng`` draws in training (Dropout, the augmentation layers):
    #: ``fit(random_state=...)`` and CNNClassifier reseed it, checkpoints save its state.
    reseeds: ClassVar[bool] = False

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.needs_input_grad = True
        # What backward needs from the last forward (references, not copies).
        self._cache: dict[str, Any] = {}
        self._checked_shape: Shape | None = None

    # -- the interface ------------------------------------------------------------------

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for a batch ``x``; ``training`` selects train-mode behaviour."""
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Given dLoss/dOutput of the last ``forward``, fill ``grads`` and return dLoss/dInput."""
        raise NotImplementedError

    def output_shape(self, input_shape: Shape) -> Shape:
        """Shape of one output sample for one input sample of shape ``input_shape``.

        Raises ValueError, naming this layer, when the layer cannot take that shape.
        """
        shape = tuple(int(s) for s in input_shape)
        return self._output_shape(shape, shape, batched=False)

    def reset_parameters(self, rng: RngLike = None) -> None:
        """Re-initialize the parameters in place (no-op for parameter-free layers).

        ``rng`` defaults to the generator the layer was built with.
        """

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values (``type(self)(**config)``)."""
        return {}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)`` (PyTorch's convention)."""
        return ""

    # -- shared machinery ---------------------------------------------------------------

    def __call__(self, x: Any, training: bool = False) -> Any:
        """Run :meth:`forward`; called on graph nodes, record a node of a graph instead.

        ``layer(node)`` or ``layer([node, node])``, nodes from :func:`fastcnn.Input` or
        other layer calls, returns the new :class:`fastcnn.graph.Node` that a
        :class:`fastcnn.Model` is built from; a layer called twice shares its weights.
        """
        if not isinstance(x, np.ndarray):
            from fastcnn import graph  # not at the top: fastcnn.graph imports the layers

            if graph.is_symbolic(x):
                return graph.call(self, x)
        return self.forward(x, training)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    @property
    def num_params(self) -> int:
        """Number of learnable scalars."""
        return sum(p.size for p in self.params.values())

    def __getstate__(self) -> dict[str, Any]:
        # Pickles (joblib, deepcopy) carry the weights, never the last batch's activations.
        state = self.__dict__.copy()
        state["_cache"] = {}
        state["_checked_shape"] = None
        return state

    def _add_param(self, name: str, shape: Shape) -> np.ndarray:
        reserve(shape, f"parameter {name!r}")
        self.params[name] = np.zeros(shape, dtype=self.dtype)
        self.grads[name] = np.zeros(shape, dtype=self.dtype)
        return self.params[name]

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        """Check one sample's ``shape`` and return the output sample's shape.

        ``received`` is what the caller passed (the whole batch shape when ``batched``),
        for the error message. The default suits element-wise layers.
        """
        return shape

    def _shape_error(self, expected: str, received: Shape, batched: bool) -> ValueError:
        # `expected` describes one sample, e.g. "(1, H, W)"; batch inputs get an N in front.
        if batched:
            expected = ("(N, " + expected[1:]).replace(",)", ")")
        return ValueError(f"{self!r} expected input of shape {expected}, got {tuple(received)}")

    def _check_input(self, x: np.ndarray) -> None:
        """Validate a forward input once per new shape (cheap on every later batch)."""
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{self!r} expected a numpy array, got {type(x).__name__}")
        if self.dtype is not None and x.dtype != self.dtype:
            raise TypeError(
                f"{self!r} has dtype {self.dtype} but received input of dtype {x.dtype}; "
                f"convert the input with .astype(np.{self.dtype}) or build the layer "
                f"with dtype=np.{x.dtype}"
                if x.dtype.kind == "f"
                else f"{self!r} has dtype {self.dtype} but received input of dtype "
                f"{x.dtype}; convert the input with .astype(np.{self.dtype})"
            )
        if self.dtype is None and x.dtype.kind != "f":
            raise TypeError(f"{self!r} expected a float32 or float64 array, got {x.dtype}")
        if x.shape != self._checked_shape:
            if x.ndim < 1:
                raise ValueError(f"{self!r} expected a batch of samples, got a 0-d array")
            self._output_shape(x.shape[1:], x.shape, batched=True)
            self._checked_shape = x.shape

    def _saved(self, key: str) -> Any:
        try:
            return self._cache[key]
        except KeyError:
            raise RuntimeError(
                f"{self!r}: backward() needs the activations of a forward(): run forward "
                "first (a Sequential's backward releases them unless called with "
                "retain_activations=True)"
            ) from None

    def _release_activations(self) -> None:
        """Drop what the last forward saved for backward."""
        self._cache.clear()

    def _saved_activations(self) -> dict[str, Any]:
        """Return what the last forward saved, for a later :meth:`_restore_activations`.

        A graph model calls a layer used twice once per use: it keeps each call's
        activations and gives them back before that call's backward.
        """
        return dict(self._cache)

    def _restore_activations(self, saved: dict[str, Any]) -> None:
        """Make ``saved`` (from :meth:`_saved_activations`) what backward reads."""
        self._cache = dict(saved)


# ---------------------------------------------------------------------------------------
# Layers with parameters


class WeightBias(Layer):
    """A layer with a ``weight`` and an optional ``bias`` (out_features,) parameter."""

    dtype: np.dtype  # always set: float32 or float64

    def _init_weight_bias(
        self, weight_shape: Shape, bias: bool, dtype: DTypeLike, rng: RngLike
    ) -> None:
        self.dtype = check_dtype(dtype)
        self.use_bias = check_bool(bias, "bias")
        self.rng = check_rng(rng)
        self._add_param("weight", weight_shape)
        if self.use_bias:
            self._add_param("bias", (weight_shape[0],))
        self.reset_parameters()

    # The two properties are documented in each layer's Attributes section: a docstring
    # here would make numpydoc link them to pages that do not exist.
    @property
    def weight(self) -> np.ndarray:  # noqa: D102
        return self.params["weight"]

    @property
    def bias(self) -> np.ndarray | None:  # noqa: D102
        return self.params.get("bias")
