"""The ops of :mod:`fastcnn.functional` that keep training state.

Dropout (its random mask), batch norm (running statistics), the loss and the optimizer
steps. They live apart from the other ops only to keep each module short; import them from
:mod:`fastcnn.functional`. Batch norm's running statistics and the optimizer steps'
arrays are updated in place, as PyTorch's are: the exceptions to "every op returns new
arrays".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from fastcnn import _backend, _buffers, _threads
from fastcnn._validation import (
    FLOAT_DTYPES,
    RngLike,
    as_float_array,
    check_batch_input,
    check_bool,
    check_channel_vector,
    check_float,
    check_grad_out,
    check_labels,
    check_logits,
    check_number,
    check_positive_int,
    check_rng,
    check_sample_weight,
    check_state_arrays,
    check_step_lists,
    contiguous,
    same_dtype,
)

# Annotations only: the API pages then show these names as written.
if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "adam_step",
    "batch_norm",
    "batch_norm_backward",
    "dropout",
    "dropout_backward",
    "sgd_step",
    "softmax_cross_entropy",
]


# ---------------------------------------------------------------------------------------
# Dropout


def dropout(
    x: np.ndarray, p: float = 0.5, training: bool = True, rng: RngLike = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    Inverted dropout, PyTorch's ``dropout``.

    The mask is drawn with ``rng.random`` in float64 whatever the dtype, so one seed gives
    the same mask for float32 and float64. Both backends share this numpy code: drawing
    the random numbers is the cost, and numpy's generator is the one users seed.

    Parameters
    ----------
    x : ndarray of any shape, float32 or float64
    p : float in [0, 1], default 0.5
        Probability of dropping an element (``p = 1`` drops all).
    training : bool, default True
        When False, or when ``p == 0``, dropout is the identity: ``x`` itself is returned
        (not a copy, as PyTorch's ``dropout`` in eval mode) with mask None.
    rng : int, numpy.random.Generator or None
        Source of the mask; a Generator is advanced. None draws fresh entropy.

    Returns
    -------
    y : ndarray of the shape and dtype of x
    mask : ndarray of the shape and dtype of x, or None
        0 for dropped elements, ``1 / (1 - p)`` for kept ones; give it to
        :func:`dropout_backward`.
    """
    x = as_float_array(x, "x")
    p = check_float(p, "p", 0.0, 1.0)
    if not check_bool(training, "training") or p == 0.0:
        return x, None
    mask = (check_rng(rng).random(x.shape) >= p).astype(x.dtype)
    if p < 1.0:
        mask *= 1.0 / (1.0 - p)
    out: np.ndarray = x * mask
    return out, mask


def dropout_backward(grad_out: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Gradient of :func:`dropout`: ``grad_out * mask`` (``grad_out`` itself for no mask).

    Parameters
    ----------
    grad_out : ndarray, the shape and dtype of the mask
    mask : ndarray or None
        The mask :func:`dropout` returned.

    Returns
    -------
    grad_x : ndarray of the shape and dtype of grad_out
    """
    grad_out = as_float_array(grad_out, "grad_out")
    if mask is None:
        return grad_out
    mask = as_float_array(mask, "mask")
    same_dtype(mask, grad_out, "mask", "grad_out")
    if grad_out.shape != mask.shape:
        raise ValueError(
            f"grad_out must have the shape of mask {mask.shape}, got {grad_out.shape}"
        )
    grad_x: np.ndarray = grad_out * mask
    return grad_x


# ---------------------------------------------------------------------------------------
# Normalization


def batch_norm(
    x: np.ndarray,
    running_mean: np.ndarray | None,
    running_var: np.ndarray | None,
    weight: np.ndarray | None = None,
    bias: np.ndarray | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch normalization over every axis but the channels (PyTorch's ``batch_norm``).

    In training each channel is normalized with the batch mean and biased variance,
    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, and each running statistic given
    is updated **in place** (like an optimizer's state, the exception to "every op
    returns new arrays"): ``running = (1 - momentum) * running + momentum * batch``, with
    the unbiased batch variance. In eval mode the running statistics normalize instead.

    Parameters
    ----------
    x : ndarray of shape (N, C, ...), float32 or float64
    running_mean, running_var : ndarray of shape (C,) or None
        Required in eval mode; in training, None skips that update.
    weight, bias : ndarray of shape (C,) or None
        Per-channel scale and shift; None means 1 and 0.
    training : bool, default False
    momentum : float in [0, 1], default 0.1
    eps : float > 0, default 1e-5

    Returns
    -------
    y : ndarray of the shape and dtype of x
    mean, inv_std : ndarrays of shape (C,)
        The statistics that normalized ``x`` (batch or running; ``inv_std = 1 /
        sqrt(var + eps)``): give them to :func:`batch_norm_backward`.

    Shapes
    ------
    Input (N, C, H, W) or any (N, C, ...), output the same. Training needs more than one
    value per channel (``N * H * W >= 2``).
    """
    training = check_bool(training, "training")
    x3 = check_batch_input(x, training)
    stats = [
        check_channel_vector(v, name, x3, writeable=training)  # read-only in eval: fine
        for v, name in ((running_mean, "running_mean"), (running_var, "running_var"))
    ]
    if not training and (stats[0] is None or stats[1] is None):
        raise ValueError(
            "batch_norm in eval mode (training=False) needs running_mean and running_var"
        )
    weight, bias = _channel_affine(weight, bias, x3)
    momentum = check_float(momentum, "momentum", 0.0, 1.0)
    eps = check_number(eps, "eps")
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    out = _buffers.empty(x3.shape, dtype=x3.dtype)
    mean, inv_std = np.empty((2, x3.shape[1]), dtype=x3.dtype)
    flat = [None if v is None else contiguous(v) for v in stats]
    _backend.current().batch_norm_forward(
        x3, weight, bias, flat[0], flat[1], out, mean, inv_std, training, momentum, eps,
        _threads.get_num_threads(),
    )  # fmt: skip
    for given, used in zip((running_mean, running_var), flat, strict=True):
        if training and used is not None and not np.may_share_memory(used, given):
            given[...] = used  # type: ignore[index]  # a strided or byte-swapped buffer
    return out.reshape(np.shape(x)), mean, inv_std


def _channel_affine(
    weight: ArrayLike | None, bias: ArrayLike | None, x: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Return the (C,) scale and shift of a normalization, ones and zeros for None."""
    w = check_channel_vector(weight, "weight", x)
    b = check_channel_vector(bias, "bias", x)
    c = x.shape[1]
    return (
        np.ones(c, x.dtype) if w is None else contiguous(w),
        np.zeros(c, x.dtype) if b is None else contiguous(b),
    )


def batch_norm_backward(
    grad_out: np.ndarray,
    x: np.ndarray,
    weight: np.ndarray | None,
    mean: np.ndarray,
    inv_std: np.ndarray,
    training: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of :func:`batch_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : ndarray of the shape of x
    x, weight : as given to :func:`batch_norm`
    mean, inv_std : ndarrays of shape (C,)
        As returned by :func:`batch_norm`.
    training : bool, default True
        As given to :func:`batch_norm`: in eval mode the statistics are constants and
        ``grad_x = grad_out * weight * inv_std``.

    Returns
    -------
    grad_x : ndarray of the shape of x
    grad_weight, grad_bias : ndarrays of shape (C,)
        ``sum(grad_out * xhat)`` and ``sum(grad_out)`` per channel, with ``xhat = (x -
        mean) * inv_std``.
    """
    training = check_bool(training, "training")
    x3 = check_batch_input(x, False)
    grad_out = check_grad_out(grad_out, x3, np.shape(x)).reshape(x3.shape)
    weight, _ = _channel_affine(weight, None, x3)
    mean, inv_std = (
        contiguous(check_channel_vector(v, name, x3))  # type: ignore[arg-type]
        for v, name in ((mean, "mean"), (inv_std, "inv_std"))
    )
    grad_x = _buffers.empty(x3.shape, dtype=x3.dtype)
    grad_weight, grad_bias = np.empty((2, x3.shape[1]), dtype=x3.dtype)
    _backend.current().batch_norm_backward(
        grad_out, x3, weight, mean, inv_std, grad_x, grad_weight, grad_bias, training,
        _threads.get_num_threads(),
    )  # fmt: skip
    return grad_x.reshape(np.shape(x)), grad_weight, grad_bias


# ---------------------------------------------------------------------------------------
# Loss


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, sample_weight: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy of integer labels, and its gradient w.r.t. the logits.

    ``loss = mean_i(logsumexp(logits[i]) - logits[i, labels[i]])``, computed with the row
    maximum subtracted first, so logits of any finite magnitude (e.g. 1e4) are exact where
    a naive ``log(softmax)`` would overflow. PyTorch's ``cross_entropy`` with the default
    mean reduction.

    Parameters
    ----------
    logits : ndarray of shape (N, n_classes), float
        Raw, unnormalized scores; float16 runs on the numpy backend.
    labels : ndarray of shape (N,), integer
        Class indices in ``[0, n_classes)``.
    sample_weight : ndarray of shape (N,), optional
        Non-negative weight of each sample's loss: ``loss = sum_i(w[i] * loss_i) / N``.

    Returns
    -------
    loss : float
    grad_logits : ndarray of shape (N, n_classes), dtype of ``logits``
        ``w[:, None] * (softmax(logits) - one_hot(labels)) / N`` (``w = 1`` without
        weights).
    """
    logits = check_logits(logits)
    labels = check_labels(labels, logits)
    n = logits.shape[0]
    w = None if sample_weight is None else check_sample_weight(sample_weight, n)
    grad = np.empty(logits.shape, logits.dtype)
    if logits.dtype in FLOAT_DTYPES:
        backend = _backend.current()
        logits = contiguous(logits)
    else:  # float16: the compiled loss takes float32 and float64
        backend = _backend.reference_module()
    loss = backend.softmax_cross_entropy(logits, labels, grad, _threads.get_num_threads())
    if w is None:
        return loss, grad
    # The kernel gives the unweighted gradient; each row scales by its weight. The value
    # needs each sample's own loss, logsumexp(row) - row[label], in float64.
    z = logits.astype(np.float64, copy=False)
    shifted = z - z.max(axis=1, keepdims=True)
    row_losses = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(n), labels]
    grad *= w[:, None].astype(grad.dtype)
    return float(np.dot(w, row_losses)) / n, grad


# ---------------------------------------------------------------------------------------
# Optimizer steps (in place: parameters and optimizer state are updated, nothing returned)


def sgd_step(
    params: list[np.ndarray],
    grads: list[np.ndarray],
    momentum_buffers: list[np.ndarray | None] | None = None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> None:
    """One SGD step over every parameter array, in place (``torch.optim.SGD``'s rule).

    Per parameter: ``d = grad + weight_decay * param``; with momentum, ``buf = d`` on the
    first step and ``buf = momentum * buf + d`` after it; then ``param -= lr * (d +
    momentum * buf)`` (Nesterov), ``lr * buf`` (momentum) or ``lr * d``. Like PyTorch's
    functional ``sgd``, a None in ``momentum_buffers`` is a first step: a new buffer is
    stored in the list in its place. Parameters and buffers are updated in place (the
    exception to "every op returns new arrays"); the compiled backend updates them all
    in one call, the numpy one also any non-contiguous arrays.

    Parameters
    ----------
    params, grads : lists of ndarrays
        Each grad of its param's shape and float dtype; params writeable.
    momentum_buffers : list of ndarrays or None, or None
        One per param, required when ``momentum > 0``.
    lr, momentum, weight_decay : float >= 0
    dampening : float, default 0
        Only 0 (PyTorch's default) is implemented.
    nesterov : bool, default False
        Requires ``momentum > 0``.
    """
    lr = check_number(lr, "lr")
    momentum = check_number(momentum, "momentum")
    weight_decay = check_number(weight_decay, "weight_decay")
    if check_number(dampening, "dampening") != 0:
        raise ValueError(f"dampening must be 0 (the only value implemented), got {dampening!r}")
    if check_bool(nesterov, "nesterov") and momentum == 0:
        raise ValueError("nesterov=True requires momentum > 0, got momentum=0")
    args = (lr, momentum, weight_decay, bool(nesterov))
    n_threads = _threads.get_num_threads()
    if not momentum:
        _update("sgd_update", (params, grads), (None, *args, False, n_threads))
        return
    buffers: list[Any] = momentum_buffers  # type: ignore[assignment]
    if not _same_length((params, grads, buffers)):
        _checked_backend((params, grads, buffers), allow_none=True)  # raises what is wrong
    new = [b is None for b in buffers]
    for i, is_new in enumerate(new):
        if is_new:  # the first-step update writes d into it
            buffers[i] = np.empty_like(params[i], order="C")
    for first in (True, False):
        pick = [i for i, is_new in enumerate(new) if is_new == first]
        if len(pick) == len(params):
            _update("sgd_update", (params, grads, buffers), (*args, first, n_threads), True)
        elif pick:
            lists = tuple([values[i] for i in pick] for values in (params, grads, buffers))
            _update("sgd_update", lists, (*args, first, n_threads), True)


def adam_step(
    params: list[np.ndarray],
    grads: list[np.ndarray],
    exp_avgs: list[np.ndarray],
    exp_avg_sqs: list[np.ndarray],
    *,
    step: int,
    lr: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> None:
    """One Adam step over every parameter array, in place (``torch.optim.Adam``'s rule).

    Per parameter, at step ``t`` (1-based): ``g = grad + weight_decay * param``,
    ``m = beta1 * m + (1 - beta1) * g``, ``v = beta2 * v + (1 - beta2) * g * g``, and
    ``param -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``. The
    parameters and both moment lists are updated in place (the exception to "every op
    returns new arrays"). L2 weight decay, not AdamW's decoupled one.

    Parameters
    ----------
    params, grads : lists of ndarrays
        Each grad of its param's shape and float dtype; params writeable.
    exp_avgs, exp_avg_sqs : lists of ndarrays
        The moments ``m`` and ``v``, one per param (zeros before the first step).
    step : int >= 1
        The step being taken, for the bias corrections.
    lr, eps, weight_decay : float >= 0
    beta1, beta2 : float in [0, 1)
    """
    step = check_positive_int(step, "step")
    lr, eps = check_number(lr, "lr"), check_number(eps, "eps")
    weight_decay = check_number(weight_decay, "weight_decay")
    beta1 = check_number(beta1, "beta1", high=1.0)
    beta2 = check_number(beta2, "beta2", high=1.0)
    bias_corrections = (lr / (1 - beta1**step), math.sqrt(1 - beta2**step))
    _update(
        "adam_update", (params, grads, exp_avgs, exp_avg_sqs),
        (beta1, beta2, eps, weight_decay, *bias_corrections, _threads.get_num_threads()),
    )  # fmt: skip


_STATE_NAMES = {
    "sgd_update": ("momentum_buffers",),
    "adam_update": ("exp_avgs", "exp_avg_sqs"),
}


def _update(
    kernel: str, lists: tuple[list[Any], ...], args: tuple[Any, ...], laid_out: bool = False
) -> None:
    """Run an optimizer update on the active backend, checking its lists first.

    The compiled updates check every array (type, dtype, size, layout, writeable) before
    writing any, so on that backend only the lists' lengths are checked here (``laid_out``:
    the caller did), keeping the per-step cost as it was before this door: a microsecond.
    The full checks (shapes included) run when it refuses, to name the problem, or to
    move non-contiguous arrays to the numpy backend (any layout), and on that backend.
    """
    backend = _backend.current()
    compiled = backend is not _backend.reference_module()
    if compiled and (laid_out or _same_length(lists)):
        try:
            getattr(backend, kernel)(*lists, *args)
            return
        except ValueError:
            pass  # the checks below say what is wrong
    flat = _checked_backend(lists, names=_STATE_NAMES[kernel])
    getattr(backend if flat else _backend.reference_module(), kernel)(*lists, *args)


def _same_length(lists: tuple[list[Any], ...]) -> bool:
    """Tell whether the lists are lists of one length (the compiled updates check the rest)."""
    params = lists[0]
    for values in lists:
        if type(values) is not list or len(values) != len(params):
            return False
    return True


def _checked_backend(
    lists: tuple[list[Any], ...],
    allow_none: bool = False,
    names: tuple[str, ...] = ("momentum_buffers",),
) -> bool:
    """Check params, grads and state lists in full; tell whether all are C-contiguous."""
    params, grads, *states = lists
    named = dict(zip(names, states, strict=False))
    flat = check_step_lists(params, grads, **named)
    for name, values in named.items():
        flat = check_state_arrays(values, name, params, allow_none) and flat
    return flat
