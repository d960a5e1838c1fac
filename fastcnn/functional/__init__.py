"""Stateless ops: the one API every layer, loss and optimizer calls.

Convolution, pooling, fully connected, activations, normalization, dropout, the loss and
the optimizer steps.

Each op validates its arguments once (``fastcnn._validation``), resolves defaults
(``stride=None``, ``'same'`` padding, ``ceil_mode``), allocates its outputs and hands plain
ints and C-contiguous arrays to the active backend (compiled Cython kernels or the numpy
reference; see :func:`fastcnn.set_backend`). Layout is NCHW, weights are ``(C_out,
C_in // groups, kH, kW)`` and the semantics are PyTorch's, so results compare directly
with ``torch.nn.functional``.

Every op returns new C-contiguous arrays of the input's dtype (float32 or float64), with
two exceptions that update state in place, as PyTorch's do: the optimizer steps
(:func:`sgd_step`, :func:`adam_step`) and :func:`batch_norm`'s running statistics.

This package re-exports every op from its modules: ``conv``, ``linear``, ``pooling``,
``resample`` (adaptive pooling, interpolation), ``activation`` and ``training`` (the ops
that keep training state: dropout, batch norm, the loss, the optimizer steps).
"""

from __future__ import annotations

from fastcnn._validation import IntPair as IntPair
from fastcnn._validation import RngLike as RngLike
from fastcnn.functional.activation import (  # GELU, SiLU and softmax
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    log_softmax,
    log_softmax_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    silu,
    silu_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)
from fastcnn.functional.conv import (
    conv2d,
    conv2d_backward,
)
from fastcnn.functional.conv_transpose import (
    conv_transpose2d,
    conv_transpose2d_backward,
)
from fastcnn.functional.linear import (
    linear,
    linear_backward,
)
from fastcnn.functional.merging import (
    add,
    concatenate,
    concatenate_backward,
)
from fastcnn.functional.padding import (
    pad2d,
    pad2d_backward,
)
from fastcnn.functional.pooling import (
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)
from fastcnn.functional.resample import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
    interpolate,
    interpolate_backward,
)
from fastcnn.functional.training import (
    adam_step,
    batch_norm,
    batch_norm_backward,
    dropout,
    dropout_backward,
    sgd_step,
    softmax_cross_entropy,
)

__all__ = [
    "adam_step",
    "add",
    "concatenate",
    "concatenate_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "batch_norm",
    "batch_norm_backward",
    "conv2d",
    "conv2d_backward",
    "dropout",
    "dropout_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "relu",
    "relu_backward",
    "sgd_step",
    "sigmoid",
    "sigmoid_backward",
    "softmax_cross_entropy",
    "tanh",
    "tanh_backward",
    # GELU, SiLU and softmax
    "gelu",
    "gelu_backward",
    "log_softmax",
    "log_softmax_backward",
    "silu",
    "silu_backward",
    "softmax",
    "softmax_backward",
    # resampling: adaptive pooling and interpolation
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "interpolate",
    "interpolate_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "pad2d",
    "pad2d_backward",
]
