import numpy as np
from numpy.typing import NDArray

def batch_norm_forward(
    x: NDArray[np.floating],
    weight: NDArray[np.floating],
    bias: NDArray[np.floating],
    running_mean: NDArray[np.floating] | None,
    running_var: NDArray[np.floating] | None,
    out: NDArray[np.floating],
    mean: NDArray[np.floating],
    inv_std: NDArray[np.floating],
    training: bool,
    momentum: float,
    eps: float,
    n_threads: int,
) -> None: ...
def batch_norm_backward(
    grad_out: NDArray[np.floating],
    x: NDArray[np.floating],
    weight: NDArray[np.floating],
    mean: NDArray[np.floating],
    inv_std: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    grad_weight: NDArray[np.floating],
    grad_bias: NDArray[np.floating],
    training: bool,
    n_threads: int,
) -> None: ...
