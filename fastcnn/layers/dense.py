"""``Dense``: the fully connected layer over (N, F) features."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

import fastcnn.functional as F
from fastcnn._validation import (
    RngLike,
    check_positive_int,
    check_rng,
)
from fastcnn.layers.base import Shape, WeightBias


class Dense(WeightBias):
    """Fully connected layer ``y = x @ weight.T + bias`` (PyTorch's ``Linear``).

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : int, numpy.random.Generator or None
        Source of the initial weights.

    Attributes
    ----------
    weight : ndarray of shape (out_features, in_features)
        Glorot-uniform initialization:
        ``U(-sqrt(6 / (in_features + out_features)), +sqrt(...))``.
    bias : ndarray of shape (out_features,) or None
        Initialized to zero.

    Shapes
    ------
    Input (N, in_features), output (N, out_features). Image batches need a
    :class:`Flatten` in front.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        dtype: DTypeLike = np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        self._init_weight_bias((self.out_features, self.in_features), bias, dtype, rng)

    def reset_parameters(self, rng: RngLike = None) -> None:
        """Re-initialize the parameters in place."""
        rng = self.rng if rng is None else check_rng(rng)
        limit = math.sqrt(6.0 / (self.in_features + self.out_features))
        self.weight[...] = rng.uniform(-limit, limit, size=self.weight.shape)
        if self.bias is not None:
            self.bias.fill(0)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        self._cache["x"] = x
        return F.linear(x, self.weight, self.bias if self.use_bias else None)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Fill ``grads`` and return the gradient with respect to the input."""
        x = self._saved("x")
        grad_x, grad_weight, grad_bias = F.linear_backward(
            grad_out, x, self.weight, needs_input_grad=self.needs_input_grad
        )
        self.grads["weight"][...] = grad_weight
        if self.use_bias:
            self.grads["bias"][...] = grad_bias
        return grad_x

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) != 1 or shape[0] != self.in_features:
            error = self._shape_error(f"({self.in_features},)", received, batched)
            if len(shape) > 1:
                error = ValueError(f"{error}; add a Flatten() layer before Dense")
            raise error
        return (self.out_features,)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.use_bias,
            "dtype": self.dtype.name,
        }

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        text = f"in_features={self.in_features}, out_features={self.out_features}"
        if not self.use_bias:
            text += ", bias=False"
        if self.dtype != np.float32:
            text += f", dtype={self.dtype.name}"
        return text
