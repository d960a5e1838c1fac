"""Pure-numpy reference backend.

This module implements the backend contract, :class:`fastcnn._backend.Backend` (which
gives each function's rule), with the signatures of the compiled kernels. It has two jobs:

* it is the correctness oracle the compiled kernels are tested against, so every
  function is written to be obviously right before it is fast;
* it is the fallback used when the compiled extension is not available.

Design
------
Every op is expressed over *windows*: the (padded) input is viewed, without copying,
as an array of shape ``(N, C, H_out, W_out, kH, kW)`` with
``numpy.lib.stride_tricks.sliding_window_view``, then stride and dilation are plain
slices of that view. Convolution is one batched matmul over groups on the im2col
matrix built from those windows; backward passes scatter back with a loop over the
``kH * kW`` kernel offsets, each a vectorized strided slice add. There are no Python
loops over batch elements or pixels.

As for the compiled backend, the caller validates every argument and allocates every
output; functions here only overwrite the output buffers they are given (the optimizer
updates and the batch-norm running statistics update their arrays in place). Arithmetic
is done in the dtype of the inputs. ``n_threads`` is accepted and ignored.
"""

from __future__ import annotations

from fastcnn._reference.conv import (
    conv2d_backward,
    conv2d_forward,
)
from fastcnn._reference.elementwise import (  # GELU, SiLU and softmax
    gelu_backward,
    gelu_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    silu_backward,
    silu_forward,
    softmax_backward,
    softmax_forward,
    tanh_backward,
    tanh_forward,
)
from fastcnn._reference.linear import (
    linear_backward,
    linear_forward,
)
from fastcnn._reference.loss import (
    softmax_cross_entropy,
)
from fastcnn._reference.merging import (
    add_n,
    concatenate,
    split,
)
from fastcnn._reference.normalization import (
    batch_norm_backward,
    batch_norm_forward,
)
from fastcnn._reference.optim import (
    adam_update,
    sgd_update,
)
from fastcnn._reference.pad import (
    pad2d_backward,
    pad2d_forward,
)
from fastcnn._reference.pooling import (
    avg_pool2d_backward,
    avg_pool2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
)
from fastcnn._reference.resample import (
    adaptive_avg_pool2d_backward,
    adaptive_avg_pool2d_forward,
    adaptive_max_pool2d_forward,
    interpolate_backward,
    interpolate_forward,
)

__all__ = [
    "conv2d_forward",
    "conv2d_backward",
    "max_pool2d_forward",
    "max_pool2d_backward",
    "avg_pool2d_forward",
    "avg_pool2d_backward",
    "linear_forward",
    "linear_backward",
    "sgd_update",
    "adam_update",
    "softmax_cross_entropy",
    "relu_forward",
    "relu_backward",
    "tanh_forward",
    "tanh_backward",
    "sigmoid_forward",
    "sigmoid_backward",
    "leaky_relu_forward",
    "leaky_relu_backward",
    "batch_norm_forward",
    "batch_norm_backward",
    # GELU, SiLU and softmax
    "gelu_forward",
    "gelu_backward",
    "silu_forward",
    "silu_backward",
    "softmax_forward",
    "softmax_backward",
    "adaptive_avg_pool2d_forward",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d_forward",
    "interpolate_forward",
    "interpolate_backward",
    "pad2d_forward",
    "pad2d_backward",
    # merging
    "add_n",
    "concatenate",
    "split",
]
