"""Checkpoints of a ``fit`` run: a model file plus what resuming the run needs.

A checkpoint is a model file (:mod:`fastcnn.saving.npz`) with two more kinds of entry:
``__checkpoint__``, a JSON document (the epochs done, the optimizer's class, learning
rate, step count and which of its per-parameter state is an array, the random
generators' states, the learning-rate schedulers' epochs and the history), and the
optimizer's arrays as ``__checkpoint__.optimizer.<parameter index>.<name>``. A resumed
run continues bit for bit as the uninterrupted one would have.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from fastcnn.optim import LRScheduler
from fastcnn.saving.npz import CKPT_KEY, ModelFile, atomic_savez, expected_arrays, file_arrays

if TYPE_CHECKING:  # fastcnn.model imports this package
    from fastcnn.model import BaseModel

__all__ = ["resume", "save_checkpoint"]  # for fit: users pass fit(checkpoint=...)

# ``run`` is the training state that ``fit`` keeps: "optimizer" (a fastcnn.optim
# optimizer bound to the model's parameters), "rng" (the generator of the shuffling),
# "history" (a History), "callbacks" (the LRSchedulers among them are saved),
# "n_samples" and "batch_size" (a checkpoint of other data or batches is refused).


def save_checkpoint(model: BaseModel, path: str, done: int, run: dict[str, Any]) -> None:
    """Write the model file of ``model`` plus what resuming ``run`` after ``done`` epochs needs.

    That is the optimizer state, the random generators, the schedulers' epochs and the
    history; written atomically, as :func:`~fastcnn.saving.save_model` writes.
    """
    optimizer, rng, history = run["optimizer"], run["rng"], run["history"]
    dropouts = [layer for layer in model.layers if layer.reseeds]  # Dropout and augmentation
    schedulers = [cb for cb in run["callbacks"] if isinstance(cb, LRScheduler)]
    arrays = file_arrays(model)
    slots = []
    for i, state in enumerate(optimizer._state):
        kinds: dict[str, str | None] = {}
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                arrays[f"{CKPT_KEY}.optimizer.{i}.{key}"] = value
                kinds[key] = "array"
            elif value is None:
                kinds[key] = None
        slots.append(kinds)
    meta = {
        "epochs_done": done,
        "n_samples": run["n_samples"],
        "batch_size": run["batch_size"],
        "optimizer": {
            "class": type(optimizer).__name__,
            "lr": optimizer.lr,
            "n_steps": optimizer.n_steps,
            "state": slots,
        },
        "rng": rng.bit_generator.state,
        "dropout_rngs": [layer.rng.bit_generator.state for layer in dropouts],
        "schedulers": [scheduler.last_epoch for scheduler in schedulers],
        "history": {"history": history.history, "epoch": history.epoch},
    }
    arrays[CKPT_KEY] = np.array(json.dumps(meta, default=_jsonable))
    atomic_savez(path, arrays)


def resume(model: BaseModel, path: str, run: dict[str, Any]) -> int:
    """Restore the state :func:`save_checkpoint` saved into ``model`` and ``run``.

    The file is read as :func:`~fastcnn.saving.load_model` reads one: its architecture
    must be that of ``model``, and its entries those that ``model`` and its training
    state imply. Returns the number of epochs done.
    """
    where = f"checkpoint {path!r}"
    with ModelFile(path) as file:
        if file.config != json.loads(json.dumps(model.get_config())):
            raise ValueError(
                f"{where} was written for a different architecture; delete it or pass "
                "another checkpoint path to start afresh"
            )
        if file.meta is None:
            raise ValueError(f"{where} is a model file without training state (not a checkpoint)")
        try:
            meta = file.meta
            _check_run(meta, run)
            expected = expected_arrays(model, meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{where} cannot be resumed from: {exc}") from None
        file.check(expected)
        arrays = file.read(expected)
    try:
        restored = _optimizer_state(model, meta["optimizer"]["state"], arrays)
        done = _restore_run(model, meta, run)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where} cannot be resumed from: {exc}") from None
    model.load_state_dict({key: arrays[key] for key in model._state_arrays()})
    optimizer, saved = run["optimizer"], meta["optimizer"]
    optimizer._state = restored
    optimizer.n_steps = int(saved["n_steps"])
    optimizer.lr = float(saved["lr"])
    return done


def _check_run(meta: dict[str, Any], run: dict[str, Any]) -> None:
    """Refuse a checkpoint of another run: other data, batch size or optimizer."""
    for key in ("n_samples", "batch_size"):
        if meta[key] != run[key]:
            raise ValueError(
                f"it was written for {key}={meta[key]}, got {key}={run[key]}; "
                "resume with the same data and batch size"
            )
    optimizer, saved = run["optimizer"], meta["optimizer"]
    if saved["class"] != type(optimizer).__name__:
        raise ValueError(f"it was written with a {saved['class']} optimizer, got {optimizer!r}")
    if len(saved["state"]) != len(optimizer._state):
        raise ValueError(f"it holds optimizer state for {len(saved['state'])} parameters")


def _optimizer_state(
    model: BaseModel, slots: list[dict[str, str | None]], arrays: dict[str, np.ndarray]
) -> list[dict[str, Any]]:
    """Return the optimizer's per-parameter state from a checkpoint's checked arrays."""
    restored = []
    for i, (kinds, (param, _)) in enumerate(zip(slots, model.parameters(), strict=True)):
        slot: dict[str, Any] = {}
        for key, kind in kinds.items():
            array = arrays[f"{CKPT_KEY}.optimizer.{i}.{key}"] if kind else None
            slot[key] = None if array is None else array.astype(param.dtype)  # a copy
        restored.append(slot)
    return restored


def _restore_run(model: BaseModel, meta: dict[str, Any], run: dict[str, Any]) -> int:
    """Restore the generators, schedulers and history; returns the epochs done."""
    dropouts = [layer for layer in model.layers if layer.reseeds]  # Dropout and augmentation
    schedulers = [cb for cb in run["callbacks"] if isinstance(cb, LRScheduler)]
    if len(meta["dropout_rngs"]) != len(dropouts):
        raise ValueError(f"it holds {len(meta['dropout_rngs'])} dropout generators")
    run["rng"].bit_generator.state = meta["rng"]
    for layer, rng_state in zip(dropouts, meta["dropout_rngs"], strict=True):
        layer.rng.bit_generator.state = rng_state
    for scheduler, last_epoch in zip(schedulers, meta["schedulers"], strict=False):
        scheduler.last_epoch = last_epoch
    history = run["history"]
    history.history.update(meta["history"]["history"])
    history.epoch[:] = meta["history"]["epoch"]
    return int(meta["epochs_done"])


def _jsonable(value: object) -> Any:
    """Turn numpy values in the training state into JSON (``json.dumps``'s ``default``)."""
    if isinstance(value, np.ndarray | np.generic):  # e.g. an MT19937 generator's key
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
