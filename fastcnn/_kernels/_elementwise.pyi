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
def gelu_forward(
    x: NDArray[np.floating], out: NDArray[np.floating], approximate_tanh: bool, n_threads: int
) -> None: ...
def gelu_backward(
    grad_out: NDArray[np.floating],
    x: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    approximate_tanh: bool,
    n_threads: int,
) -> None: ...
def silu_forward(x: NDArray[np.floating], out: NDArray[np.floating], n_threads: int) -> None: ...
def silu_backward(
    grad_out: NDArray[np.floating],
    x: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    n_threads: int,
) -> None: ...
def softmax_forward(
    x: NDArray[np.floating], out: NDArray[np.floating], log_out: bool, n_threads: int
) -> None: ...
def softmax_backward(
    grad_out: NDArray[np.floating],
    y: NDArray[np.floating],
    grad_x: NDArray[np.floating],
    log_out: bool,
    n_threads: int,
) -> None: ...
