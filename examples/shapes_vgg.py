"""
Colour images with augmentation: a VGG-style CNN on synthetic shapes
====================================================================

The data is :func:`fastcnn.datasets.make_shapes`: 32x32 RGB images of squares, discs,
triangles and stripes at random positions, sizes and colours, drawn by code, so this runs
offline. The model starts with two augmentation layers, ``RandomCrop(32, padding=3)`` and
``RandomFlip("horizontal")``: in training each batch is shifted and mirrored afresh, while
``evaluate`` sees the images as they are. ``fit(random_state=0)`` seeds the augmentation
too, so every run gives the same accuracy.

The default network is a compact VGG-style one (three conv -> BatchNorm -> ReLU -> pool
blocks, 27,908 parameters), which reaches about 98% in a few seconds;
``--model vgg_small`` trains :func:`fastcnn.models.vgg_small` (591,000 parameters, two
conv-conv-pool blocks and no BatchNorm), which needs more epochs and time.

Run it from a checkout or anywhere fastcnn is installed::

    python examples/shapes_vgg.py                     # 3,000 images, 6 epochs
    python examples/shapes_vgg.py --model vgg_small --epochs 10
"""

import argparse

import fastcnn
from fastcnn.datasets import SHAPES, make_shapes
from fastcnn.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Flatten,
    MaxPool2D,
    RandomCrop,
    RandomFlip,
    ReLU,
)
from fastcnn.models import vgg_small
from fastcnn.optim import Adam


def compact_vgg(num_classes):
    """Three blocks of 3x3 conv -> BatchNorm -> ReLU -> 2x2 max pool: 32 -> 16 -> 8 -> 4."""
    layers, channels = [], 3
    for seed, width in enumerate((16, 32, 64)):
        layers += [Conv2D(channels, width, 3, padding=1, rng=seed), BatchNorm2D(width), ReLU(),
                   MaxPool2D(2)]  # fmt: skip
        channels = width
    return layers + [Flatten(), Dense(channels * 4 * 4, num_classes, rng=3)]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a CNN on make_shapes, augmented.")
    parser.add_argument("--model", choices=["compact", "vgg_small"], default="compact")
    parser.add_argument("--n-train", type=int, default=3000, help="training images")
    parser.add_argument("--epochs", type=int, default=6, help="passes over the data")
    args = parser.parse_args(argv)

    # Different seeds, so the test images are new ones.
    X_train, y_train = make_shapes(args.n_train, 32, random_state=0)
    X_test, y_test = make_shapes(1000, 32, random_state=1)
    print(f"train {X_train.shape}, test {X_test.shape}, classes {SHAPES}")

    if args.model == "compact":
        network, lr = compact_vgg(len(SHAPES)), 3e-3
    else:
        network, lr = vgg_small(len(SHAPES), random_state=0).layers, 1e-3
    model = fastcnn.Sequential(RandomCrop(32, padding=3), RandomFlip("horizontal"), *network)
    print(model.summary((3, 32, 32)))

    model.fit(X_train, y_train, epochs=args.epochs, batch_size=64, optimizer=Adam(lr),
              random_state=0, verbose=2)  # fmt: skip
    print(f"trained {args.epochs} epoch(s) on {args.n_train} images")
    print(f"test accuracy: {model.evaluate(X_test, y_test)['accuracy']:.4f}")


if __name__ == "__main__":
    main()
