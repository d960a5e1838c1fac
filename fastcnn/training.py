"""The training loop: batches, one step per batch, callbacks around them.

:meth:`fastcnn.Sequential.fit` checks its arguments and data, then calls :func:`fit`
here, a loop over the epochs of a :class:`Batches` iterator that calls a
:class:`~fastcnn.callbacks.CallbackList` (history, progress bar, checkpoints, the
divergence and Ctrl-C checks, the user's callbacks) around each epoch and batch, and
:func:`train_step` for each batch. Nothing here depends on the kind of model: any object
with ``forward(x, training)``, ``backward(grad, input_grad=...)`` and ``parameters()``
(plus ``state_dict``/``load_state_dict`` for the callbacks that keep weights, and what
:mod:`fastcnn.saving` stores for checkpoints) can be trained.
"""

from __future__ import annotations

import math
import numbers
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import numpy as np

from fastcnn import saving
from fastcnn._validation import check_int, check_sample_weight, check_X, check_y
from fastcnn.callbacks import (
    Callback,
    CallbackList,
    History,
    LearningRateScheduler,
    ProgbarLogger,
    check_callbacks,
)
from fastcnn.losses import LossFunction, get_loss, softmax_cross_entropy
from fastcnn.optim import SGD, Adam, Optimizer

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["Batches", "FitOptions", "evaluate", "fit", "train_step"]

#: The optimizers ``fit(optimizer=...)`` takes by name, as CNNClassifier(optimizer=) does.
OPTIMIZER_NAMES = {"adam": Adam, "sgd": SGD}


# ---------------------------------------------------------------------------------------
# The options of fit, its generator, its validation split


def resolve_optimizer(optimizer: object, previous: object) -> Any:
    """Return the optimizer to train with.

    The given one, one made from its name, else ``previous`` (the model's last), else
    ``Adam(1e-3)``.
    """
    if optimizer is None:
        return previous if previous is not None else Adam(1e-3)
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZER_NAMES:
            raise ValueError(
                f"optimizer must be one of {sorted(OPTIMIZER_NAMES)} or a fastcnn.optim "
                f"optimizer, got {optimizer!r}"
            )
        return OPTIMIZER_NAMES[optimizer]()
    if not callable(getattr(optimizer, "step", None)):
        raise TypeError(
            f"optimizer must be a fastcnn.optim optimizer (with a step method), got {optimizer!r}"
        )
    return optimizer


@dataclass
class FitOptions:
    """The checked options of a ``fit`` call that do not depend on the data."""

    epochs: int
    batch_size: int
    optimizer: Any
    loss: Any
    loss_fn: LossFunction
    classification: bool
    validation_split: float
    shuffle: bool
    verbose: int
    callbacks: list[object]
    checkpoint: str | None
    seeded: bool  # random_state was given: the Dropout masks are seeded from the run's


def fit_options(model: Any, **kw: Any) -> FitOptions:
    """Check ``fit``'s options (by keyword, as ``fit`` names them), in ``fit``'s order."""
    epochs = check_int(kw["epochs"], "epochs", 0)
    batch_size = check_int(kw["batch_size"], "batch_size", 1)
    if kw["verbose"] not in (0, 1, 2):
        raise ValueError(f"verbose must be 0, 1 or 2, got {kw['verbose']!r}")
    if not isinstance(kw["shuffle"], bool | np.bool_):
        raise TypeError(f"shuffle must be a bool, got {kw['shuffle']!r}")
    loss_fn = get_loss(kw["loss"])
    callbacks = check_callbacks(kw["callbacks"])
    split = kw["validation_split"]
    if isinstance(split, bool) or not isinstance(split, numbers.Real):
        raise TypeError(f"validation_split must be a float, got {split!r}")
    if not 0.0 <= float(split) < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {split!r}")
    if split and kw["validation_data"] is not None:
        raise ValueError("give either validation_data or validation_split, not both")
    optimizer = resolve_optimizer(kw["optimizer"], getattr(model, "optimizer", None))
    checkpoint = kw["checkpoint"]
    if checkpoint is not None:
        checkpoint = os.fspath(checkpoint)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"checkpoint needs a fastcnn.optim optimizer, whose state it can save; "
                f"got {optimizer!r}"
            )
    return FitOptions(epochs, batch_size, optimizer, kw["loss"], loss_fn,
                      loss_fn is softmax_cross_entropy, float(split), bool(kw["shuffle"]),
                      int(kw["verbose"]), callbacks, checkpoint, bool(kw["seeded"]))  # fmt: skip


def make_rng(random_state: object) -> np.random.Generator:
    """Return the generator of a run.

    ``random_state`` is None, an int, a Generator or a RandomState (scikit-learn's
    convention, drawn from once).
    """
    if isinstance(random_state, np.random.RandomState):
        random_state = int(random_state.randint(2**31))
    try:
        return np.random.default_rng(random_state)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(
            "random_state must be None, an int, a numpy Generator or RandomState, got "
            f"{random_state!r}"
        ) from None


def split_validation(
    X: np.ndarray, y: np.ndarray, w: np.ndarray | None, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray]]:
    """Hold out ``ceil(n * fraction)`` samples drawn at random, in their original order.

    Returns the training ``X, y, w`` and the held-out ``(X_val, y_val)``.
    """
    n = X.shape[0]
    n_val = math.ceil(n * fraction)
    if n_val >= n:
        raise ValueError(f"validation_split={fraction} leaves no training samples out of {n}")
    order = rng.permutation(n)
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    return X[train], y[train], None if w is None else w[train], (X[val], y[val])


def reseed_layers(model: Any, rng: np.random.Generator) -> None:
    """Give each random layer of ``model`` a generator drawn from ``rng``, in layer order.

    The random layers are those that say ``reseeds = True`` (Dropout, the augmentation
    layers): their ``rng`` is replaced. This makes the dropout masks and the augmentations
    part of a seeded run.
    """
    for layer in getattr(model, "layers", ()):
        if layer.reseeds:
            layer.rng = np.random.default_rng(rng.integers(2**63))


def normalized_weights(w: np.ndarray) -> np.ndarray:
    """Divide sample weights by their mean.

    A batch loss ``sum(w_b * loss_b) / n_b`` then averages, over an epoch, to
    ``sum(w * loss) / sum(w)`` (scikit-learn's weighted mean).
    """
    mean = float(w.mean())
    if mean <= 0.0:
        raise ValueError("sample_weight must have a positive sum, got all weights zero")
    return w / mean


# ---------------------------------------------------------------------------------------
# The data of fit


def fit_data(
    model: Any,
    X: ArrayLike,
    y: ArrayLike,
    sample_weight: ArrayLike | None,
    validation_data: object,
    rng: np.random.Generator,
    options: FitOptions,
) -> tuple[Batches, tuple[np.ndarray, np.ndarray] | None]:
    """Check fit's data; return its batches and the validation pair (or None)."""
    X, out_shape = check_X(model, X)
    y = check_y(model, y, X.shape[0], out_shape, options.classification)
    w = None if sample_weight is None else check_sample_weight(sample_weight, X.shape[0])
    validation = None
    if options.validation_split:
        X, y, w, validation = split_validation(X, y, w, options.validation_split, rng)
    elif validation_data is not None:
        validation = _check_validation(model, validation_data, options.classification)
    if options.seeded:  # make the dropout masks and augmentations part of the seeded run
        reseed_layers(model, rng)
    if w is not None:
        w = normalized_weights(w)
    return Batches(X, y, w, options.batch_size, options.shuffle), validation


def _check_validation(
    model: Any, validation_data: object, classification: bool
) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(validation_data, tuple | list) or len(validation_data) != 2:
        raise TypeError("validation_data must be a pair (X_val, y_val)")
    X_val, val_shape = check_X(model, validation_data[0], "X_val")
    y_val = check_y(model, validation_data[1], X_val.shape[0], val_shape, classification,
                          "y_val")  # fmt: skip
    return X_val, y_val


# ---------------------------------------------------------------------------------------
# Batches, the step, evaluation


class Batches:
    """The minibatches of ``(X, y[, w])``, reshuffled every epoch when ``shuffle``.

    ``len()`` is the number of batches per epoch; the last may be smaller.
    """

    def __init__(
        self,
        X: np.ndarray,
        y: np.ndarray,
        w: np.ndarray | None,
        batch_size: int,
        shuffle: bool,
    ) -> None:
        self.X, self.y, self.w = X, y, w
        self.batch_size, self.shuffle = batch_size, shuffle
        self.n = int(X.shape[0])

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def epoch(
        self, rng: np.random.Generator
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Yield ``(x, y, w)`` of every batch of one epoch (``w`` None without weights)."""
        order = rng.permutation(self.n) if self.shuffle else None
        size = self.batch_size
        for lo in range(0, self.n, size):
            hi = min(self.n, lo + size)
            idx = slice(lo, hi) if order is None else order[lo:hi]
            yield self.X[idx], self.y[idx], None if self.w is None else self.w[idx]


def train_step(
    model: Any,
    optimizer: Any,
    loss_fn: LossFunction,
    x: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None = None,
    *,
    params: list[tuple[np.ndarray, np.ndarray]] | None = None,
    where: Callable[[], str] | None = None,
) -> tuple[float, np.ndarray]:
    """One forward (training mode), loss, backward and optimizer step on a batch.

    Returns the loss and the model output. A loss that is NaN or infinite raises
    FloatingPointError before the backward pass, so the parameters keep the values they
    had; ``where()`` says where in the run that happened.
    """
    out = model.forward(x, True)
    if sample_weight is None:
        loss, grad = loss_fn(out, y)
    else:
        loss, grad = loss_fn(out, y, sample_weight=sample_weight)
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"training diverged: the loss became {loss}{where() if where else ''}, with "
            f"learning rate {getattr(optimizer, 'lr', '?')}. Lower the learning rate or "
            "scale the inputs (e.g. to [0, 1])."
        )
    model.backward(grad, input_grad=False)
    optimizer.step(model.parameters() if params is None else params)
    return float(loss), out


def evaluate(
    model: Any,
    X: np.ndarray,
    y: np.ndarray,
    loss_fn: LossFunction,
    classification: bool,
    batch_size: int = 256,
) -> dict[str, float]:
    """Return the mean loss (and accuracy when ``classification``) over ``(X, y)``.

    In eval mode, ``batch_size`` samples at a time (``model.forward`` converts each).
    """
    total, correct = 0.0, 0
    for lo in range(0, X.shape[0], batch_size):
        out = model.forward(X[lo : lo + batch_size], False)
        yb = y[lo : lo + batch_size]
        batch_loss, _ = loss_fn(out, yb)
        total += batch_loss * out.shape[0]
        if classification:
            correct += int(np.count_nonzero(out.argmax(axis=1) == yb))
    n = X.shape[0]
    scores = {"loss": total / n}
    if classification:
        scores["accuracy"] = correct / n
    return scores


# ---------------------------------------------------------------------------------------
# The callbacks of every fit: checkpoint/resume (on request), the divergence and Ctrl-C checks


class TrainingCheckpoint(Callback):
    """``fit(checkpoint=path)``: resume from ``path`` if it exists, save it every epoch.

    ``run`` holds what the file keeps besides the model (see
    :func:`fastcnn.saving.save_checkpoint`): the optimizer, the generator, the history,
    ``n_samples``, ``batch_size`` and the callbacks (the learning-rate schedulers among
    them). ``on_train_begin`` sets ``params["initial_epoch"]`` to the epochs the file had
    done. It runs after the other callbacks' ``on_epoch_end`` (the schedulers have
    stepped) and is the one place that calls :mod:`fastcnn.saving`'s checkpoint functions.
    """

    def __init__(self, path: str, run: dict[str, Any]) -> None:
        super().__init__()
        self.path, self.run = path, run

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Restore the run from the file, when there is one."""
        if os.path.exists(self.path):
            self.params["initial_epoch"] = saving.resume(self.model, self.path, self.run)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Save the model and the run after this epoch."""
        saving.save_checkpoint(self.model, self.path, epoch + 1, self.run)


def schedulers_in(callbacks: Iterable[object]) -> list[object]:
    """Replace each :class:`LearningRateScheduler` of ``callbacks`` by the scheduler it wraps.

    A checkpoint saves the epoch of the scheduler objects among the callbacks.
    """
    return [
        cb.schedule if isinstance(cb, LearningRateScheduler) and cb.scheduler else cb
        for cb in callbacks
    ]


class DivergenceCheck(Callback):
    """Raise FloatingPointError when an epoch leaves the model's state NaN or infinite.

    The batch loss is checked by the training step itself, before the update; this
    catches what it cannot see: the last step's update, and statistics that only eval
    mode uses (BatchNorm's running variance). It reads ``model.non_finite_state()``
    where the model has one, else checks ``model.parameters()``.
    """

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Check every parameter and buffer."""
        finder = getattr(self.model, "non_finite_state", None)
        if callable(finder):
            bad = finder()
        else:
            bad = next(
                (
                    ("parameters", f"parameter {i}")
                    for i, (param, _) in enumerate(self.model.parameters())
                    if not np.isfinite(param).all()
                ),
                None,
            )
        if bad is not None:
            lr = getattr(getattr(self.model, "optimizer", None), "lr", "?")
            raise FloatingPointError(
                f"training diverged: {bad[0]} became NaN or infinite in epoch "
                f"{epoch + 1}/{self.params['epochs']}, with learning rate {lr} "
                f"(first: {bad[1]!r}). Lower the learning rate or scale the inputs "
                "(e.g. to [0, 1])."
            )


class InterruptHandler(Callback):
    """Ctrl-C stops training after the current batch, with the model kept usable.

    Installs a SIGINT handler for the run (from the main thread only, and only over
    Python's default handler) that turns the first Ctrl-C into a request; the request is
    honoured after the batch (and after an epoch's callbacks) by raising
    KeyboardInterrupt, which the loop catches. A second Ctrl-C raises at once. Put it
    last: ``on_train_end`` prints where training stopped, after the progress bar's line.
    """

    def __init__(self, history: History) -> None:
        super().__init__()
        self.history = history
        self.requested = False
        self.epoch = self.batch = 0
        self._previous: Callable[[int, FrameType | None], Any] | int | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        sys.stderr.write(
            "\nInterrupt received: stopping after the current batch "
            "(press Ctrl-C again to stop at once).\n"
        )
        sys.stderr.flush()

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Install the handler."""
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            self._previous = signal.signal(signal.SIGINT, self._handler)

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Note the position, for the message."""
        self.epoch = epoch

    def on_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Note the position, for the message."""
        self.batch = batch

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Stop here if Ctrl-C was pressed."""
        if self.requested:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Stop here if Ctrl-C was pressed during validation or a callback."""
        if self.requested:
            raise KeyboardInterrupt

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """Restore the previous handler; say where an interrupted run stopped."""
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self.history.interrupted:
            sys.stderr.write(
                f"Training interrupted at epoch {self.epoch + 1}/{self.params['epochs']}, "
                f"batch {self.batch + 1}/{self.params['steps']}; the model keeps its "
                f"current weights and the history holds the {len(self.history.epoch)} "
                "completed epoch(s).\n"
            )
            sys.stderr.flush()


# ---------------------------------------------------------------------------------------
# The loop


class _Run:
    """The state of one ``fit``: what the loop needs besides the callbacks."""

    def __init__(
        self,
        model: Any,
        data: Batches,
        validation: tuple[np.ndarray, np.ndarray] | None,
        rng: np.random.Generator,
        options: FitOptions,
    ) -> None:
        self.model, self.data, self.validation, self.rng = model, data, validation, rng
        self.options, self.optimizer = options, options.optimizer
        self.params = model.parameters()
        self.epoch = self.batch = 0

    def where(self) -> str:
        return (
            f" at epoch {self.epoch + 1}/{self.options.epochs}, "
            f"batch {self.batch + 1}/{len(self.data)}"
        )

    def epoch_logs(self, epoch: int, callbacks: CallbackList) -> dict[str, float]:
        """Train one epoch; return its logs."""
        start, classification = time.perf_counter(), self.options.classification
        total, correct, seen = 0.0, 0, 0
        self.epoch = epoch
        for batch, (xb, yb, wb) in enumerate(self.data.epoch(self.rng)):
            self.batch = batch
            callbacks.on_batch_begin(batch)
            loss, out = train_step(self.model, self.optimizer, self.options.loss_fn, xb, yb,
                                   wb, params=self.params, where=self.where)  # fmt: skip
            total, seen = total + loss * len(yb), seen + len(yb)
            logs = {"loss": total / seen}
            if classification:
                correct += int(np.count_nonzero(out.argmax(axis=1) == yb))
                logs["accuracy"] = correct / seen
            callbacks.on_batch_end(batch, {**logs, "size": len(yb)})
        if self.validation is not None:
            scores = evaluate(self.model, *self.validation, self.options.loss_fn, classification)
            logs.update({"val_" + k: v for k, v in scores.items()})
        logs["time"] = time.perf_counter() - start
        logs["lr"] = float(getattr(self.optimizer, "lr", math.nan))
        return logs


def fit(
    model: Any,
    data: Batches,
    validation: tuple[np.ndarray, np.ndarray] | None,
    rng: np.random.Generator,
    options: FitOptions,
) -> History:
    """Train ``model`` on ``data``: the loop of :meth:`fastcnn.Sequential.fit`.

    Sets ``model.optimizer`` and ``model.history`` (before the first epoch, so that the
    history of a run that raises is kept) and returns the history.
    """
    run = _Run(model, data, validation, rng, options)
    history, callbacks = _callbacks(run)
    model.stop_training = False
    try:
        callbacks.on_train_begin()
        try:
            for epoch in range(callbacks.params["initial_epoch"], options.epochs):
                callbacks.on_epoch_begin(epoch)
                callbacks.on_epoch_end(epoch, run.epoch_logs(epoch, callbacks))
                if model.stop_training:
                    break
        except KeyboardInterrupt:
            history.interrupted = True
    finally:
        history.stopped_by_callback = callbacks.stopped_by_callback
        callbacks.on_train_end()
    return history


def _callbacks(run: _Run) -> tuple[History, CallbackList]:
    """Make the run's history and its callbacks.

    In the order they are called: the divergence check (before the epoch is recorded),
    the history, the progress bar, the user's, the checkpoint (after the schedulers
    stepped), Ctrl-C last.
    """
    model, options = run.model, run.options
    optimizer = options.optimizer
    if callable(getattr(optimizer, "bind", None)):
        optimizer.bind(run.params)
    model.optimizer = optimizer
    keys = ["loss"] + (["accuracy"] if options.classification else [])
    if run.validation is not None:
        keys += ["val_" + key for key in keys]
    history = model.history = History([*keys, "time", "lr"])
    callbacks: list[object] = [DivergenceCheck(), history]
    if options.verbose:
        callbacks.append(ProgbarLogger(options.verbose))
    callbacks += options.callbacks
    if options.checkpoint is not None:
        state = {"optimizer": optimizer, "rng": run.rng, "history": history,
                 "n_samples": run.data.n, "batch_size": options.batch_size,
                 "callbacks": schedulers_in(options.callbacks)}  # fmt: skip
        callbacks.append(TrainingCheckpoint(options.checkpoint, state))
    callbacks.append(InterruptHandler(history))
    params = {
        "epochs": options.epochs,
        "steps": len(run.data),
        "verbose": options.verbose,
        "batch_size": options.batch_size,
        "samples": run.data.n,
        "initial_epoch": 0,  # a checkpoint being resumed sets it
    }
    return history, CallbackList(callbacks, model=model, params=params)
