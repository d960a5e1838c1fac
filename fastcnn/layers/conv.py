"""``Conv2D``: 2-D convolution over NCHW batches."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

import fastcnn.functional as F
from fastcnn._validation import (
    IntPair,
    RngLike,
    check_positive_int,
    check_rng,
    conv2d_output_hw,
    conv_padding,
    pair,
)
from fastcnn.layers.base import Shape, WeightBias


class Conv2D(WeightBias):
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
