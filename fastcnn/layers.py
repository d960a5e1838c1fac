"""Stateful layers: parameters, their gradients and what backward needs, over ``functional``.

Each layer's ``forward`` is one call into :mod:`fastcnn.functional` plus a reference to
whatever ``backward`` will need (the conv input, the max-pooling indices, the batch
statistics, the dropout mask), so backward never recomputes forward. Argument checks and
output-shape formulas come from ``fastcnn._validation``, shared with functional.

Conventions shared by every layer:

* Layout is NCHW for images and (N, F) for features; ``output_shape`` takes and returns the
  shape of *one sample*, (C, H, W) or (F,), so it composes without a batch size.
* ``params`` and ``grads`` are dicts with the same keys. Both are allocated once, in
  ``__init__``; ``reset_parameters`` and ``backward`` overwrite them in place, so an
  optimizer may hold on to the arrays for the life of the layer.
* Layers with parameters have a ``dtype`` (float32 by default) and only accept inputs of
  that dtype: the conversion of e.g. uint8 images happens once, at the model boundary
  (:class:`fastcnn.Sequential`), not silently on every batch.
* ``get_config()`` returns the constructor arguments as JSON-able values, so
  ``type(layer)(**layer.get_config())`` rebuilds the architecture (used by save/load).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import DTypeLike

import fastcnn.functional as F
from fastcnn._validation import (
    IntPair,
    RngLike,
    check_bool,
    check_dtype,
    check_finite_float,
    check_float,
    check_positive_int,
    check_rng,
    conv2d_output_hw,
    conv_padding,
    pair,
    pool2d_output_hw,
    pool_window,
)

if TYPE_CHECKING:  # at run time, __getattr__ at the end: fastcnn.saving imports this module
    from fastcnn.saving.registry import LAYER_REGISTRY, layer_from_config, register_layer

__all__ = [
    "AvgPool2D",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "LAYER_REGISTRY",
    "Layer",
    "LeakyReLU",
    "MaxPool2D",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "layer_from_config",
    "register_layer",
]

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


def _reserve(shape: Shape, what: str) -> None:
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

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Run :meth:`forward`."""
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
        _reserve(shape, f"parameter {name!r}")
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


# ---------------------------------------------------------------------------------------
# Layers with parameters


class _WeightBias(Layer):
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

    @property
    def weight(self) -> np.ndarray:
        return self.params["weight"]

    @property
    def bias(self) -> np.ndarray | None:
        return self.params.get("bias")


class Conv2D(_WeightBias):
    """2-D convolution (cross-correlation) layer over NCHW batches.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the output; both divisible by ``groups``.
    kernel_size : int or (int, int)
    stride : int or (int, int), default 1
    padding : int, (int, int), ``'valid'`` or ``'same'``, default 0
        Zero padding on both sides; ``'same'`` (stride 1 only) keeps H and W.
    dilation : int or (int, int), default 1
    groups : int, default 1
    bias : bool, default True
        Whether to learn an additive per-channel bias.
    dtype : float32 or float64, default float32
    rng : int, numpy.random.Generator or None
        Source of the initial weights.

    Attributes
    ----------
    weight : ndarray of shape (out_channels, in_channels // groups, kH, kW)
        He-uniform (Kaiming-uniform for ReLU) initialization:
        ``U(-sqrt(6 / fan_in), sqrt(6 / fan_in))`` with
        ``fan_in = in_channels // groups * kH * kW``.
    bias : ndarray of shape (out_channels,) or None
        Initialized to zero.

    Shapes
    ------
    Input (N, C_in, H, W), output (N, C_out, H_out, W_out) with
    ``H_out = floor((H + 2 * padding[0] - dilation[0] * (kH - 1) - 1) / stride[0]) + 1``
    and the same for ``W_out``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair | str = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        dtype: DTypeLike = np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_positive_int(in_channels, "in_channels")
        self.out_channels = check_positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.dilation = pair(dilation, "dilation", 1)
        self.groups = check_positive_int(groups, "groups")
        if isinstance(padding, str):
            self.padding: tuple[int, int] | str = padding.lower()
        else:
            self.padding = pair(padding, "padding", 0)
        # Resolves 'same'/'valid' and refuses 'same' with a stride now, not at first batch.
        self._pads = conv_padding(self.padding, self.kernel_size, self.dilation, self.stride)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} and "
                f"out_channels={self.out_channels}"
            )
        kh, kw = self.kernel_size
        weight_shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        self._init_weight_bias(weight_shape, bias, dtype, rng)

    def reset_parameters(self, rng: RngLike = None) -> None:
        """Re-initialize the parameters in place."""
        rng = self.rng if rng is None else check_rng(rng)
        fan_in = self.weight[0].size
        bound = math.sqrt(6.0 / fan_in)
        # Drawn in float64 and cast, so a seed gives the same weights for either dtype.
        self.weight[...] = rng.uniform(-bound, bound, size=self.weight.shape)
        if self.bias is not None:
            self.bias.fill(0)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        self._cache["x"] = x
        return F.conv2d(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Fill ``grads`` and return the gradient with respect to the input."""
        x = self._saved("x")
        grad_x, grad_w, grad_b = F.conv2d_backward(
            grad_out, x, self.weight, self.stride, self.padding, self.dilation, self.groups,
            needs_input_grad=self.needs_input_grad,
        )  # fmt: skip
        self.grads["weight"][...] = grad_w
        if self.use_bias:
            self.grads["bias"][...] = grad_b
        return grad_x

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise self._shape_error(f"({self.in_channels}, H, W)", received, batched)
        h_out, w_out = conv2d_output_hw(
            (shape[1], shape[2]), self.kernel_size, self.stride, self._pads, self.dilation
        )
        if h_out < 1 or w_out < 1:
            raise ValueError(
                f"{self!r}: input of spatial size {shape[1]}x{shape[2]} is too small for "
                f"the kernel (output would be {h_out}x{w_out}); got input {tuple(received)}"
            )
        return (self.out_channels, h_out, w_out)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "bias": self.use_bias,
            "dtype": self.dtype.name,
        }

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding!r}"  # (1, 1) or 'same'
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if not self.use_bias:
            text += ", bias=False"
        if self.dtype != np.float32:
            text += f", dtype={self.dtype.name}"
        return text


class Dense(_WeightBias):
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


class BatchNorm2D(Layer):
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

    dtype: np.dtype  # always set: float32 or float64

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        *,
        dtype: DTypeLike = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = check_positive_int(num_features, "num_features")
        self.eps = check_float(eps, "eps", 0.0, math.inf)
        if self.eps <= 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        self.momentum = check_float(momentum, "momentum", 0.0, 1.0)
        self.dtype = check_dtype(dtype)
        self._add_param("gamma", (self.num_features,))
        self._add_param("beta", (self.num_features,))
        _reserve((2 * self.num_features,), "running statistics")
        self.buffers["running_mean"] = np.zeros(self.num_features, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(self.num_features, dtype=self.dtype)
        self.reset_parameters()

    @property
    def gamma(self) -> np.ndarray:
        """The ``gamma`` array (in ``params``)."""
        return self.params["gamma"]

    @property
    def beta(self) -> np.ndarray:
        """The ``beta`` array (in ``params``)."""
        return self.params["beta"]

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
        self.gamma.fill(1)
        self.beta.fill(0)
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
        self.grads["gamma"][...] = grad_gamma
        self.grads["beta"][...] = grad_beta
        return grad_x

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) != 3 or shape[0] != self.num_features:
            raise self._shape_error(f"({self.num_features}, H, W)", received, batched)
        return shape

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


# ---------------------------------------------------------------------------------------
# Pooling


class _Pool2D(Layer):
    def _pool_output(
        self,
        shape: Shape,
        received: Shape,
        batched: bool,
        dilation: tuple[int, int],
        ceil_mode: bool,
    ) -> Shape:
        if len(shape) != 3:
            raise self._shape_error("(C, H, W)", received, batched)
        size = pool2d_output_hw(
            (shape[1], shape[2]), self.kernel_size, self.stride, self.padding, dilation, ceil_mode
        )
        if min(size) < 1:
            raise ValueError(
                f"{self!r}: input of spatial size {shape[1]}x{shape[2]} is too small for "
                f"the window (output would be {size[0]}x{size[1]}); got input "
                f"{tuple(received)}"
            )
        return (shape[0], size[0], size[1])

    def _check_pool_args(
        self, kernel_size: IntPair, stride: IntPair | None, padding: IntPair
    ) -> None:
        window = pool_window(kernel_size, stride, padding, type(self).__name__)
        self.kernel_size, self.stride, self.padding = window


class MaxPool2D(_Pool2D):
    """2-D max pooling; backward routes each gradient to the maximum it came from.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int, (int, int) or None, default None
        Defaults to ``kernel_size`` (non-overlapping windows).
    padding : int or (int, int), default 0
        Implicit -inf padding, at most half the kernel size.
    dilation : int or (int, int), default 1
    ceil_mode : bool, default False
        Round the output size up instead of down.

    Shapes
    ------
    Input (N, C, H, W), output (N, C, H_out, W_out) with
    ``H_out = floor((H + 2 * padding[0] - dilation[0] * (kernel_size[0] - 1) - 1)
    / stride[0]) + 1`` (``ceil`` with ``ceil_mode``), and the same for ``W_out``.
    """

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self._check_pool_args(kernel_size, stride, padding)
        self.dilation = pair(dilation, "dilation", 1)
        self.ceil_mode = check_bool(ceil_mode, "ceil_mode")

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        y, indices = F.max_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )
        self._cache["indices"] = indices
        self._cache["input_shape"] = x.shape
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Fill ``grads`` and return the gradient with respect to the input."""
        indices = self._saved("indices")
        return F.max_pool2d_backward(grad_out, indices, self._cache["input_shape"])

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        return self._pool_output(shape, received, batched, self.dilation, self.ceil_mode)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "ceil_mode": self.ceil_mode,
        }

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        text = f"kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.ceil_mode:
            text += ", ceil_mode=True"
        return text


class AvgPool2D(_Pool2D):
    """2-D average pooling (PyTorch's AvgPool2d).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int, (int, int) or None, default None
        Defaults to ``kernel_size``.
    padding : int or (int, int), default 0
        Implicit zero padding, at most half the kernel size.
    ceil_mode : bool, default False
        Round the output size up instead of down.
    count_include_pad : bool, default True
        Count padded positions in the divisor.
    divisor_override : int or None, default None
        Always divide by this instead.

    Shapes
    ------
    Input (N, C, H, W), output (N, C, H_out, W_out) as for :class:`MaxPool2D` with
    dilation 1.
    """

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self._check_pool_args(kernel_size, stride, padding)
        self.ceil_mode = check_bool(ceil_mode, "ceil_mode")
        self.count_include_pad = check_bool(count_include_pad, "count_include_pad")
        if divisor_override is not None:
            divisor_override = check_positive_int(divisor_override, "divisor_override")
        self.divisor_override = divisor_override

    def _args(self) -> tuple[IntPair, IntPair, IntPair, bool, bool, int | None]:
        return (
            self.kernel_size, self.stride, self.padding, self.ceil_mode,
            self.count_include_pad, self.divisor_override,
        )  # fmt: skip

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        self._cache["input_shape"] = x.shape
        return F.avg_pool2d(x, *self._args())

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Fill ``grads`` and return the gradient with respect to the input."""
        return F.avg_pool2d_backward(grad_out, self._saved("input_shape"), *self._args())

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        return self._pool_output(shape, received, batched, (1, 1), self.ceil_mode)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "ceil_mode": self.ceil_mode,
            "count_include_pad": self.count_include_pad,
            "divisor_override": self.divisor_override,
        }

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        text = f"kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.ceil_mode:
            text += ", ceil_mode=True"
        if not self.count_include_pad:
            text += ", count_include_pad=False"
        if self.divisor_override is not None:
            text += f", divisor_override={self.divisor_override}"
        return text


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


# ---------------------------------------------------------------------------------------
# The registry of the classes a model file may name lives in fastcnn.saving.registry;
# its names stay importable from here, where users have always found them.

_SAVING_NAMES = ("LAYER_REGISTRY", "layer_from_config", "register_layer")

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Serve the registry's names from :mod:`fastcnn.saving`, their home."""
        if name in _SAVING_NAMES:
            from fastcnn.saving import registry

            return getattr(registry, name)
        raise AttributeError(f"module 'fastcnn.layers' has no attribute {name!r}")
