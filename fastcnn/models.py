"""Ready-made architectures: LeNet-5, a small CNN for 8x8 digits, a small VGG for 32x32 RGB.

Each builder returns a fresh :class:`fastcnn.Sequential`. Weights are drawn, layer after
layer, from one ``numpy.random.Generator`` seeded with ``random_state``, in float64 and then
cast, so a seed gives the same initial weights on either backend and for either dtype.
"""

from __future__ import annotations

import numbers
from typing import TypeVar

import numpy as np
from numpy.typing import DTypeLike

from fastcnn.layers import (
    AvgPool2D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from fastcnn.model import Sequential

__all__ = ["digits_cnn", "lenet5", "vgg_small"]

_T = TypeVar("_T")
# Seeds as scikit-learn takes them: None, an int, a Generator or a RandomState.
SeedLike = int | np.random.Generator | np.random.RandomState | None

_ACTIVATIONS = {"tanh": Tanh, "relu": ReLU, "sigmoid": Sigmoid, "leaky_relu": LeakyReLU}
_POOLINGS = {"avg": AvgPool2D, "max": MaxPool2D}


def _rng(random_state: object) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):  # scikit-learn's convention
        return np.random.default_rng(int(random_state.randint(2**31)))
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return np.random.default_rng(int(random_state))
    raise TypeError(
        "random_state must be None, an int, a numpy Generator or RandomState, got "
        f"{random_state!r}"
    )


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _size_pair(value: object, name: str) -> tuple[int, int]:
    if isinstance(value, tuple | list) and len(value) == 2:
        return _positive_int(value[0], name), _positive_int(value[1], name)
    size = _positive_int(value, name)
    return size, size


def _choice(value: str, name: str, options: dict[str, _T]) -> _T:
    if value not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {value!r}")
    return options[value]


def _flat_size(layers: list[Layer], input_shape: tuple[int, int, int]) -> int:
    return int(np.prod(Sequential(layers).output_shape(input_shape)))


def lenet5(
    num_classes: int = 10,
    in_channels: int = 1,
    activation: str = "tanh",
    pooling: str = "avg",
    input_size: int | tuple[int, int] = 28,
    *,
    dtype: DTypeLike = np.float32,
    random_state: SeedLike = None,
) -> Sequential:
    """LeNet-5 (LeCun et al., 1998) as it is usually rebuilt today.

    ``C1`` 5x5 conv to 6 maps, ``S2`` 2x2 subsampling, ``C3`` 5x5 conv to 16 maps, ``S4``
    2x2 subsampling, then dense layers of 120 and 84 units and the output layer, with
    ``activation`` after every conv and hidden dense layer. C3 is fully connected to S2
    (the original's sparse connection table is not reproduced) and the output is a plain
    dense layer giving logits (no RBF units).

    Parameters
    ----------
    num_classes : int, default 10
    in_channels : int, default 1
    activation : {'tanh', 'relu', 'sigmoid', 'leaky_relu'}, default 'tanh'
    pooling : {'avg', 'max'}, default 'avg'
    input_size : int or (int, int), default 28
        Height and width of the input images. 28x28 input (MNIST) gets zero padding 2 on
        the first conv, so C1 gives 28x28 maps as 32x32 input does without padding; any
        size from 16 up works, with padding 2 below 32 and none from 32.
    dtype : float32 or float64, default float32
    random_state : int, numpy.random.Generator or None
        Seeds the initial weights.

    Returns
    -------
    Sequential
        Input (N, in_channels, H, W), output (N, num_classes) logits. For 28x28 or 32x32
        single-channel input and 10 classes it has 61,706 parameters.
    """
    num_classes = _positive_int(num_classes, "num_classes")
    in_channels = _positive_int(in_channels, "in_channels")
    act = _choice(activation, "activation", _ACTIVATIONS)
    pool = _choice(pooling, "pooling", _POOLINGS)
    height, width = _size_pair(input_size, "input_size")
    pad = (2 if height < 32 else 0, 2 if width < 32 else 0)
    if height + 2 * pad[0] < 16 or width + 2 * pad[1] < 16:
        raise ValueError(
            f"lenet5 needs input of at least 16x16 pixels (12x12 with its padding of 2), "
            f"got input_size={input_size!r}; upscale or pad smaller images first"
        )
    rng = _rng(random_state)
    features: list[Layer] = [
        Conv2D(in_channels, 6, 5, padding=pad, dtype=dtype, rng=rng),
        act(),
        pool(2),
        Conv2D(6, 16, 5, dtype=dtype, rng=rng),
        act(),
        pool(2),
        Flatten(),
    ]
    flat = _flat_size(features, (in_channels, height, width))
    classifier: list[Layer] = [
        Dense(flat, 120, dtype=dtype, rng=rng),
        act(),
        Dense(120, 84, dtype=dtype, rng=rng),
        act(),
        Dense(84, num_classes, dtype=dtype, rng=rng),
    ]
    return Sequential(features + classifier)


def digits_cnn(
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int | tuple[int, int] = 8,
    *,
    dtype: DTypeLike = np.float32,
    random_state: SeedLike = None,
) -> Sequential:
    """Build a small CNN for 8x8 digit images (scikit-learn's ``load_digits``).

    Two blocks of 3x3 conv (padding 1) -> BatchNorm -> ReLU -> 2x2 max pooling, with 32 and
    64 maps, then dense 128 -> ReLU -> Dropout(0.3) -> dense ``num_classes``. On 8x8 input
    that is 8x8x32 -> 4x4x32 -> 4x4x64 -> 2x2x64 -> 256 features and 53,194 parameters.

    Trained with Adam (learning rate 3e-3, cosine decay to 0 over 15 epochs, batch 64) it
    reaches 98.6-99.4% test accuracy (mean 98.9% over seeds 0-9; 99.2% with seed 0) on the
    80/20 stratified split of the digits data, in about 2 s of training on two cores: that
    is what ``python -m fastcnn train`` runs.

    Parameters
    ----------
    num_classes : int, default 10
    in_channels : int, default 1
    input_size : int or (int, int), default 8
        Height and width of the input. Other sizes work too: a pooling stage only pools
        the axes that are at least 2 long and is left out on 1x1 maps, so even a 1xF
        "image" of F tabular features goes through (this is how
        :class:`fastcnn.CNNClassifier` handles tabular data).
    dtype : float32 or float64, default float32
    random_state : int, numpy.random.Generator or None
        Seeds the initial weights and the dropout masks.

    Returns
    -------
    Sequential
        Input (N, in_channels, H, W), output (N, num_classes) logits.
    """
    num_classes = _positive_int(num_classes, "num_classes")
    in_channels = _positive_int(in_channels, "in_channels")
    height, width = _size_pair(input_size, "input_size")
    rng = _rng(random_state)
    layers: list[Layer] = []
    channels = in_channels
    for out_channels in (32, 64):
        layers += [
            Conv2D(channels, out_channels, 3, padding=1, dtype=dtype, rng=rng),
            BatchNorm2D(out_channels, dtype=dtype),
            ReLU(),
        ]
        kernel = (2 if height >= 2 else 1, 2 if width >= 2 else 1)
        if kernel != (1, 1):
            layers.append(MaxPool2D(kernel))
            height, width = height // kernel[0], width // kernel[1]
        channels = out_channels
    layers += [
        Flatten(),
        Dense(channels * height * width, 128, dtype=dtype, rng=rng),
        ReLU(),
        Dropout(0.3, rng=np.random.default_rng(rng.integers(2**63))),
        Dense(128, num_classes, dtype=dtype, rng=rng),
    ]
    return Sequential(layers)


def vgg_small(
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int | tuple[int, int] = 32,
    *,
    dtype: DTypeLike = np.float32,
    random_state: SeedLike = None,
) -> Sequential:
    """Build a small VGG-style CNN for 32x32 colour images (CIFAR-10, ``make_shapes``).

    Two blocks of two 3x3 convs (padding 1, each followed by ReLU) and a 2x2 max pooling,
    with 32 and 64 maps, then dense 128 -> ReLU -> dense ``num_classes``. On 3x32x32 input
    that is 32x32x32 -> 16x16x32 -> 16x16x64 -> 8x8x64 -> 4096 features, and 591,274
    parameters for 10 classes.

    Parameters
    ----------
    num_classes : int, default 10
    in_channels : int, default 3
    input_size : int or (int, int), default 32
        Height and width of the input, at least 4: the features after the two poolings
        are ``64 * (H // 4) * (W // 4)``.
    dtype : float32 or float64, default float32
    random_state : int, numpy.random.Generator or None
        Seeds the initial weights.

    Returns
    -------
    Sequential
        Input (N, in_channels, H, W), output (N, num_classes) logits.
    """
    num_classes = _positive_int(num_classes, "num_classes")
    in_channels = _positive_int(in_channels, "in_channels")
    height, width = _size_pair(input_size, "input_size")
    if height < 4 or width < 4:
        raise ValueError(
            f"vgg_small needs input of at least 4x4 pixels (it pools twice by 2), "
            f"got input_size={input_size!r}"
        )
    rng = _rng(random_state)
    layers: list[Layer] = []
    channels = in_channels
    for out_channels in (32, 64):
        for _ in range(2):
            layers += [Conv2D(channels, out_channels, 3, padding=1, dtype=dtype, rng=rng), ReLU()]
            channels = out_channels
        layers.append(MaxPool2D(2))
    layers += [
        Flatten(),
        Dense(channels * (height // 4) * (width // 4), 128, dtype=dtype, rng=rng),
        ReLU(),
        Dense(128, num_classes, dtype=dtype, rng=rng),
    ]
    return Sequential(layers)
