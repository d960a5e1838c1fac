"""
LeNet-5 on MNIST
================

``fastcnn.models.lenet5()`` builds the network (two 5x5 conv + tanh + average-pooling
stages, then dense layers of 120 and 84 units). ``fastcnn.datasets.load_mnist()`` fetches
MNIST from OpenML the first time (about 15 MB, cached by scikit-learn under
``~/scikit_learn_data``, or ``--data-home``) and reads the cache afterwards. It also takes
a Keras-style ``mnist.npz`` placed in the data directory.

Without network access and without a cached copy there is nothing to train on: the
script then says so, explains how to get the data, and exits with status 69
(``EX_UNAVAILABLE`` in BSD's sysexits.h), no traceback::

    python examples/lenet5_mnist.py                             # 3 epochs on all 60,000
    python examples/lenet5_mnist.py --epochs 1 --max-train 5000 # a quick look
    python examples/lenet5_mnist.py --data-home /data/sklearn   # use or fill that cache
"""

import argparse
import sys
import time
import warnings

import fastcnn
from fastcnn.datasets import DatasetUnavailableError, load_mnist
from fastcnn.optim import Adam

EXIT_DATA_UNAVAILABLE = 69


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train LeNet-5 on MNIST.")
    parser.add_argument("--epochs", type=int, default=3, help="passes over the training set")
    parser.add_argument(
        "--max-train", type=int, default=None, metavar="N", help="train on the first N images"
    )
    parser.add_argument(
        "--data-home", default=None, metavar="DIR", help="scikit-learn data directory"
    )
    args = parser.parse_args(argv)

    print("loading MNIST (downloads about 15 MB the first time)...", flush=True)
    try:
        with warnings.catch_warnings():
            # scikit-learn warns on every retry of a failed download; the error below
            # says everything that matters once.
            warnings.filterwarnings("ignore", message="A network error occurred")
            (X_train, y_train), (X_test, y_test) = load_mnist(data_home=args.data_home)
    except DatasetUnavailableError as exc:
        print(
            f"MNIST is not available, so there is nothing to train on.\n{exc}\n"
            "With the data in place, run this again (adding --data-home DIR if it is not "
            "in scikit-learn's default data directory).",
            file=sys.stderr,
        )
        return EXIT_DATA_UNAVAILABLE

    # MNIST's training images come in no particular order of digits, so the first N
    # are a fair sample.
    X_train, y_train = X_train[: args.max_train], y_train[: args.max_train]
    print(f"train {X_train.shape}, test {X_test.shape}")

    model = fastcnn.models.lenet5(random_state=0)  # C1 pads the 28x28 digits to the paper's 32x32
    print(model.summary(X_train.shape[1:]))

    start = time.perf_counter()
    optimizer = Adam(1e-3)  # batches of 32 (fit's default); verbose=2: a line per epoch
    model.fit(X_train, y_train, epochs=args.epochs, optimizer=optimizer, random_state=0, verbose=2)
    train_time = time.perf_counter() - start
    print(f"trained {args.epochs} epoch(s) on {len(X_train):,} images in {train_time:.2f} s")
    print(f"test accuracy: {model.evaluate(X_test, y_test)['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
