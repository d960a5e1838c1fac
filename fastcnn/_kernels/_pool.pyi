import numpy as np
from numpy.typing import NDArray

def max_pool2d_forward(
    x: NDArray[np.floating],
    out: NDArray[np.floating],
    indices: NDArray[np.int64],
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    n_threads: int,
) -> None: ...
def max_pool2d_backward(
    grad_out: NDArray[np.floating],
    indices: NDArray[np.int64],
    grad_x: NDArray[np.floating],
    n_threads: int,
) -> int: ...
def avg_pool2d_forward(
    x: NDArray[np.floating],
    out: NDArray[np.floating],
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    count_include_pad: bool,
    divisor_override: int,
    n_threads: int,
) -> None: ...
def avg_pool2d_backward(
    grad_out: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    kernel_h: int,
    kernel_w: int,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    count_include_pad: bool,
    divisor_override: int,
    n_threads: int,
) -> None: ...
