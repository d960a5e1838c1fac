import numpy as np
from numpy.typing import NDArray

def pad2d_forward(
    x: NDArray[np.floating],
    out: NDArray[np.floating],
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    n_threads: int,
) -> None: ...
def pad2d_backward(
    grad_out: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    rows: NDArray[np.int64],
    cols: NDArray[np.int64],
    n_threads: int,
) -> None: ...
