"""``Flatten``: (N, C, H, W) -> (N, C * H * W)."""

from __future__ import annotations

import math

import numpy as np

from fastcnn.layers.base import Layer, Shape


class Flatten(Layer):
    """Flatten every axis but the batch axis: (N, C, H, W) -> (N, C * H * W)."""

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        self._cache["input_shape"] = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Fill ``grads`` and return the gradient with respect to the input."""
        shape: Shape = self._saved("input_shape")
        return grad_out.reshape(shape)

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) < 1:
            raise self._shape_error("(C, ...)", received, batched)
        return (math.prod(shape),)
