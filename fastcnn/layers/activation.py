"""Element-wise activations: ``ReLU``, ``LeakyReLU``, ``Tanh``, ``Sigmoid``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

import fastcnn.functional as F
from fastcnn._validation import (
    check_finite_float,
)
from fastcnn.layers.base import Layer

# ---------------------------------------------------------------------------------------
# Element-wise layers and reshaping


class _Activation(Layer):
    """An element-wise op whose gradient needs only its output: a pair of functional ops."""

    _op: ClassVar[Callable[[np.ndarray], np.ndarray]]
    _op_backward: ClassVar[Callable[[np.ndarray, np.ndarray], np.ndarray]]

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        self._check_input(x)
        y = type(self)._op(x)
        self._cache["y"] = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return type(self)._op_backward(grad_out, self._saved("y"))


class ReLU(_Activation):
    """``max(x, 0)`` element-wise; the gradient at 0 is taken as 0. Any input shape."""

    _op, _op_backward = F.relu, F.relu_backward


class LeakyReLU(Layer):
    """``x`` where positive, ``negative_slope * x`` elsewhere. Any input shape.

    Parameters
    ----------
    negative_slope : float, default 0.01
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = check_finite_float(negative_slope, "negative_slope")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Apply the leaky rectifier; keep ``x`` for backward."""
        self._check_input(x)
        self._cache["x"] = x
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return the input gradient."""
        return F.leaky_relu_backward(grad_out, self._saved("x"), self.negative_slope)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {"negative_slope": self.negative_slope}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        return f"negative_slope={self.negative_slope}"


class Tanh(_Activation):
    """Hyperbolic tangent element-wise. Any input shape."""

    _op, _op_backward = F.tanh, F.tanh_backward


class Sigmoid(_Activation):
    """Logistic function ``1 / (1 + exp(-x))`` element-wise. Any input shape."""

    _op, _op_backward = F.sigmoid, F.sigmoid_backward
