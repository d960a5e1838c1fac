"""``Dropout``: inverted dropout in training, the identity in eval mode."""

from __future__ import annotations

from typing import Any

import numpy as np

import fastcnn.functional as F
from fastcnn._validation import (
    RngLike,
    check_float,
    check_rng,
)
from fastcnn.layers.base import Layer


class Dropout(Layer):
    """Inverted dropout: zero elements with probability ``p`` in training, scale the rest.

    The survivors are scaled by ``1 / (1 - p)``; in eval mode, the identity. Any input shape.

    Parameters
    ----------
    p : float in [0, 1], default 0.5
        Probability of dropping an element.
    rng : int, numpy.random.Generator or None
        Source of the dropout masks (its own generator, so masks are reproducible).
        :meth:`fastcnn.Sequential.fit` reseeds it from ``random_state`` when one is given.
    """

    reseeds = True

    def __init__(self, p: float = 0.5, *, rng: RngLike = None) -> None:
        super().__init__()
        self.p = check_float(p, "p", 0.0, 1.0)
        self.rng = check_rng(rng)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Drop elements in training (the identity otherwise); keep the mask for backward."""
        self._check_input(x)
        y, self._cache["mask"] = F.dropout(x, self.p, bool(training), self.rng)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return the input gradient: ``grad_out`` through the last mask."""
        return F.dropout_backward(grad_out, self._saved("mask"))

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {"p": self.p}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        return f"p={self.p}"
