import numpy as np
from numpy.typing import NDArray

def conv2d_forward(
    x: NDArray[np.floating],
    weight: NDArray[np.floating],
    bias: NDArray[np.floating] | None,
    out: NDArray[np.floating],
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    n_threads: int,
) -> None: ...
def conv2d_backward(
    grad_out: NDArray[np.floating],
    x: NDArray[np.floating],
    weight: NDArray[np.floating],
    grad_x: NDArray[np.floating] | None,
    grad_weight: NDArray[np.floating] | None,
    grad_bias: NDArray[np.floating] | None,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    n_threads: int,
) -> None: ...
def direct_simd() -> str: ...
def _plan(
    n_batch: int,
    c_in: int,
    h: int,
    w: int,
    c_out: int,
    kh: int,
    kw: int,
    pad_h: int,
    pad_w: int,
    dil_h: int,
    dil_w: int,
    groups: int,
    needs_input_grad: bool = True,
) -> dict[str, str]: ...
def _release_scratch() -> int: ...
def _kept_scratch_bytes() -> int: ...
