"""2-D pooling over NCHW batches: windowed (``MaxPool2D``, ``AvgPool2D``), adaptive and global."""

from __future__ import annotations

from typing import Any

import numpy as np

import fastcnn.functional as F
from fastcnn._validation import (
    IntPair,
    adaptive_output_hw,
    check_adaptive_size,
    check_bool,
    check_positive_int,
    pair,
    pool2d_output_hw,
    pool_window,
)
from fastcnn.functional.resample import OutputSize
from fastcnn.layers.base import Layer, Shape

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
# Adaptive and global pooling


class _Adaptive2D(Layer):
    """Shared by the adaptive pools: the (C, H, W) check and the output-size rule."""

    output_size: tuple[int | None, int | None]

    def _adaptive_output(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) != 3:
            raise self._shape_error("(C, H, W)", received, batched)
        if shape[1] < 1 or shape[2] < 1:
            raise ValueError(f"{self!r} needs inputs of non-zero H and W, got {tuple(received)}")
        return (shape[0], *adaptive_output_hw(shape, self.output_size))

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        return self._adaptive_output(shape, received, batched)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {"output_size": list(self.output_size)}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        return f"output_size={self.output_size}"


class AdaptiveAvgPool2D(_Adaptive2D):
    """2-D adaptive average pooling to a fixed output size (PyTorch's AdaptiveAvgPool2d).

    Parameters
    ----------
    output_size : int, None or (int or None, int or None)
        ``(H_out, W_out)``; None keeps that input size.

    Shapes
    ------
    Input (N, C, H, W), output (N, C, H_out, W_out). Output row ``i`` averages input
    rows ``floor(i * H / H_out)`` to ``ceil((i + 1) * H / H_out)`` (exclusive), and the
    same for columns (see :func:`fastcnn.functional.adaptive_avg_pool2d`).
    """

    def __init__(self, output_size: OutputSize) -> None:
        super().__init__()
        self.output_size = check_adaptive_size(output_size, type(self).__name__)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        self._cache["input_shape"] = x.shape
        return F.adaptive_avg_pool2d(x, self.output_size)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return the gradient with respect to the input."""
        shape = self._saved("input_shape")
        return F.adaptive_avg_pool2d_backward(grad_out, shape, self.output_size)


class AdaptiveMaxPool2D(_Adaptive2D):
    """2-D adaptive max pooling to a fixed output size (PyTorch's AdaptiveMaxPool2d).

    Parameters
    ----------
    output_size : int, None or (int or None, int or None)
        ``(H_out, W_out)``; None keeps that input size.

    Shapes
    ------
    Input (N, C, H, W), output (N, C, H_out, W_out), bins as for
    :class:`AdaptiveAvgPool2D`; ties and NaN as :class:`MaxPool2D`.
    """

    def __init__(self, output_size: OutputSize) -> None:
        super().__init__()
        self.output_size = check_adaptive_size(output_size, type(self).__name__)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        y, indices = F.adaptive_max_pool2d(x, self.output_size)
        self._cache["indices"] = indices
        self._cache["input_shape"] = x.shape
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return the gradient with respect to the input."""
        indices = self._saved("indices")
        return F.adaptive_max_pool2d_backward(grad_out, indices, self._cache["input_shape"])


class _Global2D(_Adaptive2D):
    """Shared by the global pools: one value per feature map, no arguments."""

    output_size = (1, 1)

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        return self._adaptive_output(shape, received, batched)[:1]

    def _grad_4d(self, grad_out: np.ndarray, shape: Shape) -> np.ndarray:
        grad_out = np.asarray(grad_out)
        if grad_out.shape != shape[:2]:
            raise ValueError(
                f"{self!r}: grad_out must have shape {shape[:2]}, got {grad_out.shape}"
            )
        return grad_out.reshape(*shape[:2], 1, 1)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments (none)."""
        return {}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)`` (none)."""
        return ""


class GlobalAvgPool2D(_Global2D):
    """Average each feature map to one value: (N, C, H, W) -> (N, C).

    Shapes
    ------
    Input (N, C, H, W) with H, W >= 1, output (N, C).
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        self._cache["input_shape"] = x.shape
        return F.adaptive_avg_pool2d(x, 1).reshape(x.shape[:2])

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return the gradient with respect to the input."""
        shape = self._saved("input_shape")
        return F.adaptive_avg_pool2d_backward(self._grad_4d(grad_out, shape), shape, 1)


class GlobalMaxPool2D(_Global2D):
    """Take the maximum of each feature map: (N, C, H, W) -> (N, C).

    Ties and NaN as :class:`MaxPool2D`; backward routes each gradient to its maximum.

    Shapes
    ------
    Input (N, C, H, W) with H, W >= 1, output (N, C).
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        y, indices = F.adaptive_max_pool2d(x, 1)
        self._cache["indices"] = indices
        self._cache["input_shape"] = x.shape
        return y.reshape(x.shape[:2])

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return the gradient with respect to the input."""
        indices = self._saved("indices")
        shape = self._cache["input_shape"]
        return F.adaptive_max_pool2d_backward(self._grad_4d(grad_out, shape), indices, shape)
