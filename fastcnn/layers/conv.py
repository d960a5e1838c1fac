"""Convolution layers over NCHW batches: plain, transposed, depthwise and separable."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

import fastcnn.functional as F
from fastcnn._validation import (
    IntPair,
    RngLike,
    check_bool,
    check_dtype,
    check_pad_mode,
    check_pads,
    check_positive_int,
    check_rng,
    conv2d_output_hw,
    conv_padding,
    conv_transpose2d_output_hw,
    pair,
)
from fastcnn.layers.base import Layer, Shape, WeightBias


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
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, default 'zeros'
        How the ``padding`` rows and columns are filled (PyTorch's ``padding_mode``): the
        input is padded with :func:`~fastcnn.functional.pad2d`, then convolved unpadded.
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
        padding_mode: str = "zeros",
        *,
        dtype: DTypeLike = np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        self.padding_mode = check_pad_mode(padding_mode)
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
        padding: IntPair | str = self.padding
        if self.padding_mode != "zeros":
            self._cache["input_shape"] = x.shape
            x, padding = F.pad2d(x, self._mode_pads, self.padding_mode), 0
        self._cache["x"] = x
        return F.conv2d(
            x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups
        )

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Fill ``grads`` and return the gradient with respect to the input."""
        x = self._saved("x")
        zeros = self.padding_mode == "zeros"
        grad_x, grad_w, grad_b = F.conv2d_backward(
            grad_out, x, self.weight, self.stride, self.padding if zeros else 0,
            self.dilation, self.groups, needs_input_grad=self.needs_input_grad,
        )  # fmt: skip
        self.grads["weight"][...] = grad_w
        if self.use_bias:
            self.grads["bias"][...] = grad_b
        if grad_x is not None and not zeros:
            shape = self._saved("input_shape")
            grad_x = F.pad2d_backward(grad_x, shape, self._mode_pads, self.padding_mode)
        return grad_x

    @property
    def _mode_pads(self) -> tuple[int, int, int, int]:
        """Return the padding as pad2d's (left, right, top, bottom)."""
        (top, bottom), (left, right) = self._pads
        return left, right, top, bottom

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise self._shape_error(f"({self.in_channels}, H, W)", received, batched)
        if self.padding_mode != "zeros":  # reflect and circular need pads within the image
            try:
                check_pads(self._mode_pads, (1, *shape), self.padding_mode)
            except ValueError as exc:
                raise ValueError(f"{self!r}: {exc}; got input {tuple(received)}") from None
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
        } | self._mode_config()

    def _mode_config(self) -> dict[str, Any]:
        # Only a mode other than zeros is written, so zero-padded models give the same
        # files as before the modes existed; a file without it loads as "zeros".
        return {} if self.padding_mode == "zeros" else {"padding_mode": self.padding_mode}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding!r}"  # (1, 1) or 'same'
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if not self.use_bias:
            text += ", bias=False"
        if self.dtype != np.float32:
            text += f", dtype={self.dtype.name}"
        return text


def _he_uniform(array: np.ndarray, fan_in: int, rng: np.random.Generator) -> None:
    """Fill ``array`` from ``U(-sqrt(6 / fan_in), sqrt(6 / fan_in))``, drawn in float64."""
    bound = math.sqrt(6.0 / fan_in)
    array[...] = rng.uniform(-bound, bound, size=array.shape)


class ConvTranspose2D(WeightBias):
    """2-D transposed convolution layer (PyTorch's ``ConvTranspose2d``) over NCHW batches.

    The adjoint of :class:`Conv2D`: it maps a conv's output shape back to its input
    shape, as in decoders and segmentation heads.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and of the output; both divisible by ``groups``.
    kernel_size : int or (int, int)
    stride : int or (int, int), default 1
    padding : int or (int, int), default 0
        Rows and columns cropped from each side of the full output.
    output_padding : int or (int, int), default 0
        Extra rows and columns at the bottom and right; each smaller than the stride or
        the dilation of its dimension.
    dilation : int or (int, int), default 1
    groups : int, default 1
    bias : bool, default True
    dtype : float32 or float64, default float32
    rng : int, numpy.random.Generator or None
        Source of the initial weights.

    Attributes
    ----------
    weight : ndarray of shape (in_channels, out_channels // groups, kH, kW)
        He-uniform, as :class:`Conv2D`, with PyTorch's fan-in for this layer,
        ``fan_in = out_channels // groups * kH * kW`` (the weight's second axis).
    bias : ndarray of shape (out_channels,) or None
        Initialized to zero.

    Shapes
    ------
    Input (N, C_in, H, W), output (N, C_out, H_out, W_out) with
    ``H_out = (H - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kH - 1) +
    output_padding[0] + 1`` and the same for ``W_out``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        output_padding: IntPair = 0,
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
        self.padding = pair(padding, "padding", 0)
        self.output_padding = pair(output_padding, "output_padding", 0)
        self.dilation = pair(dilation, "dilation", 1)
        self.groups = check_positive_int(groups, "groups")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} and "
                f"out_channels={self.out_channels}"
            )
        for a in (0, 1):
            if self.output_padding[a] >= max(self.stride[a], self.dilation[a]):
                raise ValueError(
                    f"output_padding {self.output_padding} must be smaller than either the "
                    f"stride {self.stride} or the dilation {self.dilation} in each dimension"
                )
        # The bias has out_channels entries, not the weight's first axis (in_channels).
        self.dtype = check_dtype(dtype)
        self.use_bias = check_bool(bias, "bias")
        self.rng = check_rng(rng)
        self._add_param(
            "weight", (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        )
        if self.use_bias:
            self._add_param("bias", (self.out_channels,))
        self.reset_parameters()

    def reset_parameters(self, rng: RngLike = None) -> None:
        """Re-initialize the parameters in place."""
        rng = self.rng if rng is None else check_rng(rng)
        _he_uniform(self.weight, self.weight[0].size, rng)
        if self.bias is not None:
            self.bias.fill(0)

    def _args(self) -> tuple[IntPair, IntPair, IntPair, IntPair, int]:
        return self.stride, self.padding, self.output_padding, self.dilation, self.groups

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        self._cache["x"] = x
        return F.conv_transpose2d(x, self.weight, self.bias, *self._args())

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Fill ``grads`` and return the gradient with respect to the input."""
        grad_x, grad_w, grad_b = F.conv_transpose2d_backward(
            grad_out, self._saved("x"), self.weight, *self._args(),
            needs_input_grad=self.needs_input_grad,
        )  # fmt: skip
        self.grads["weight"][...] = grad_w
        if self.use_bias:
            self.grads["bias"][...] = grad_b
        return grad_x

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) != 3 or shape[0] != self.in_channels or min(shape) < 1:
            raise self._shape_error(f"({self.in_channels}, H, W)", received, batched)
        h_out, w_out = conv_transpose2d_output_hw(
            (shape[1], shape[2]), self.kernel_size, self.stride, self.padding,
            self.output_padding, self.dilation,
        )  # fmt: skip
        if h_out < 1 or w_out < 1:
            raise ValueError(
                f"{self!r}: padding {self.padding} leaves no output for input "
                f"{tuple(received)} (output would be {h_out}x{w_out})"
            )
        return (self.out_channels, h_out, w_out)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "output_padding": list(self.output_padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "bias": self.use_bias,
            "dtype": self.dtype.name,
        }

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        for name in ("stride", "padding", "output_padding", "dilation"):
            value = getattr(self, name)
            if value != ((1, 1) if name in ("stride", "dilation") else (0, 0)):
                text += f", {name}={value}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if not self.use_bias:
            text += ", bias=False"
        if self.dtype != np.float32:
            text += f", dtype={self.dtype.name}"
        return text


class DepthwiseConv2D(Conv2D):
    """Depthwise 2-D convolution: each input channel convolved with its own filters.

    A :class:`Conv2D` with ``groups = channels`` and ``channels * depth_multiplier``
    output channels (Keras's ``DepthwiseConv2D``, MobileNet's building block).

    Parameters
    ----------
    channels : int
        Input channels.
    kernel_size : int or (int, int)
    stride : int or (int, int), default 1
    padding : int, (int, int), ``'valid'`` or ``'same'``, default 0
    depth_multiplier : int, default 1
        Output channels per input channel.
    bias : bool, default True
    dilation : int or (int, int), default 1
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, default 'zeros'
    dtype : float32 or float64, default float32
    rng : int, numpy.random.Generator or None

    Attributes
    ----------
    weight : ndarray of shape (channels * depth_multiplier, 1, kH, kW)
        He-uniform with ``fan_in = kH * kW``.
    bias : ndarray of shape (channels * depth_multiplier,) or None

    Shapes
    ------
    Input (N, channels, H, W), output (N, channels * depth_multiplier, H_out, W_out),
    ``H_out`` and ``W_out`` as for :class:`Conv2D`.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair | str = 0,
        depth_multiplier: int = 1,
        bias: bool = True,
        *,
        dilation: IntPair = 1,
        padding_mode: str = "zeros",
        dtype: DTypeLike = np.float32,
        rng: RngLike = None,
    ) -> None:
        channels = check_positive_int(channels, "channels")
        self.depth_multiplier = check_positive_int(depth_multiplier, "depth_multiplier")
        super().__init__(
            channels, channels * self.depth_multiplier, kernel_size, stride, padding,
            dilation, channels, bias, padding_mode, dtype=dtype, rng=rng,
        )  # fmt: skip

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        config = super().get_config()
        config["channels"] = config.pop("in_channels")
        config["depth_multiplier"] = self.depth_multiplier
        del config["out_channels"], config["groups"]
        return config

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        text = super().extra_repr().replace(f", groups={self.groups}", "")
        text = text.replace(f"{self.in_channels}, {self.out_channels}, ", f"{self.in_channels}, ")
        if self.depth_multiplier != 1:
            text += f", depth_multiplier={self.depth_multiplier}"
        return text


class SeparableConv2D(Layer):
    """Depthwise-separable 2-D convolution: a depthwise conv, then a 1x1 pointwise conv.

    One layer with two weights (Keras's ``SeparableConv2D``): the depthwise step filters
    each input channel on its own (``groups = in_channels``), the pointwise step mixes
    the channels. The bias, if any, belongs to the pointwise step.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
        The depthwise kernel.
    stride : int or (int, int), default 1
    padding : int, (int, int), ``'valid'`` or ``'same'``, default 0
    dilation : int or (int, int), default 1
    depth_multiplier : int, default 1
        Depthwise output channels per input channel.
    bias : bool, default True
    padding_mode : {'zeros', 'reflect', 'replicate', 'circular'}, default 'zeros'
    dtype : float32 or float64, default float32
    rng : int, numpy.random.Generator or None

    Attributes
    ----------
    params : dict
        ``depthwise_weight`` (in_channels * depth_multiplier, 1, kH, kW) and
        ``pointwise_weight`` (out_channels, in_channels * depth_multiplier, 1, 1), both
        He-uniform over their own fan-in, and ``bias`` (out_channels,), zero.

    Shapes
    ------
    Input (N, C_in, H, W), output (N, C_out, H_out, W_out), ``H_out`` and ``W_out`` as
    for :class:`Conv2D` with the depthwise kernel.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair | str = 0,
        dilation: IntPair = 1,
        depth_multiplier: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: DTypeLike = np.float32,
        rng: RngLike = None,
    ) -> None:
        super().__init__()
        self.depthwise = DepthwiseConv2D(
            in_channels, kernel_size, stride, padding, depth_multiplier, False,
            dilation=dilation, padding_mode=padding_mode, dtype=dtype, rng=rng,
        )  # fmt: skip
        middle = self.depthwise.out_channels
        self.pointwise = Conv2D(
            middle, out_channels, 1, bias=bias, dtype=dtype, rng=self.depthwise.rng
        )
        self.dtype = self.depthwise.dtype
        self.use_bias = self.pointwise.use_bias
        # The same arrays as the two steps': an optimizer or a load updates both views.
        for name, step, key in (
            ("depthwise_weight", self.depthwise, "weight"),
            ("pointwise_weight", self.pointwise, "weight"),
            ("bias", self.pointwise, "bias"),
        ):
            if key in step.params:
                self.params[name], self.grads[name] = step.params[key], step.grads[key]

    @property
    def rng(self) -> np.random.Generator:
        """The generator the initial weights come from."""
        return self.depthwise.rng

    def reset_parameters(self, rng: RngLike = None) -> None:
        """Re-initialize the parameters in place."""
        rng = self.rng if rng is None else check_rng(rng)
        self.depthwise.reset_parameters(rng)
        self.pointwise.reset_parameters(rng)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        return self.pointwise.forward(self.depthwise.forward(x, training), training)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Fill ``grads`` and return the gradient with respect to the input."""
        self.depthwise.needs_input_grad = self.needs_input_grad
        grad_middle = self.pointwise.backward(grad_out)
        assert grad_middle is not None  # the pointwise step always needs its input grad
        return self.depthwise.backward(grad_middle)

    def _release_activations(self) -> None:
        self.depthwise._release_activations()
        self.pointwise._release_activations()

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        middle = self.depthwise._output_shape(shape, received, batched)
        return (self.pointwise.out_channels, *middle[1:])

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        depthwise = self.depthwise.get_config()
        return {
            "in_channels": self.depthwise.in_channels,
            "out_channels": self.pointwise.out_channels,
            "kernel_size": depthwise["kernel_size"],
            "stride": depthwise["stride"],
            "padding": depthwise["padding"],
            "dilation": depthwise["dilation"],
            "depth_multiplier": self.depthwise.depth_multiplier,
            "bias": self.use_bias,
            "padding_mode": self.depthwise.padding_mode,
            "dtype": self.depthwise.dtype.name,
        }

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        inner = self.depthwise.extra_repr().split(", ", 1)[1]
        text = f"{self.depthwise.in_channels}, {self.pointwise.out_channels}, {inner}"
        return text if self.use_bias else text + ", bias=False"
