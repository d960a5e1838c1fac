"""Callbacks: what :meth:`fastcnn.Sequential.fit` runs around its epochs and batches.

``fit`` is a short loop (``fastcnn.training``) that calls a :class:`CallbackList` at the
start and end of training, of every epoch and of every batch; everything else a training
run does is a callback: the :class:`History` it returns and the progress bar
(:class:`ProgbarLogger`) here, and checkpoint/resume, the divergence check and Ctrl-C
handling, which only ``fit`` uses, beside the loop. The hooks and the callbacks users
add (:class:`EarlyStopping`, :class:`ModelCheckpoint`, :class:`LearningRateScheduler`,
:class:`TerminateOnNaN`, :class:`CSVLogger`) have Keras's names and meaning.

An object that is no :class:`Callback` but has some of the hook methods works too, e.g.
one with only ``on_epoch_end(epoch, logs)``; as before, its returning True stops training
after that epoch (as ``model.stop_training = True`` does). fastcnn's learning-rate
schedulers (:mod:`fastcnn.optim`) are such objects.
"""

from __future__ import annotations

import csv
import inspect
import math
import numbers
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from typing import IO, Any, TextIO

import numpy as np

from fastcnn.optim import LRScheduler

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ProgbarLogger",
    "TerminateOnNaN",
]

_HOOKS = (
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_batch_begin",
    "on_batch_end",
)


class Callback:
    """Base class of the callbacks: every hook does nothing until overridden.

    The training loop sets ``model`` and ``params`` before ``on_train_begin``.
    ``logs`` of ``on_epoch_end`` hold the epoch's metrics (``"loss"``, ``"accuracy"``,
    ``"val_loss"``, ``"val_accuracy"``, ``"time"``, ``"lr"``, as :class:`History`
    records them); those of ``on_batch_end`` the running means of the epoch so far and
    ``"size"``, the samples in the batch. Setting ``model.stop_training = True`` stops
    training after the current epoch.

    ``on_train_end`` is called however training ends: normally, after a stop, on Ctrl-C
    (then ``History.interrupted`` is True) and when an error ends it, so that a callback
    can release what it holds (an open file).

    Attributes
    ----------
    model : object
        The model being trained.
    params : dict
        ``"epochs"``, ``"steps"`` (batches per epoch), ``"batch_size"``, ``"samples"``
        and ``"verbose"`` of the ``fit`` call.
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: Any) -> None:
        """Set ``model``."""
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        """Set ``params``."""
        self.params = params

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Run before the first epoch."""

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """Run once training has ended (normally, stopped, interrupted or by an error)."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Run at the start of epoch ``epoch`` (0-based)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> bool | None:
        """Run at the end of epoch ``epoch`` with its metrics; returning True stops."""
        return None

    def on_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Run before batch ``batch`` (0-based within the epoch)."""

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Run after the optimizer step of batch ``batch``."""


class CallbackList:
    """Calls a hook on every callback in order; what the training loop talks to.

    Parameters
    ----------
    callbacks : iterable of Callback or objects with some of its hook methods
    model : object, optional
        Given to every callback (``set_model``, or the ``model`` attribute).
    params : dict, optional
        Given to every callback likewise.

    Attributes
    ----------
    params : dict
        The dict the callbacks share (one object: a callback may update it).
    stopped_by_callback : bool
        True once a callback's ``on_epoch_end`` returned True or one set
        ``model.stop_training``.
    """

    def __init__(
        self,
        callbacks: Iterable[object] = (),
        model: Any = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.callbacks = check_callbacks(list(callbacks))
        self.model = model
        self.params = {} if params is None else params
        self.stopped_by_callback = False
        for callback in self.callbacks:
            if model is not None:
                _set(callback, "set_model", "model", model)
            if params is not None:
                _set(callback, "set_params", "params", params)
        # Per hook, the methods that do something: the base class's empty hooks are
        # skipped, which keeps the per-batch cost of the list low.
        self._methods = {
            hook: [
                getattr(callback, hook)
                for callback in self.callbacks
                if callable(getattr(callback, hook, None))
                and getattr(type(callback), hook, None) is not getattr(Callback, hook)
            ]
            for hook in _HOOKS
        }

    def __iter__(self) -> Any:
        return iter(self.callbacks)

    def _call(self, hook: str, *args: Any) -> None:
        for method in self._methods[hook]:
            method(*args)

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Call ``on_train_begin`` on every callback."""
        self._call("on_train_begin", logs)

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """Call ``on_train_end`` on every callback."""
        self._call("on_train_end", logs)

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Call ``on_epoch_begin`` on every callback."""
        self._call("on_epoch_begin", epoch, logs)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Call ``on_epoch_end`` on every callback, each with its own copy of ``logs``.

        A True return, or ``model.stop_training`` set, sets ``stopped_by_callback``
        and ``model.stop_training``.
        """
        for method in self._methods["on_epoch_end"]:
            if method(epoch, dict(logs)) is True:
                self.stopped_by_callback = True
        if getattr(self.model, "stop_training", False):
            self.stopped_by_callback = True
        if self.stopped_by_callback and self.model is not None:
            self.model.stop_training = True

    def on_batch_begin(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Call ``on_batch_begin`` on every callback."""
        self._call("on_batch_begin", batch, logs)

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Call ``on_batch_end`` on every callback."""
        self._call("on_batch_end", batch, logs)


def _set(callback: object, setter: str, attribute: str, value: Any) -> None:
    method = getattr(callback, setter, None)
    if callable(method):
        method(value)
    elif isinstance(callback, Callback):
        setattr(callback, attribute, value)


def check_callbacks(callbacks: object) -> list[object]:
    """Return the callbacks of ``fit(callbacks=...)`` (None, one or a list) as a list.

    Each must be a :class:`Callback` or have at least one of the hook methods.
    """
    if callbacks is None:
        return []
    if not isinstance(callbacks, list | tuple):
        callbacks = [callbacks]
    for i, callback in enumerate(callbacks):
        if not any(callable(getattr(callback, hook, None)) for hook in _HOOKS):
            raise TypeError(
                f"callbacks[{i}] ({callback!r}) must have an on_epoch_end(epoch, logs) method "
                "(or another callback hook: subclass fastcnn.callbacks.Callback)"
            )
    return list(callbacks)


# ---------------------------------------------------------------------------------------
# What every fit has: its history, its progress bar


class History(Callback):
    """Per-epoch record of a :meth:`~fastcnn.Sequential.fit` call (as Keras' ``History``).

    Attributes
    ----------
    history : dict of str to list of float
        ``"loss"`` (mean training loss of the epoch), ``"accuracy"`` (cross-entropy
        only), ``"val_loss"`` and ``"val_accuracy"`` (with validation data), ``"time"``
        (seconds per epoch, validation included) and ``"lr"`` (learning rate during the
        epoch). The keys exist from the start, even if no epoch completes.
    epoch : list of int
        0-based indices of the completed epochs.
    interrupted : bool
        True if training was stopped with Ctrl-C (KeyboardInterrupt).
    stopped_by_callback : bool
        True if a callback stopped training (its ``on_epoch_end`` returned True, or it
        set ``model.stop_training``).
    """

    def __init__(self, keys: Iterable[str] = ()) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {key: [] for key in keys}
        self.epoch: list[int] = []
        self.interrupted = False
        self.stopped_by_callback = False

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Record the epoch's metrics."""
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


class _ProgressBar:
    r"""One line per epoch on a stream; redrawn in place with ``\r`` when it is a terminal."""

    def __init__(
        self, epoch: int, epochs: int, n_batches: int, verbose: int, stream: TextIO | None = None
    ) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.enabled = verbose > 0
        isatty = getattr(self.stream, "isatty", None)
        self.live = verbose == 1 and bool(isatty and isatty())
        self.prefix = f"Epoch {epoch + 1}/{epochs}"
        self.n_batches = n_batches
        self.start = time.perf_counter()
        self._last_draw = -math.inf
        self._width = 0  # length of the line currently on screen, 0 if none is open

    def _bar(self, done: int) -> str:
        width = 20
        filled = width * done // self.n_batches
        arrow = ">" if 0 < filled < width else ""
        return "[" + "=" * filled + arrow + "." * (width - filled - len(arrow)) + "]"

    def _write(self, line: str, end: str = "") -> None:
        # Pad with spaces so a shorter line fully covers the previous one.
        self.stream.write("\r" + line.ljust(self._width) + end)
        self.stream.flush()
        self._width = 0 if end else len(line)

    def update(self, done: int, seen: int, metrics: dict[str, float]) -> None:
        if not self.live:
            return
        now = time.perf_counter()
        if done < self.n_batches and now - self._last_draw < 0.1:
            return  # redrawing every batch would cost more than tiny batches do
        self._last_draw = now
        elapsed = max(now - self.start, 1e-9)
        eta = elapsed / done * (self.n_batches - done)
        values = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        self._write(
            f"{self.prefix} {self._bar(done)} {done}/{self.n_batches}  {values}  "
            f"{seen / elapsed:,.0f} img/s  ETA {eta:.1f}s"
        )

    def finish(self, seen: int, train_time: float, logs: dict[str, float]) -> None:
        if not self.enabled:
            return
        values = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k not in ("time", "lr"))
        rate = seen / max(train_time, 1e-9)
        self._write(
            f"{self.prefix} {self._bar(self.n_batches)} {self.n_batches}/{self.n_batches}  "
            f"{values}  {rate:,.0f} img/s  {logs['time']:.1f}s",
            end="\n",
        )

    def close(self) -> None:
        """End a half-drawn line (on interrupt or error) so later output starts cleanly."""
        if self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


class ProgbarLogger(Callback):
    """Progress on a stream (stderr by default): one line per epoch.

    Parameters
    ----------
    verbose : {1, 2}, default 1
        1: a bar redrawn live while the epoch runs when the stream is a terminal, and
        one line per epoch otherwise; 2: one line per epoch. ``fit(verbose=...)`` adds
        one of these (none for 0).
    stream : file-like, optional
        Where to write; default ``sys.stderr``.
    """

    def __init__(self, verbose: int = 1, stream: TextIO | None = None) -> None:
        super().__init__()
        self.verbose, self.stream = verbose, stream
        self._bar: _ProgressBar | None = None
        self._seen, self._train_time = 0, 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Start the epoch's line."""
        steps = self.params.get("steps", 1)
        self._bar = _ProgressBar(epoch, self.params["epochs"], steps, self.verbose, self.stream)
        self._seen, self._train_time = 0, 0.0

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Redraw the live bar with the running metrics."""
        assert self._bar is not None, "on_epoch_begin starts the bar"
        logs = logs or {}
        self._seen += int(logs.get("size", 0))
        self._train_time = time.perf_counter() - self._bar.start
        metrics = {"acc" if k == "accuracy" else k: v for k, v in logs.items() if k != "size"}
        self._bar.update(batch + 1, self._seen, metrics)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Write the epoch's final line."""
        if self._bar is not None:
            self._bar.finish(self._seen, self._train_time, logs or {})

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """End a half-drawn line."""
        if self._bar is not None:
            self._bar.close()


# ---------------------------------------------------------------------------------------
# Callbacks users add


def _mode(monitor: str, mode: str) -> str:
    """``"min"`` or ``"max"``: ``"auto"`` maximizes accuracies and minimizes the rest."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if monitor.endswith("acc") or monitor.endswith("accuracy") else "min"
    return mode


def _monitored(callback: Callback, monitor: str, logs: dict[str, float] | None) -> float | None:
    value = (logs or {}).get(monitor)
    if value is None:
        warnings.warn(
            f"{type(callback).__name__} watches {monitor!r}, which the logs lack "
            f"(they hold {sorted(logs or {})}); pass validation data for 'val_' metrics",
            RuntimeWarning,
            stacklevel=3,
        )
    return value


class EarlyStopping(Callback):
    """Stop training when a monitored metric has stopped improving.

    Parameters
    ----------
    monitor : str, default "val_loss"
        Key of the epoch logs to watch (``"loss"``, ``"val_accuracy"``, ...).
    patience : int, default 0
        Epochs without improvement after which training stops.
    min_delta : float, default 0
        Smallest change that counts as an improvement.
    mode : {"auto", "min", "max"}, default "auto"
        Whether the metric should go down or up; "auto" maximizes accuracies.
    restore_best_weights : bool, default False
        When stopping, put back the weights (and buffers) of the best epoch; needs the
        model's ``state_dict`` and ``load_state_dict``.

    Attributes
    ----------
    best : float
    best_epoch : int
    stopped_epoch : int
        The epoch after which training stopped (0 if it did not).
    wait : int
        Epochs since the last improvement.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
    ) -> None:
        super().__init__()
        integral = isinstance(patience, numbers.Integral) and not isinstance(patience, bool)
        if not integral or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        self.monitor, self.patience = monitor, int(patience)
        self.min_delta = abs(float(min_delta))
        self.mode = _mode(monitor, mode)
        self.restore_best_weights = restore_best_weights
        self.on_train_begin()

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Start counting afresh."""
        self.wait = self.stopped_epoch = self.best_epoch = 0
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_weights: dict[str, np.ndarray] | None = None

    def _improves(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Count the epoch as an improvement or not; stop after ``patience`` without."""
        value = _monitored(self, self.monitor, logs)
        if value is None:
            return
        self.wait += 1
        if self._improves(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()
        elif self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.best_weights is not None:
                self.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (``model.save``, atomic) after every epoch, or after the best ones.

    Parameters
    ----------
    path : str or path-like
        May hold ``str.format`` fields filled from the epoch (1-based) and its logs,
        e.g. ``"model-{epoch:02d}-{val_loss:.3f}.npz"``.
    monitor : str, default "val_loss"
        The metric that decides what "best" is (with ``save_best_only``).
    save_best_only : bool, default False
        Save only when ``monitor`` improves on the best value so far.
    mode : {"auto", "min", "max"}, default "auto"
        As for :class:`EarlyStopping`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        monitor: str = "val_loss",
        save_best_only: bool = False,
        mode: str = "auto",
    ) -> None:
        super().__init__()
        self.path, self.monitor = os.fspath(path), monitor
        self.save_best_only = save_best_only
        self.mode = _mode(monitor, mode)
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Save, if every epoch is saved or this one is the best yet."""
        if self.save_best_only:
            value = _monitored(self, self.monitor, logs)
            if value is None:
                return
            if not (value < self.best if self.mode == "min" else value > self.best):
                return
            self.best = value
        self.model.save(self.path.format(epoch=epoch + 1, **(logs or {})))


class LearningRateScheduler(Callback):
    """Set the optimizer's learning rate every epoch.

    Parameters
    ----------
    schedule : callable or fastcnn.optim.LRScheduler
        A function ``schedule(epoch)`` or ``schedule(epoch, lr)`` (0-based epoch, current
        rate) that returns the rate for that epoch, applied to ``model.optimizer`` when
        the epoch begins (as Keras does); or a scheduler such as
        :class:`~fastcnn.optim.StepLR`, stepped when each epoch ends (as passing it to
        ``fit`` directly does, and as ``fit(checkpoint=...)`` saves and resumes it).
    """

    def __init__(self, schedule: Callable[..., float] | LRScheduler) -> None:
        super().__init__()
        self.scheduler = isinstance(schedule, LRScheduler)
        if not self.scheduler and not callable(schedule):
            raise TypeError(
                f"schedule must be a function of the epoch or a fastcnn.optim scheduler, "
                f"got {schedule!r}"
            )
        self.schedule = schedule
        self._two_args = not isinstance(schedule, LRScheduler) and _positional_args(schedule) >= 2

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Apply the function's rate for this epoch."""
        if self.scheduler:
            return
        optimizer = self.model.optimizer
        args = (epoch, optimizer.lr) if self._two_args else (epoch,)
        lr = self.schedule(*args)  # type: ignore[operator]
        if not isinstance(lr, int | float | np.floating) or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"schedule({epoch}) must return a finite rate >= 0, got {lr!r}")
        optimizer.lr = float(lr)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Step the scheduler object."""
        if isinstance(self.schedule, LRScheduler):
            self.schedule.step()


def _positional_args(function: Callable[..., Any]) -> int:
    """How many positional arguments ``function`` takes (2 for ``*args``)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return 1
    kinds = [p.kind for p in parameters]
    if inspect.Parameter.VAR_POSITIONAL in kinds:
        return 2
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(kind in positional for kind in kinds)


class TerminateOnNaN(Callback):
    """Stop training, after the current epoch, once a loss in the logs is NaN or infinite.

    ``fit`` itself raises FloatingPointError as soon as a batch's training loss is not
    finite (before applying it); this watches the running loss of custom loops and the
    validation loss, which diverge without an error.
    """

    def on_batch_end(self, batch: int, logs: dict[str, float] | None = None) -> None:
        """Stop if the running loss is not finite."""
        self._check((logs or {}).get("loss"), f"batch {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Stop if a loss of the epoch is not finite."""
        for key, value in (logs or {}).items():
            if key.endswith("loss"):
                self._check(value, f"epoch {epoch + 1} ({key})")

    def _check(self, value: float | None, where: str) -> None:
        if value is not None and not math.isfinite(value):
            sys.stderr.write(f"{where}: invalid loss {value}, terminating training\n")
            self.model.stop_training = True


class CSVLogger(Callback):
    """Write each epoch's logs as a row of a CSV file (``epoch`` then the sorted keys).

    Parameters
    ----------
    path : str or path-like
    separator : str, default ","
    append : bool, default False
        Add to an existing file (no second header) instead of overwriting it.
    """

    def __init__(
        self, path: str | os.PathLike[str], separator: str = ",", append: bool = False
    ) -> None:
        super().__init__()
        self.path, self.separator, self.append = os.fspath(path), separator, append
        self._file: IO[str] | None = None
        self._writer: Any = None
        self._keys: list[str] | None = None
        self._header = True

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        """Open the file."""
        has_rows = self.append and os.path.exists(self.path) and os.path.getsize(self.path)
        self._file = open(self.path, "a" if self.append else "w", newline="")  # noqa: SIM115
        self._writer = csv.writer(self._file, delimiter=self.separator)
        self._header, self._keys = not has_rows, None

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        """Write the epoch's row (and the header before the first one)."""
        assert self._file is not None, "on_train_begin opens the file"
        logs = logs or {}
        if self._keys is None:
            self._keys = sorted(logs)
            if self._header:
                self._writer.writerow(["epoch", *self._keys])
        self._writer.writerow([epoch, *(logs.get(key, "") for key in self._keys)])
        self._file.flush()

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
