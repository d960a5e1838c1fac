import numpy as np
from numpy.typing import NDArray

def linear_forward(
    x: NDArray[np.floating],
    weight: NDArray[np.floating],
    bias: NDArray[np.floating] | None,
    out: NDArray[np.floating],
    n_threads: int,
) -> None: ...
def linear_backward(
    grad_out: NDArray[np.floating],
    x: NDArray[np.floating],
    weight: NDArray[np.floating],
    grad_x: NDArray[np.floating] | None,
    grad_weight: NDArray[np.floating] | None,
    grad_bias: NDArray[np.floating] | None,
    n_threads: int,
) -> None: ...
def _release_scratch() -> int: ...
