import numpy as np
from numpy.typing import NDArray

def sgd_update(
    params: list[NDArray[np.floating]],
    grads: list[NDArray[np.floating]],
    momentum_buffers: list[NDArray[np.floating]] | None,
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool,
    first: bool,
    n_threads: int,
) -> None: ...
def adam_update(
    params: list[NDArray[np.floating]],
    grads: list[NDArray[np.floating]],
    exp_avgs: list[NDArray[np.floating]],
    exp_avg_sqs: list[NDArray[np.floating]],
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    step_size: float,
    denom_scale: float,
    n_threads: int,
) -> None: ...
