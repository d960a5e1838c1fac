"""The fastcnn command: the main job end to end on a tiny budget, delegation, bad arguments."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastcnn
from fastcnn import cli, datasets

TINY = ["train", "--epochs", "1", "--max-train", "200", "-q"]


def test_train_digits_end_to_end(capsys):
    assert cli.main(TINY) == 0
    out = capsys.readouterr().out
    assert "backend" in out and "digits (80/20 stratified split, random_state 42" in out
    assert "200 training and 360 test images of shape 1x8x8, 10 classes" in out
    assert "digits_cnn, 53,194 parameters" in out
    assert "test accuracy: " in out
    assert "precision" in out and "recall" in out and "macro avg" in out  # per-class report
    assert "total" in out and " s" in out


def test_train_options_and_save(tmp_path, capsys):
    path = tmp_path / "digits.npz"
    argv = [*TINY, "--optimizer", "sgd", "--lr", "0.05", "--batch-size", "32"]
    argv += ["--backend", "numpy", "--threads", "1", "--seed", "3", "--save", str(path)]
    backend = fastcnn.get_backend()
    try:
        assert cli.main([*argv, "--summary"]) == 0
    finally:  # the command sets process-wide state
        fastcnn.set_backend(backend)
        fastcnn.set_num_threads(None)
    out = capsys.readouterr().out
    assert "backend numpy, 1 thread(s)" in out
    assert "sgd lr 0.05" in out and "batch 32" in out and "seed 3" in out
    assert "Total params: 53,194" in out  # --summary
    assert f"model saved to {path}" in out
    model = fastcnn.load(path)
    X, _ = datasets.load_digits()
    assert model.predict(X[:5]).shape == (5,)


def test_train_lenet5_on_digits_upscales_to_28x28(capsys):
    assert cli.main([*TINY, "--model", "lenet5"]) == 0
    out = capsys.readouterr().out
    assert "upscaled 3x and padded to 28x28" in out and "shape 1x28x28" in out
    assert "lenet5, 61,706 parameters" in out


def test_save_to_a_missing_directory_fails_before_training(tmp_path, capsys):
    path = tmp_path / "missing" / "model.npz"
    assert cli.main([*TINY, "--save", str(path)]) == 1
    captured = capsys.readouterr()
    assert "cannot save to" in captured.err and "no directory" in captured.err
    assert "test accuracy" not in captured.out


def test_train_mnist_offline_fails_cleanly(monkeypatch, capsys):
    def offline(data_home=None):
        raise datasets.DatasetUnavailableError("MNIST is not in the local cache (no network)")

    monkeypatch.setattr(datasets, "load_mnist", offline)
    assert cli.main(["train", "--dataset", "mnist"]) == 1
    err = capsys.readouterr().err
    assert "fastcnn train: error: MNIST is not in the local cache" in err


def test_train_mnist_with_local_data(monkeypatch, capsys):
    rng = np.random.default_rng(0)
    x = rng.random((60, 1, 28, 28), dtype=np.float32)
    y = np.arange(60) % 10

    monkeypatch.setattr(datasets, "load_mnist", lambda data_home=None: ((x, y), (x[:20], y[:20])))
    assert cli.main(["train", "--dataset", "mnist", "--epochs", "1", "-q"]) == 0
    out = capsys.readouterr().out
    assert "mnist (standard 60,000/10,000 split)" in out and "60 training and 20 test" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "0"], "--epochs: must be >= 1, got 0"),
        (["train", "--epochs", "two"], "--epochs: expected an integer, got 'two'"),
        (["train", "--batch-size", "-4"], "--batch-size: must be >= 1"),
        (["train", "--lr", "0"], "--lr: must be a positive number"),
        (["train", "--lr", "nan"], "--lr: must be a positive number"),
        (["train", "--threads", "0"], "--threads: must be >= 1"),
        (["train", "--test-size", "1.5"], "--test-size: must be in (0, 1)"),
        (["train", "--model", "resnet"], "--model: invalid choice: 'resnet'"),
        (["train", "--dataset", "cifar"], "--dataset: invalid choice"),
        (["train", "--backend", "torch"], "--backend: invalid choice"),
        (["train", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["fly"], "invalid choice: 'fly'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "usage: fastcnn" in err


def test_help_and_version(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "info" in out and "bench" in out
    assert cli.main(["train", "--help"]) == 0
    assert "--max-train" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastcnn {fastcnn.__version__}"
    assert cli.main([]) == 2  # no command: the help on stderr, and a usage-error status
    assert "<command>" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, module", [("info", "fastcnn._info"), ("bench", "fastcnn._bench")]
)
def test_info_and_bench_delegate_their_arguments(monkeypatch, command, module):
    import importlib

    target = importlib.import_module(module)
    received = []
    monkeypatch.setattr(target, "main", lambda argv=None: received.append(argv) or 3)
    assert cli.main([command, "--help", "--x", "1"]) == 3
    assert received == [["--help", "--x", "1"]]


def test_info_runs(capsys):
    assert cli.main(["info", "--no-timing"]) == 0
    assert "cython" in capsys.readouterr().out.lower()


def _run(*args):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "fastcnn", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_python_m_fastcnn_train():
    result = _run("train", "--epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "test accuracy: " in result.stdout and "total" in result.stdout
    assert "Epoch 1/1" in result.stderr  # the progress bar (one line per epoch off a tty)
    accuracy = float(result.stdout.split("test accuracy: ")[1].split()[0])
    assert accuracy > 0.8


def test_python_m_fastcnn_bad_option():
    result = _run("train", "--epochs", "-1")
    assert result.returncode == 2
    assert "--epochs: must be >= 1, got -1" in result.stderr
    assert result.stdout == ""
