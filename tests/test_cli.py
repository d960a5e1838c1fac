"""The fastcnn command: the main job end to end on a tiny budget, delegation, bad arguments."""

import os
import re
import signal
import subprocess
import sys
import time

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
        # The benchmark suite left the package (python benchmarks/run.py in a checkout).
        (["bench"], "invalid choice: 'bench'"),
        (["bench", "--quick"], "invalid choice: 'bench'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "usage: fastcnn" in err


def test_help_and_version(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "info" in out and "bench" not in out
    assert cli.main(["train", "--help"]) == 0
    assert "--max-train" in capsys.readouterr().out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fastcnn {fastcnn.__version__}"
    assert cli.main([]) == 2  # no command: the help on stderr, and a usage-error status
    assert "<command>" in capsys.readouterr().err


def test_info_delegates_its_arguments(monkeypatch):
    from fastcnn import _info

    received = []
    monkeypatch.setattr(_info, "main", lambda argv=None: received.append(argv) or 3)
    assert cli.main(["info", "--help", "--x", "1"]) == 3
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


# ---------------------------------------------------------------------------------------
# --plot DIR


def test_train_plot_writes_four_pngs_without_changing_the_result(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    from fastcnn import plotting

    histories = []
    draw_history = plotting.plot_history

    def spy(history, **kwargs):
        histories.append((history, kwargs))
        return draw_history(history, **kwargs)

    monkeypatch.setattr(plotting, "plot_history", spy)
    assert cli.main(TINY) == 0
    plain = capsys.readouterr().out
    directory = tmp_path / "plots" / "run 1"  # missing parents are created
    assert cli.main([*TINY, "--plot", str(directory)]) == 0
    out = capsys.readouterr().out

    names = ["history", "filters", "feature_maps", "confusion"]
    paths = [directory / f"{name}.png" for name in names]
    assert sorted(directory.iterdir()) == sorted(paths)
    for path in paths:
        assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plots (" in out and ", ".join(map(str, paths)) in out

    def accuracy_line(text):
        return next(line for line in text.splitlines() if line.startswith("test accuracy"))

    assert accuracy_line(out) == accuracy_line(plain)  # evaluating the test set changes nothing
    # The learning curves carry the test split's scores, labelled as such.
    ((history, kwargs),) = histories
    assert kwargs["validation_label"] == "test"
    correct, total = accuracy_line(out).split("(")[1].split(")")[0].split("/")
    assert history.history["val_accuracy"] == [pytest.approx(int(correct) / int(total))]


def test_train_plot_to_a_file_fails_before_training(tmp_path, capsys):
    target = tmp_path / "taken.png"
    target.write_bytes(b"")
    assert cli.main([*TINY, "--plot", str(target)]) == 1
    captured = capsys.readouterr()
    assert f"fastcnn train: error: --plot: {str(target)!r} exists and is not a directory" in (
        captured.err
    )
    assert captured.out == ""  # not even the data summary: nothing was trained
    assert cli.main([*TINY, "--plot", str(target / "below")]) == 1
    assert "--plot: cannot create the directory" in capsys.readouterr().err


def test_train_plot_without_matplotlib_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    directory = tmp_path / "plots"
    assert cli.main([*TINY, "--plot", str(directory)]) == 1
    captured = capsys.readouterr()
    assert "fastcnn train: error: --plot: fastcnn.plotting needs matplotlib: pip install " in (
        captured.err
    )
    assert "'fastcnn[plot]'" in captured.err
    assert captured.out == "" and not directory.exists()


def test_train_help_documents_plot(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--plot DIR" in out and "history.png" in out and "confusion.png" in out
    assert "test split is also evaluated after every epoch" in out


def test_train_help_gives_every_option_help_and_each_default_once(capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    options = out.split("options:", 1)[1]
    entries = re.split(r"\n  (?=-)", options.strip())
    for entry in entries:
        name, *text = entry.split(None, 2 if entry.startswith("-q") else 1)
        assert text and len(" ".join(text).split()) > 1, f"{name} has no help text"
        assert entry.count("(default") <= 1, entry
    assert "(default: None)" not in out and "(default: False)" not in out
    assert "(default: 64)" in out and "(default: 0)" in out  # --batch-size, --seed


def test_an_impossible_thread_count_is_an_error_not_a_traceback(capsys):
    assert cli.main([*TINY, "--threads", "1000000"]) == 1
    err = capsys.readouterr().err
    assert "fastcnn train: error: --threads 1000000: n must be <=" in err
    assert "Traceback" not in err


def test_a_misspelt_option_shows_the_train_usage_and_the_closest_option(capsys):
    assert cli.main(["train", "--epohcs", "3"]) == 2
    err = capsys.readouterr().err
    assert "usage: fastcnn train" in err
    assert "unrecognized arguments: --epohcs 3 (did you mean --epochs?)" in err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_real_ctrl_c_saves_the_partial_model_and_exits_130(tmp_path):
    """A SIGINT during training: the model trained so far is evaluated and saved, stdout
    says the run was interrupted, and the exit status is 130 as for any interrupted
    command, so a calling script does not take the run for a finished one."""
    path = tmp_path / "partial.npz"
    argv = ["train", "--epochs", "1000", "--max-train", "200", "--save", str(path)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastcnn", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for line in proc.stdout:  # the header is printed just before training starts
            if "epoch(s)" in line:
                break
        time.sleep(1.0)  # into the first epochs
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "stopping after the current batch" in err
    assert "training interrupted" in out and "train: interrupted" in out
    assert f"model saved to {path}" in out
    assert fastcnn.load(path).predict(np.zeros((2, 1, 8, 8), np.float32)).shape == (2,)
