import numpy as np
from numpy.typing import NDArray

def leaky_relu_forward(
    x: NDArray[np.floating], out: NDArray[np.floating], negative_slope: float, n_threads: int
) -> None: ...
def leaky_relu_backward(
    grad_out: NDArray[np.floating],
    x: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    negative_slope: float,
    n_threads: int,
) -> None: ...
