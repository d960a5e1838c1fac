"""
Quick start: a small CNN on handwritten digits
==============================================

The data is scikit-learn's 8x8 digits (1,797 images, bundled with scikit-learn, so this
runs offline). The model is two conv -> ReLU -> max-pool blocks and a dense layer, written
out layer by layer so you can see the whole network.

Run it from a checkout or anywhere fastcnn is installed::

    python examples/quickstart_digits.py               # 10 epochs, a few seconds
    python examples/quickstart_digits.py --epochs 2    # quicker, a little less accurate
"""

import argparse

from sklearn.model_selection import train_test_split

import fastcnn
from fastcnn.datasets import load_digits
from fastcnn.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU
from fastcnn.optim import Adam


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a small CNN on the 8x8 digits.")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the data")
    args = parser.parse_args(argv)

    X, y = load_digits()  # X: (1797, 1, 8, 8) float32 in [0, 1]; y: labels 0..9
    # Stratified, so every digit is as frequent in the test set as in the training set.
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=42
    )

    # The rng seeds make every run give the same weights, hence the same accuracy.
    model = fastcnn.Sequential(
        Conv2D(1, 16, 3, padding=1, rng=0), ReLU(), MaxPool2D(2),   # -> 16 x 4 x 4
        Conv2D(16, 32, 3, padding=1, rng=1), ReLU(), MaxPool2D(2),  # -> 32 x 2 x 2
        Flatten(), Dense(32 * 2 * 2, 10, rng=2),                    # -> 10 logits
    )  # fmt: skip
    print(model.summary((1, 8, 8)))

    # random_state seeds the shuffling; verbose=2 prints one line per epoch (on stderr).
    optimizer = Adam(3e-3)
    model.fit(X_train, y_train, epochs=args.epochs, optimizer=optimizer, random_state=0, verbose=2)
    print(f"test accuracy: {model.evaluate(X_test, y_test)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
