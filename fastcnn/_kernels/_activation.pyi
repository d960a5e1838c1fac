import numpy as np
from numpy.typing import NDArray

def relu_forward(x: NDArray[np.floating], out: NDArray[np.floating], n_threads: int) -> None: ...
def relu_backward(
    grad_out: NDArray[np.floating],
    y: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    n_threads: int,
) -> None: ...
def tanh_forward(x: NDArray[np.floating], out: NDArray[np.floating], n_threads: int) -> None: ...
def tanh_backward(
    grad_out: NDArray[np.floating],
    y: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    n_threads: int,
) -> None: ...
def sigmoid_forward(
    x: NDArray[np.floating], out: NDArray[np.floating], n_threads: int
) -> None: ...
def sigmoid_backward(
    grad_out: NDArray[np.floating],
    y: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    n_threads: int,
) -> None: ...
