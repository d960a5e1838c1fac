"""Batch normalization: ``BatchNorm2D`` for NCHW images, ``BatchNorm1D`` for (N, F) features."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

import fastcnn.functional as F
from fastcnn._validation import (
    RngLike,
    check_bool,
    check_dtype,
    check_float,
    check_positive_int,
)
from fastcnn.layers.base import Layer, Shape, reserve


class _BatchNorm(Layer):
    """What the batch-normalization layers share: statistics per channel (axis 1).

    Subclasses give the accepted sample shape (``_output_shape``) and the docstring.
    """

    dtype: np.dtype  # always set: float32 or float64

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        *,
        affine: bool = True,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = check_positive_int(num_features, "num_features")
        self.eps = check_float(eps, "eps", 0.0, math.inf)
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.momentum = check_float(momentum, "momentum", 0.0, 1.0)
        self.dtype = check_dtype(dtype)
        self.affine = check_bool(affine, "affine")
        if self.affine:
            self._add_param("gamma", (self.num_features,))
            self._add_param("beta", (self.num_features,))
        reserve((2 * self.num_features,), "running statistics")
        self.buffers["running_mean"] = np.zeros(self.num_features, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(self.num_features, dtype=self.dtype)
        self.reset_parameters()

    @property
    def gamma(self) -> np.ndarray | None:
        """The ``gamma`` array (in ``params``); None without ``affine``."""
        return self.params.get("gamma")

    @property
    def beta(self) -> np.ndarray | None:
        """The ``beta`` array (in ``params``); None without ``affine``."""
        return self.params.get("beta")

    @property
    def running_mean(self) -> np.ndarray:
        """The ``running_mean`` array (in ``buffers``)."""
        return self.buffers["running_mean"]

    @property
    def running_var(self) -> np.ndarray:
        """The ``running_var`` array (in ``buffers``)."""
        return self.buffers["running_var"]

    def reset_parameters(self, rng: RngLike = None) -> None:
        """Re-initialize the parameters in place."""
        if self.affine:
            self.params["gamma"].fill(1)
            self.params["beta"].fill(0)
        self.running_mean.fill(0)
        self.running_var.fill(1)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Normalize ``x`` with the batch's statistics (training) or the running ones."""
        self._check_input(x)
        training = bool(training)
        y, mean, inv_std = F.batch_norm(
            x, self.running_mean, self.running_var, self.gamma, self.beta, training,
            self.momentum, self.eps,
        )  # fmt: skip
        self._cache.update(training=training, x=x, mean=mean, inv_std=inv_std)
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Fill the gradients of gamma and beta; return the input gradient."""
        training = self._saved("training")
        grad_x, grad_gamma, grad_beta = F.batch_norm_backward(
            grad_out, self._cache["x"], self.gamma, self._cache["mean"], self._cache["inv_std"],
            training,
        )  # fmt: skip
        if self.affine:
            self.grads["gamma"][...] = grad_gamma
            self.grads["beta"][...] = grad_beta
        return grad_x

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "dtype": self.dtype.name,
        }

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        text = f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
        if self.dtype != np.float32:
            text += f", dtype={self.dtype.name}"
        return text


class BatchNorm2D(_BatchNorm):
    """Batch normalization over the (N, H, W) axes of each channel (PyTorch's BatchNorm2d).

    In training mode each channel is normalized with the batch mean and (biased) variance,
    and the running statistics are updated as
    ``running = (1 - momentum) * running + momentum * batch`` (the running variance uses the
    unbiased batch variance). In eval mode the running statistics are used instead.

    Parameters
    ----------
    num_features : int
        Number of channels C.
    eps : float, default 1e-5
        Added to the variance for numerical stability.
    momentum : float, default 0.1
        Weight of the current batch in the running statistics.
    dtype : float32 or float64, default float32

    Attributes
    ----------
    gamma, beta : ndarray of shape (num_features,)
        Learnable scale (initialized to 1) and shift (initialized to 0).
    running_mean, running_var : ndarray of shape (num_features,)
        Buffers, initialized to 0 and 1; saved with the model.

    Shapes
    ------
    Input (N, C, H, W), output the same.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__(num_features, eps, momentum, dtype=dtype)

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) != 3 or shape[0] != self.num_features:
            raise self._shape_error(f"({self.num_features}, H, W)", received, batched)
        return shape


class BatchNorm1D(_BatchNorm):
    """Batch normalization of dense features over the batch (PyTorch's BatchNorm1d).

    Each feature of an (N, F) batch (or each channel of an (N, C, L) one, over N and L)
    is normalized as in :class:`BatchNorm2D`: batch statistics and running-statistic
    updates in training, the running statistics in eval mode. Training needs more than
    one value per feature (N >= 2 for (N, F) input).

    Parameters
    ----------
    num_features : int
        Number of features F (or channels C).
    eps : float, default 1e-5
        Added to the variance for numerical stability.
    momentum : float, default 0.1
        Weight of the current batch in the running statistics.
    affine : bool, default True
        Learn a scale ``gamma`` and a shift ``beta`` per feature; without them the output
        is only normalized.
    dtype : float32 or float64, default float32

    Attributes
    ----------
    gamma, beta : ndarray of shape (num_features,), or None without ``affine``
        Learnable scale (initialized to 1) and shift (initialized to 0).
    running_mean, running_var : ndarray of shape (num_features,)
        Buffers, initialized to 0 and 1; saved with the model.

    Shapes
    ------
    Input (N, F) or (N, C, L), output the same.
    """

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) not in (1, 2) or shape[0] != self.num_features:
            n = "N, " if batched else ""
            expected = (
                f"({n}{self.num_features}{'' if batched else ','}) or ({n}{self.num_features}, L)"
            )
            raise ValueError(f"{self!r} expected input of shape {expected}, got {tuple(received)}")
        return shape

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {**super().get_config(), "affine": self.affine}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        return super().extra_repr() + ("" if self.affine else ", affine=False")
