"""Write the golden model files that tests/test_serialization.py reads back.

The files pin the model file format (version 1): a model saved by an older fastcnn must
load into a newer one with the same architecture, the same weights and the same outputs.
They were written once, with fastcnn at commit 5029668 (model file format 1), by

    PYTHONPATH=$PWD python tests/data/make_golden.py

from the checkout root. Do not regenerate them after a change of the writer or the reader:
the point is that files written before the change still load. Regenerate only for a new
format version, keeping the old files (the reader must then still read them, or refuse
them with a clear message).

Files
-----
golden_model_f32.npz
    A float32 Sequential with one layer of every built-in class, non-default arguments
    and BatchNorm statistics updated by two training-mode passes.
golden_model_f64.npz
    A small float64 model (the ``<f8`` array entries).
golden_checkpoint.npz
    The checkpoint ``fit(checkpoint=...)`` writes after the first of two epochs: Adam
    state, the random generators, a StepLR's epoch and the history.
golden_expected.npz
    What the tests compare with: the inputs, each model's eval-mode output on each
    backend, the checkpoint's training data, and the loss and the model's output after resuming
    it to the second epoch on each backend.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

import fastcnn
from fastcnn.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from fastcnn.model import Sequential
from fastcnn.optim import Adam, StepLR

HERE = os.path.dirname(os.path.abspath(__file__))
BACKENDS = ("numpy", "cython")


def model_f32() -> Sequential:
    """One layer of every built-in class, with arguments other than the defaults."""
    return Sequential(
        Conv2D(2, 4, 3, padding=1, rng=1),
        BatchNorm2D(4, momentum=0.2, eps=1e-4),
        LeakyReLU(0.1),
        MaxPool2D(2, ceil_mode=True),
        Conv2D(4, 4, 3, padding="same", dilation=2, groups=2, bias=False, rng=2),
        ReLU(),
        AvgPool2D(2, stride=1, padding=1, count_include_pad=False),
        Dropout(0.25, rng=3),
        Flatten(),
        Dense(4 * 5 * 5, 6, rng=4),
        Tanh(),
        Dense(6, 3, rng=5),
        Sigmoid(),
    )


def model_f64() -> Sequential:
    """A small float64 model."""
    f64 = np.float64
    return Sequential(
        Conv2D(1, 2, 3, dtype=f64, rng=6),
        BatchNorm2D(2, dtype=f64),
        ReLU(),
        Flatten(),
        Dense(2 * 4 * 4, 3, dtype=f64, rng=7),
    )


def model_checkpointed() -> Sequential:
    """The model the golden checkpoint trains.

    No bias before the BatchNorm: its gradient would be rounding noise, which Adam scales
    up to steps of the learning rate, so the run would not be comparable across backends.
    """
    return Sequential(
        Conv2D(1, 2, 3, padding=1, bias=False, rng=8),
        BatchNorm2D(2),
        ReLU(),
        MaxPool2D(2),
        Dropout(0.2),
        Flatten(),
        Dense(2 * 3 * 3, 3, rng=9),
    )


def fit_checkpointed(model: Sequential, X, y, epochs: int, path: str) -> fastcnn.History:
    """The run the golden checkpoint records (and the tests resume)."""
    optimizer = Adam(0.01)
    return model.fit(
        X, y, epochs=epochs, batch_size=5, optimizer=optimizer, random_state=0, verbose=0,
        callbacks=[StepLR(optimizer, step_size=1, gamma=0.5)], checkpoint=path,
    )  # fmt: skip


def outputs(model: Sequential, x: np.ndarray) -> dict[str, np.ndarray]:
    """Eval-mode output of ``model`` on each backend."""
    result = {}
    for backend in BACKENDS:
        with fastcnn.use_backend(backend):
            result[backend] = model.forward(x)
    return result


def main() -> None:
    """Write the golden files into this directory."""
    rng = np.random.default_rng(2024)
    expected: dict[str, np.ndarray] = {}
    for name, build, shape, dtype in (
        ("f32", model_f32, (3, 2, 7, 7), np.float32),
        ("f64", model_f64, (2, 1, 6, 6), np.float64),
    ):
        model, x = build(), rng.standard_normal(shape).astype(dtype)
        with fastcnn.use_backend("numpy"):  # update the BatchNorm statistics
            for _ in range(2):
                model.forward(rng.standard_normal(shape).astype(dtype), training=True)
        model.save(os.path.join(HERE, f"golden_model_{name}.npz"))
        expected[f"x_{name}"] = x
        for backend, out in outputs(model, x).items():
            expected[f"out_{name}_{backend}"] = out

    X = rng.standard_normal((12, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 3, 12)
    expected.update(ckpt_X=X, ckpt_y=y)
    golden = os.path.join(HERE, "golden_checkpoint.npz")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.npz")
        with fastcnn.use_backend("numpy"):
            fit_checkpointed(model_checkpointed(), X, y, 1, path)
        shutil.copyfile(path, golden)
        for backend in BACKENDS:
            shutil.copyfile(golden, path)
            with fastcnn.use_backend(backend):
                resumed = fastcnn.load(path)  # the architecture, as the tests build it
                history = fit_checkpointed(resumed, X, y, 2, path)
                expected[f"resumed_out_{backend}"] = resumed.forward(X)
            expected[f"resumed_loss_{backend}"] = np.array(history.history["loss"])
    np.savez(os.path.join(HERE, "golden_expected.npz"), **expected)


if __name__ == "__main__":
    main()
