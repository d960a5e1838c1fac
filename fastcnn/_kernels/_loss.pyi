import numpy as np
from numpy.typing import NDArray

def softmax_cross_entropy(
    logits: NDArray[np.floating],
    y: NDArray[np.intp],
    grad: NDArray[np.floating],
    n_threads: int,
) -> float: ...
