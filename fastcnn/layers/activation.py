"""Activations: ``ReLU``, ``LeakyReLU``, ``Tanh``, ``Sigmoid``, ``GELU``, ``SiLU``, ``Softmax``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

import fastcnn.functional as F
from fastcnn._validation import (
    check_axis,
    check_finite_float,
    check_gelu_approximate,
    is_int,
    short_repr,
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


# ---------------------------------------------------------------------------------------
# GELU, SiLU and softmax


class GELU(Layer):
    """Gaussian error linear unit, ``x * Phi(x)`` element-wise (PyTorch's ``GELU``).

    Parameters
    ----------
    approximate : {'none', 'tanh'}, default 'none'
        ``'tanh'`` uses ``x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``.

    Shapes
    ------
    Any input shape; the output has the input's.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        check_gelu_approximate(approximate)
        self.approximate = approximate

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Apply GELU; keep ``x`` for backward."""
        self._check_input(x)
        self._cache["x"] = x
        return F.gelu(x, self.approximate)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return the input gradient."""
        return F.gelu_backward(grad_out, self._saved("x"), self.approximate)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {"approximate": self.approximate}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"


class SiLU(Layer):
    """Sigmoid linear unit (swish), ``x * sigmoid(x)`` element-wise (PyTorch's ``SiLU``).

    Shapes
    ------
    Any input shape; the output has the input's.
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Apply SiLU; keep ``x`` for backward."""
        self._check_input(x)
        self._cache["x"] = x
        return F.silu(x)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return the input gradient."""
        return F.silu_backward(grad_out, self._saved("x"))


class Softmax(Layer):
    """Softmax along ``axis`` of the batch (PyTorch's ``Softmax(dim=axis)``).

    Numerically stable (the maximum is subtracted first). For training a classifier,
    end the model with the logits and use the ``'cross_entropy'`` loss instead: it
    includes the softmax and is more accurate.

    Parameters
    ----------
    axis : int, default 1
        An axis of the batch array: 1 is the features of (N, F) or the channels of
        (N, C, H, W); negative counts from the end.

    Shapes
    ------
    Any input shape with the axis; the output has the input's.
    """

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        if not is_int(axis):
            raise TypeError(f"axis must be an int, got {short_repr(axis)}")
        self.axis = int(axis)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Apply the softmax; keep the output for backward."""
        self._check_input(x)
        y = F.softmax(x, self.axis)
        self._cache["y"] = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return the input gradient."""
        return F.softmax_backward(grad_out, self._saved("y"), self.axis)

    def _output_shape(
        self, shape: tuple[int, ...], received: tuple[int, ...], batched: bool
    ) -> tuple[int, ...]:
        try:
            check_axis(self.axis, len(shape) + 1)
        except ValueError:
            raise ValueError(
                f"{self!r} expected input with axis {self.axis} (counting the batch axis), "
                f"got {tuple(received)}"
            ) from None
        return shape

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {"axis": self.axis}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        return f"axis={self.axis}"
