"""The ``fastcnn`` command (also ``python -m fastcnn``).

Subcommands:

* ``train``: the main job. Trains a CNN (``digits_cnn`` on scikit-learn's 8x8 digits by
  default: 80/20 stratified split, ``random_state`` 42) with a progress bar, then prints the
  test accuracy, a per-class report and the total wall time; ``--plot DIR`` also draws
  the learning curves, filters, feature maps and confusion matrix
  (:mod:`fastcnn.plotting`).
* ``info``: configuration, backends and a quick timing (:mod:`fastcnn._info`).

The benchmark suite is not a subcommand: it lives in the repository
(``python benchmarks/run.py``), not in the installed package.

Everything heavy (scikit-learn, the model stack) is imported when a subcommand runs, so
``fastcnn --help`` answers at once.
"""

from __future__ import annotations

import argparse
import difflib
import math
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when a subcommand runs (see above)
    import numpy as np

    from fastcnn.model import History, Sequential
    from fastcnn.optim import Optimizer

__all__ = ["main"]

_PROG = "fastcnn"

# Default recipe per (model, dataset): epochs, Adam learning rate, SGD learning rate. Every
# run uses batches of 64 (--batch-size) and a cosine decay of the learning rate to 0.
_RECIPES = {
    ("digits_cnn", "digits"): (15, 3e-3, 0.05),
    ("lenet5", "digits"): (15, 3e-3, 0.05),
    ("digits_cnn", "mnist"): (5, 1e-3, 0.02),
    ("lenet5", "mnist"): (5, 1e-3, 0.02),
}
_DELEGATES = {"info": "fastcnn._info"}


class _CLIError(Exception):
    """A problem to report as ``fastcnn train: error: ...`` with exit status 1."""


# ---------------------------------------------------------------------------------------
# Argument parsing


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "int"  # argparse names the type in some messages
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


class _HelpFormatter(argparse.HelpFormatter):
    """Append each option's default to its help once.

    Never where the help already gives it in words, nor for a default of None (nothing
    chosen) or a flag's False.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False
        if "(default" in text or unset or action.default == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def _parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """Build the ``fastcnn`` parser, and its command parsers by name."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="fastcnn: convolutional neural networks, fast on the CPU.",
        epilog="Run 'fastcnn <command> --help' for the options of a command.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="<command>")

    train = commands.add_parser(
        "train",
        help="train a CNN on digits (default) or MNIST and report test accuracy",
        description=(
            "Train a CNN and report its test accuracy, a per-class report and the wall "
            "time. Digits: scikit-learn's 1,797 8x8 images (offline), split 80/20 "
            "stratified with random_state 42. MNIST: the standard 60,000/10,000 split "
            "(needs network access or a local copy; see fastcnn.datasets.load_mnist)."
        ),
        formatter_class=_HelpFormatter,
    )
    _add_recipe_arguments(train)
    _add_run_arguments(train)
    commands.add_parser(
        "info",
        help="show the configuration, backends and a quick timing",
        add_help=False,
        description="All arguments are passed on; see 'fastcnn info --help'.",
    )
    return parser, {"train": train}


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``train`` that choose the model, the data and the optimizer."""
    parser.add_argument(
        "--model",
        choices=("digits_cnn", "lenet5"),
        default="digits_cnn",
        help="the network: a small CNN for 8x8 digits, or LeCun's LeNet-5 for 28x28 images",
    )
    parser.add_argument(
        "--dataset",
        choices=("digits", "mnist"),
        default="digits",
        help="lenet5 on digits upscales the 8x8 images 3x and pads them to 28x28",
    )
    parser.add_argument(
        "--epochs",
        type=_int_at_least(1),
        default=None,
        help="passes over the training set (default: 15 on digits, 5 on MNIST)",
    )
    parser.add_argument(
        "--batch-size", type=_int_at_least(1), default=64, help="images per gradient step"
    )
    parser.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="initial learning rate, decayed to 0 by a cosine schedule (default: adam "
        "3e-3 on digits, 1e-3 on MNIST; sgd 0.05 on digits, 0.02 on MNIST)",
    )
    parser.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default="adam",
        help="sgd uses Nesterov momentum 0.9",
    )
    parser.add_argument(
        "--backend",
        choices=("cython", "numpy"),
        default=None,
        help="compute backend (default: the active one, cython when compiled)",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``train`` that seed, run, save, plot and report it."""
    parser.add_argument(
        "--seed", type=_int_at_least(0), default=0, help="seeds the weights and the shuffling"
    )
    parser.add_argument(
        "--threads",
        type=_int_at_least(1),
        default=None,
        help="threads for the compiled kernels (default: OMP_NUM_THREADS or all cores)",
    )
    parser.add_argument("--save", metavar="PATH", default=None, help="save the trained model")
    parser.add_argument(
        "--plot",
        metavar="DIR",
        default=None,
        help="after training, write into DIR (created if missing) history.png (learning "
        "curves), filters.png (the first conv layer's kernels), feature_maps.png (the first "
        "test image after the first conv block) and confusion.png (test set); needs "
        "matplotlib (pip install 'fastcnn[plot]'). For the test curves in history.png the "
        "test split is also evaluated after every epoch (as Keras' validation_data): it "
        "does not change the training or the trained model, only adds that evaluation to "
        "the training time",
    )
    parser.add_argument(
        "--test-size", type=_fraction, default=0.2, help="test fraction of the digits split"
    )
    parser.add_argument(
        "--max-train",
        type=_int_at_least(10),
        default=None,
        metavar="N",
        help="train on a stratified subset of N training images (quick runs)",
    )
    parser.add_argument(
        "--data-home", default=None, help="scikit-learn data directory (MNIST cache)"
    )
    parser.add_argument("--summary", action="store_true", help="print the model summary")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar (one summary at the end)"
    )


# ---------------------------------------------------------------------------------------
# The train command


def _load_data(
    args: argparse.Namespace,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Return ``(X_train, y_train, X_test, y_test, description)``."""
    import numpy as np

    from fastcnn import datasets

    if args.dataset == "digits":
        from sklearn.model_selection import train_test_split

        X, y = datasets.load_digits()
        X_train, X_test, y_train, y_test = train_test_split(
            X, y, test_size=args.test_size, stratify=y, random_state=42
        )
        train_pct = round(100 * (1 - args.test_size))
        split = f"{train_pct}/{100 - train_pct} stratified split, random_state 42"
        if args.model == "lenet5":
            # LeNet-5 wants 28x28: the way MNIST frames a 20x20 digit in a 28x28 image,
            # each 8x8 digit becomes 24x24 (every pixel repeated 3x3) with a 2-pixel border.
            def upscale(images: np.ndarray) -> np.ndarray:
                big = images.repeat(3, axis=2).repeat(3, axis=3)
                return np.pad(big, ((0, 0), (0, 0), (2, 2), (2, 2)))

            X_train, X_test = upscale(X_train), upscale(X_test)
            split += "; 8x8 images upscaled 3x and padded to 28x28 for lenet5"
    else:
        try:
            (X_train, y_train), (X_test, y_test) = datasets.load_mnist(args.data_home)
        except (datasets.DatasetUnavailableError, ValueError) as exc:
            raise _CLIError(str(exc)) from None
        split = "standard 60,000/10,000 split"
    if args.max_train is not None and args.max_train < len(y_train):
        from sklearn.model_selection import train_test_split

        n_classes = len(np.unique(y_train))
        if args.max_train < n_classes:
            raise _CLIError(f"--max-train must be at least the number of classes ({n_classes})")
        X_train, _, y_train, _ = train_test_split(
            X_train, y_train, train_size=args.max_train, stratify=y_train, random_state=42
        )
        split += f"; training on a stratified subset of {args.max_train}"
    return X_train, y_train, X_test, y_test, f"{args.dataset} ({split})"


def _train(args: argparse.Namespace, start: float) -> int:
    """Run ``fastcnn train``: set up, load, build, fit and report; return the exit status."""
    _set_up(args)
    X_train, y_train, X_test, y_test, description = _load_data(args)
    model, optimizer, epochs = _build(args, X_train, y_train, y_test, description)
    from fastcnn.optim import CosineAnnealingLR

    fit_start = time.perf_counter()
    history = model.fit(
        X_train,
        y_train,
        epochs=epochs,
        batch_size=args.batch_size,
        optimizer=optimizer,
        random_state=args.seed,
        verbose=0 if args.quiet else 1,
        callbacks=[CosineAnnealingLR(optimizer, T_max=epochs)],
        validation_data=(X_test, y_test) if args.plot is not None else None,
    )
    fit_time = time.perf_counter() - fit_start
    if history.interrupted:
        print("training interrupted: evaluating the model as it is")
    _report(args, model, history, len(y_train), X_test, y_test)
    total = time.perf_counter() - start
    n_seen = len(y_train) * len(history.epoch)
    print(
        f"time: training {fit_time:.2f} s ({n_seen / max(fit_time, 1e-9):,.0f} images/s), "
        f"total {total:.2f} s"
    )
    if args.plot is not None:
        plot_start = time.perf_counter()
        written = _write_plots(args.plot, model, history, X_test, y_test)
        print(f"plots ({time.perf_counter() - plot_start:.2f} s): {', '.join(written)}")
    if history.interrupted:  # the shell convention for a Ctrl-C: 128 + SIGINT
        print(f"{_PROG} train: interrupted; the results above are of the partly trained model")
        return 130
    return 0


def _set_up(args: argparse.Namespace) -> None:
    """Apply ``--backend`` and ``--threads``; check ``--save`` and ``--plot`` before training."""
    import os

    import fastcnn

    if args.backend is not None:
        if args.backend not in fastcnn.available_backends():
            raise _CLIError(
                f"backend {args.backend!r} is not available: {fastcnn.backend_import_error()}"
            )
        fastcnn.set_backend(args.backend)
    if args.threads is not None:
        try:
            fastcnn.set_num_threads(args.threads)
        except (ValueError, RuntimeError) as exc:  # too many, or in a forked child
            raise _CLIError(f"--threads {args.threads}: {exc}") from None
    if args.save is not None:  # fail now, not after the training
        directory = os.path.dirname(os.path.abspath(args.save))
        if not os.path.isdir(directory):
            raise _CLIError(f"cannot save to {args.save!r}: no directory {directory!r}")
    if args.plot is not None:
        _prepare_plot_dir(args.plot)


def _build(
    args: argparse.Namespace,
    X_train: np.ndarray,
    y_train: np.ndarray,
    y_test: np.ndarray,
    description: str,
) -> tuple[Sequential, Optimizer, int]:
    """Build the model and the optimizer of the recipe; print what will be trained."""
    import fastcnn
    from fastcnn import models
    from fastcnn.optim import SGD, Adam

    epochs, adam_lr, sgd_lr = _RECIPES[args.model, args.dataset]
    epochs = args.epochs if args.epochs is not None else epochs
    lr = args.lr if args.lr is not None else (adam_lr if args.optimizer == "adam" else sgd_lr)
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    input_shape = X_train.shape[1:]
    builder = models.digits_cnn if args.model == "digits_cnn" else models.lenet5
    model = builder(n_classes, input_shape[0], input_size=input_shape[1:], random_state=args.seed)
    optimizer: Optimizer
    if args.optimizer == "adam":
        optimizer = Adam(lr)
    else:
        optimizer = SGD(lr, momentum=0.9, nesterov=True)

    print(
        f"fastcnn {fastcnn.__version__}: backend {fastcnn.get_backend()}, "
        f"{fastcnn.get_num_threads()} thread(s)"
    )
    print(f"data:  {description}")
    print(
        f"       {len(y_train)} training and {len(y_test)} test images of shape "
        f"{'x'.join(map(str, input_shape))}, {n_classes} classes"
    )
    print(
        f"model: {args.model}, {model.num_params:,} parameters; {args.optimizer} lr {lr:g} "
        f"with cosine decay, batch {args.batch_size}, {epochs} epoch(s), seed {args.seed}"
    )
    if args.summary:
        print(model.summary(input_shape))
    sys.stdout.flush()
    return model, optimizer, epochs


def _report(
    args: argparse.Namespace,
    model: Sequential,
    history: History,
    n_train: int,
    X_test: np.ndarray,
    y_test: np.ndarray,
) -> None:
    """Print the test accuracy and the per-class report; save the model when asked."""
    import numpy as np
    from sklearn.metrics import classification_report

    y_pred = model.predict(X_test)
    correct = int(np.count_nonzero(y_pred == y_test))
    line = f"\ntest accuracy: {correct / len(y_test):.4f} ({correct}/{len(y_test)})"
    if history.epoch:
        line += f"   train loss {history.history['loss'][-1]:.4f}"
    print(line)
    print(classification_report(y_test, y_pred, digits=4, zero_division=0))
    if args.save:
        try:
            model.save(args.save)
        except OSError as exc:
            raise _CLIError(f"could not save the model to {args.save!r}: {exc}") from None
        print(f"model saved to {args.save} (load it with fastcnn.load)")


def _prepare_plot_dir(directory: str) -> None:
    """Check matplotlib and create ``directory`` before training.

    So a long run does not end in an error.
    """
    import os

    from fastcnn import plotting

    try:
        plotting.require_matplotlib()
    except ImportError as exc:
        raise _CLIError(f"--plot: {exc}") from None
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise _CLIError(f"--plot: {directory!r} exists and is not a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise _CLIError(f"--plot: cannot create the directory {directory!r}: {exc}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _CLIError(f"--plot: cannot write into the directory {directory!r}")


def _write_plots(
    directory: str,
    model: Sequential,
    history: History,
    X_test: np.ndarray,
    y_test: np.ndarray,
) -> list[str]:
    """Draw the four pictures of ``--plot`` into ``directory``; return the paths written."""
    import os

    from fastcnn import plotting

    paths = {
        name: os.path.join(directory, f"{name}.png")
        for name in ("history", "filters", "feature_maps", "confusion")
    }
    try:
        if history.epoch:  # an interrupted run may have no complete epoch to draw
            plotting.plot_history(history, validation_label="test", path=paths["history"])
        else:
            del paths["history"]
        plotting.plot_filters(model, path=paths["filters"])
        plotting.plot_feature_maps(model, X_test[0], path=paths["feature_maps"])
        plotting.plot_confusion(model, X_test, y_test, path=paths["confusion"])
    except OSError as exc:
        raise _CLIError(f"could not write the plots into {directory!r}: {exc}") from None
    return list(paths.values())


# ---------------------------------------------------------------------------------------
# Entry point


def _unknown_options(parser: argparse.ArgumentParser, unknown: list[str]) -> None:
    """Exit through ``parser.error`` naming the unknown arguments.

    A misspelt option is given the closest one as a suggestion.
    """
    options = [opt for action in parser._actions for opt in action.option_strings]
    message = f"unrecognized arguments: {' '.join(unknown)}"
    close = difflib.get_close_matches(unknown[0].split("=")[0], options, n=1)
    if unknown[0].startswith("-") and close:
        message += f" (did you mean {close[0]}?)"
    parser.error(message)


def main(argv: list[str] | None = None) -> int:
    """Run the ``fastcnn`` command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 when the command failed (e.g. a dataset is unavailable), 2 for
        bad arguments (argparse's convention).
    """
    start = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATES:
        # info and bench parse their own arguments (--help included).
        from importlib import import_module

        module = import_module(_DELEGATES[argv[0]])
        return int(module.main(argv[1:]) or 0)

    parser, commands = _parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # reported by the command's parser: its usage, not the top level's
            _unknown_options(commands.get(args.command, parser), unknown)
    except SystemExit as exc:  # --help exits 0, bad options 2: return, not exit
        return int(exc.code or 0)
    if args.version:
        import fastcnn

        print(f"fastcnn {fastcnn.__version__}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return _train(args, start)
    except _CLIError as exc:
        print(f"{_PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{_PROG} {args.command}: interrupted", file=sys.stderr)
        return 130
