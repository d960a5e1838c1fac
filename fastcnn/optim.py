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
one call to :func:`fastcnn.functional.sgd_step` / :func:`~fastcnn.functional.adam_step`:
the compiled backend makes a single pass over each array, where numpy needs up to a dozen
ufunc calls per array.

A schedule changes ``optimizer.lr`` once per epoch: call ``scheduler.step()`` after each
epoch, or pass the scheduler to ``fit(callbacks=[scheduler])``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

import fastcnn.functional as F
from fastcnn._validation import check_bool, check_number, check_param_pairs, is_int

__all__ = ["SGD", "Adam", "CosineAnnealingLR", "LRScheduler", "Optimizer", "StepLR"]

ParamsAndGrads = Sequence[tuple[np.ndarray, np.ndarray]]
_Lists = tuple[list[tuple[np.ndarray, np.ndarray]] | None, list[np.ndarray], list[np.ndarray]]


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
        self.lr = check_number(lr, "lr")
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
        """Tell whether the list holds exactly the bound arrays, in order.

        A cheap identity check per step, so pairs added to or replaced in a list already
        seen are bound.
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

    def _arrays(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Return the bound params and grads as two lists (built once per bound list)."""
        if self._lists is None or self._lists[0] is not self._params:
            params = [param for param, _ in self._params or ()]
            grads = [grad for _, grad in self._params or ()]
            self._lists = (self._params, params, grads)
        return self._lists[1], self._lists[2]

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
        """Return the constructor arguments (hyper-parameters) as a dict."""
        return {"lr": self.lr}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    @staticmethod
    def _check_params(params_and_grads: Iterable[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
        return check_param_pairs(params_and_grads)


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
        self.momentum = check_number(momentum, "momentum")
        self.nesterov = check_bool(nesterov, "nesterov")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True requires momentum > 0, got momentum=0")
        self.weight_decay = check_number(weight_decay, "weight_decay")

    def _step(self) -> None:
        params, grads = self._arrays()
        if not self.momentum:
            F.sgd_step(
                params, grads, None, lr=self.lr, weight_decay=self.weight_decay,
                nesterov=self.nesterov,
            )  # fmt: skip
            return
        # A None buffer is a first step: sgd_step puts a new buffer in its place.
        buffers = [state.get("momentum_buffer") for state in self._state]
        new = any(buffer is None for buffer in buffers)
        F.sgd_step(
            params, grads, buffers, lr=self.lr, momentum=self.momentum,
            weight_decay=self.weight_decay, nesterov=self.nesterov,
        )  # fmt: skip
        if new:
            for state, buffer in zip(self._state, buffers, strict=True):
                state["momentum_buffer"] = buffer

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments (hyper-parameters) as a dict."""
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
            check_number(betas[0], "betas[0]", high=1.0),
            check_number(betas[1], "betas[1]", high=1.0),
        )
        self.eps = check_number(eps, "eps")
        self.weight_decay = check_number(weight_decay, "weight_decay")

    def _step(self) -> None:
        params, grads = self._arrays()
        for state, param in zip(self._state, params, strict=True):
            if "exp_avg" not in state:
                state["exp_avg"] = np.zeros_like(param)
                state["exp_avg_sq"] = np.zeros_like(param)
        beta1, beta2 = self.betas
        F.adam_step(
            params, grads,
            [state["exp_avg"] for state in self._state],
            [state["exp_avg_sq"] for state in self._state],
            step=self.n_steps, lr=self.lr, beta1=beta1, beta2=beta2, eps=self.eps,
            weight_decay=self.weight_decay,
        )  # fmt: skip

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments (hyper-parameters) as a dict."""
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
        """Return the learning rate set by the last ``step()`` (the base rate before any)."""
        return self.optimizer.lr

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Take one ``step()`` per epoch (a :meth:`fastcnn.Sequential.fit` callback hook)."""
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
        self.gamma = check_number(gamma, "gamma")

    def get_lr(self, epoch: int) -> float:
        """Return the learning rate of epoch ``epoch``."""
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
        self.eta_min = check_number(eta_min, "eta_min")

    def get_lr(self, epoch: int) -> float:
        """Return the learning rate of epoch ``epoch``."""
        cosine = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cosine
