import numpy as np
from numpy.typing import NDArray

def add_n(
    arrays: list[NDArray[np.floating]], out: NDArray[np.floating], n_threads: int
) -> None: ...
def concatenate(
    arrays: list[NDArray[np.floating]], out: NDArray[np.floating], n_threads: int
) -> None: ...
def split(
    grad: NDArray[np.floating], outs: list[NDArray[np.floating]], n_threads: int
) -> None: ...
