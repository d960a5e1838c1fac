"""Optimizers (SGD, Adam) and learning-rate schedules, updating parameters in place.

An optimizer works on a list of ``(param, grad)`` array pairs, the list returned by
:meth:`fastcnn.Sequential.parameters`. It binds to the list on the first ``step`` and
keeps its per-parameter state (momentum, Adam moments) by position in that list, as
PyTorch's ``state_dict`` does: a later list of the same layout (as many pairs, the same
shapes and dtypes) continues it, even with other arrays (a copied, pickled or
joblib-loaded model), so passing the same optimizer to several ``fit`` calls continues
training where it stopped. A list of another layout starts fresh state.

The update rules are PyTorch's (``torch.optim.SGD`` and ``torch.optim.Adam`` with default
flags), so results can be compared step by step. SGD and Adam update every parameter in
one call to the active backend (``sgd_update``/``adam_update``): the compiled one makes
a single pass over each array, where numpy needs up to a dozen ufunc calls per array.

A schedule changes ``optimizer.lr`` once per epoch: call ``scheduler.step()`` after each
epoch, or pass the scheduler to ``fit(callbacks=[scheduler])``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from fastcnn import _backend, _threads
from fastcnn._validation import is_int

__all__ = ["SGD", "Adam", "CosineAnnealingLR", "LRScheduler", "Optimizer", "StepLR"]

ParamsAndGrads = Sequence[tuple[np.ndarray, np.ndarray]]
_Lists = tuple[
    list[tuple[np.ndarray, np.ndarray]] | None, list[np.ndarray], list[np.ndarray], bool
]


def _check_number(value: object, name: str, *, low: float = 0.0, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float, got {value!r}")
    value = float(value)
    if not (low <= value < high) or math.isnan(value):
        raise ValueError(f"{name} must be in [{low}, {high}), got {value!r}")
    return value


class Optimizer:
    """Template for optimizers: ``step`` applies ``_update`` to every parameter.

    Subclasses implement ``_update(param, grad, state)``, which must modify ``param`` in
    place, and may keep arrays in ``state`` (a dict per parameter, empty on the first step).
    (SGD and Adam override ``_step`` instead, to update all parameters in one call.)

    Parameters
    ----------
    lr : float
        Learning rate; schedules change it through the ``lr`` attribute.

    Attributes
    ----------
    lr : float
    n_steps : int
        Steps taken since the optimizer was bound to its parameters.
    """

    def __init__(self, lr: float) -> None:
        self.lr = _check_number(lr, "lr")
        self.n_steps = 0
        self._params: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._state: list[dict[str, Any]] = []
        # _arrays' lists, for the pairs bound last: (those pairs, params, grads, all flat)
        self._lists: _Lists | None = None

    def bind(self, params_and_grads: ParamsAndGrads) -> Optimizer:
        """Attach to a list of ``(param, grad)`` pairs; returns self.

        Keeps the optimizer state when the list has the layout of the one bound before
        (as many pairs, each param of the same shape and dtype as the one at its
        position): e.g. the same model's ``parameters()`` on a later ``fit``, or an
        unpickled copy's. Resets it otherwise.
        """
        pairs = self._check_params(params_and_grads)
        if not self._same_layout(pairs):
            self._state = [{} for _ in pairs]
            self.n_steps = 0
        self._params = pairs
        return self

    def _same_layout(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> bool:
        old = self._params
        return (
            old is not None
            and len(old) == len(pairs)
            and all(
                p.shape == q.shape and p.dtype == q.dtype
                for (p, _), (q, _) in zip(pairs, old, strict=True)
            )
        )

    def _holds_bound_pairs(self, params_and_grads: ParamsAndGrads) -> bool:
        """Whether the list holds exactly the bound arrays, in order: a cheap identity
        check per step, so pairs added to or replaced in a list already seen are bound.
        """
        old = self._params
        if old is None or len(params_and_grads) != len(old):
            return False
        for item, (param, grad) in zip(params_and_grads, old, strict=True):
            if type(item) is not tuple or len(item) != 2:
                return False
            if item[0] is not param or item[1] is not grad:
                return False
        return True

    def _arrays(self) -> tuple[list[np.ndarray], list[np.ndarray], _backend.Backend]:
        """The bound params and grads as two lists, and the backend to update them with:
        the active one, or numpy's when an array is not C-contiguous (the compiled
        updates need flat arrays; numpy's work on any layout).
        """
        if self._lists is None or self._lists[0] is not self._params:
            params = [param for param, _ in self._params or ()]
            grads = [grad for _, grad in self._params or ()]
            flat = all(a.flags.c_contiguous for a in params + grads)
            self._lists = (self._params, params, grads, flat)
        _, params, grads, flat = self._lists
        return params, grads, _backend.current() if flat else _backend._reference_module()

    def step(self, params_and_grads: ParamsAndGrads | None = None) -> None:
        """Update every parameter in place from its current gradient.

        Parameters
        ----------
        params_and_grads : list of (param, grad) pairs, optional
            Binds to this list first (see :meth:`bind`); defaults to the bound list.
        """
        if params_and_grads is not None and not self._holds_bound_pairs(params_and_grads):
            self.bind(params_and_grads)
        if self._params is None:
            raise RuntimeError(
                f"{type(self).__name__} has no parameters: call step(model.parameters()) "
                "or bind(model.parameters()) first"
            )
        self.n_steps += 1
        self._step()

    def _step(self) -> None:
        for (param, grad), state in zip(self._params or (), self._state, strict=True):
            self._update(param, grad, state)

    def reset(self) -> None:
        """Forget the per-parameter state (momentum, moments) and the step count."""
        self._state = [{} for _ in self._params or ()]
        self.n_steps = 0

    def _update(self, param: np.ndarray, grad: np.ndarray, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (hyper-parameters) as a dict."""
        return {"lr": self.lr}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    @staticmethod
    def _check_params(params_and_grads: Iterable[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
        pairs = []
        for i, item in enumerate(params_and_grads):
            try:
                param, grad = item
            except (TypeError, ValueError):
                raise TypeError(
                    f"parameters must be (param, grad) pairs as returned by "
                    f"model.parameters(); item {i} is {type(item).__name__}"
                ) from None
            if not (isinstance(param, np.ndarray) and isinstance(grad, np.ndarray)):
                raise TypeError(f"parameter {i}: param and grad must be numpy arrays")
            if param.dtype.kind != "f" or grad.shape != param.shape or grad.dtype != param.dtype:
                raise ValueError(
                    f"parameter {i}: grad must be a float array of the param's shape and "
                    f"dtype; param {param.shape} {param.dtype}, grad {grad.shape} {grad.dtype}"
                )
            if not param.flags.writeable:
                raise ValueError(f"parameter {i} is read-only; it must be updated in place")
            pairs.append((param, grad))
        return pairs


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    Per parameter, as ``torch.optim.SGD`` (with ``dampening=0``)::

        d = grad + weight_decay * param
        buf = d                         (first step)
        buf = momentum * buf + d        (later steps)
        d = d + momentum * buf          (nesterov)  or  d = buf  (momentum > 0)
        param -= lr * d

    Parameters
    ----------
    lr : float, default 0.01
    momentum : float, default 0.0
    nesterov : bool, default False
        Requires ``momentum > 0``.
    weight_decay : float, default 0.0
    """

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.momentum = _check_number(momentum, "momentum")
        if not isinstance(nesterov, bool | np.bool_):
            raise TypeError(f"nesterov must be a bool, got {nesterov!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True requires momentum > 0, got momentum=0")
        self.weight_decay = _check_number(weight_decay, "weight_decay")

    def _step(self) -> None:
        params, grads, backend = self._arrays()
        n_threads = _threads.get_num_threads()
        args = (self.lr, self.momentum, self.weight_decay, self.nesterov)
        if not self.momentum:
            backend.sgd_update(params, grads, None, *args, False, n_threads)
            return
        # The first step copies d into each new buffer; a checkpoint may restore some
        # buffers before that, so the two kinds are updated in separate calls.
        new = [state.get("momentum_buffer") is None for state in self._state]
        for state, param, is_new in zip(self._state, params, new, strict=True):
            if is_new:
                state["momentum_buffer"] = np.empty_like(param)
        buffers = [state["momentum_buffer"] for state in self._state]
        for first in (True, False):
            pick = [i for i, is_new in enumerate(new) if is_new == first]
            if len(pick) == len(params):
                backend.sgd_update(params, grads, buffers, *args, first, n_threads)
            elif pick:
                backend.sgd_update(
                    [params[i] for i in pick], [grads[i] for i in pick],
                    [buffers[i] for i in pick], *args, first, n_threads,
                )  # fmt: skip

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
        }


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction and optional L2 weight decay.

    Per parameter, at step ``t`` (1-based), as ``torch.optim.Adam``::

        g = grad + weight_decay * param
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        param -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in [0, 1).
    eps : float, default 1e-8
    weight_decay : float, default 0.0
        L2 penalty added to the gradient (not AdamW's decoupled decay).
    """

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(lr)
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
        self.betas = (
            _check_number(betas[0], "betas[0]", high=1.0),
            _check_number(betas[1], "betas[1]", high=1.0),
        )
        self.eps = _check_number(eps, "eps")
        self.weight_decay = _check_number(weight_decay, "weight_decay")

    def _step(self) -> None:
        params, grads, backend = self._arrays()
        for state, param in zip(self._state, params, strict=True):
            if "exp_avg" not in state:
                state["exp_avg"] = np.zeros_like(param)
                state["exp_avg_sq"] = np.zeros_like(param)
        beta1, beta2 = self.betas
        t = self.n_steps
        backend.adam_update(
            params, grads,
            [state["exp_avg"] for state in self._state],
            [state["exp_avg_sq"] for state in self._state],
            beta1, beta2, self.eps, self.weight_decay,
            self.lr / (1 - beta1**t), math.sqrt(1 - beta2**t),
            _threads.get_num_threads(),
        )  # fmt: skip

    def get_config(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }


# ---------------------------------------------------------------------------------------
# Learning-rate schedules


class LRScheduler:
    """Base class: sets ``optimizer.lr = get_lr(epoch)`` on every ``step()``.

    The learning rate the optimizer has when the scheduler is created is the base rate
    (epoch 0). ``step()`` is meant to be called once per epoch, after it; a scheduler is
    also a :meth:`~fastcnn.Sequential.fit` callback that does exactly that.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a fastcnn Optimizer, got {optimizer!r}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def get_lr(self, epoch: int) -> float:
        """Learning rate for epoch ``epoch`` (0-based)."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and update the optimizer's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.get_lr(self.last_epoch)

    def get_last_lr(self) -> float:
        """The learning rate set by the last ``step()`` (the base rate before any)."""
        return self.optimizer.lr

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Callback hook for :meth:`fastcnn.Sequential.fit`: one ``step()`` per epoch."""
        self.step()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_lr={self.base_lr}, last_epoch={self.last_epoch})"


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    ``lr(epoch) = base_lr * gamma ** (epoch // step_size)``, as PyTorch's ``StepLR``.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int
    gamma : float, default 0.1
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        if not is_int(step_size):
            raise TypeError(f"step_size must be a positive int, got {step_size!r}")
        if step_size < 1:
            raise ValueError(f"step_size must be a positive int, got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = _check_number(gamma, "gamma")

    def get_lr(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from the base rate to ``eta_min`` over ``T_max`` epochs.

    ``lr(epoch) = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2``, the
    closed form of ``torch.optim.lr_scheduler.CosineAnnealingLR`` (no restarts; past
    ``T_max`` the cosine continues, as in PyTorch).

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int
        Epochs from the base rate to ``eta_min``.
    eta_min : float, default 0.0
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803
        super().__init__(optimizer)
        if not is_int(T_max):
            raise TypeError(f"T_max must be a positive int, got {T_max!r}")
        if T_max < 1:
            raise ValueError(f"T_max must be a positive int, got {T_max!r}")
        self.T_max = int(T_max)
        self.eta_min = _check_number(eta_min, "eta_min")

    def get_lr(self, epoch: int) -> float:
        cosine = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cosine
