import numpy as np
from numpy.typing import NDArray

def adaptive_avg_pool2d_forward(
    x: NDArray[np.floating], out: NDArray[np.floating], n_threads: int
) -> None: ...
def adaptive_avg_pool2d_backward(
    grad_out: NDArray[np.floating], grad_x: NDArray[np.floating], n_threads: int
) -> None: ...
def adaptive_max_pool2d_forward(
    x: NDArray[np.floating],
    out: NDArray[np.floating],
    indices: NDArray[np.int64],
    n_threads: int,
) -> None: ...
def interpolate_forward(
    x: NDArray[np.floating],
    out: NDArray[np.floating],
    bilinear: bool,
    align_corners: bool,
    scale_h: float,
    scale_w: float,
    n_threads: int,
) -> None: ...
def interpolate_backward(
    grad_out: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    bilinear: bool,
    align_corners: bool,
    scale_h: float,
    scale_w: float,
    n_threads: int,
) -> None: ...
