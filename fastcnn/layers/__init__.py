"""Stateful layers: parameters, their gradients and what backward needs, over ``functional``.

Each layer's ``forward`` is one call into :mod:`fastcnn.functional` plus a reference to
whatever ``backward`` will need (the conv input, the max-pooling indices, the batch
statistics, the dropout mask), so backward never recomputes forward. Argument checks and
output-shape formulas come from ``fastcnn._validation``, shared with functional.

Conventions shared by every layer:

* Layout is NCHW for images and (N, F) for features; ``output_shape`` takes and returns the
  shape of *one sample*, (C, H, W) or (F,), so it composes without a batch size.
* ``params`` and ``grads`` are dicts with the same keys. Both are allocated once, in
  ``__init__``; ``reset_parameters`` and ``backward`` overwrite them in place, so an
  optimizer may hold on to the arrays for the life of the layer.
* Layers with parameters have a ``dtype`` (float32 by default) and only accept inputs of
  that dtype: the conversion of e.g. uint8 images happens once, at the model boundary
  (:class:`fastcnn.Sequential`), not silently on every batch.
* ``get_config()`` returns the constructor arguments as JSON-able values, so
  ``type(layer)(**layer.get_config())`` rebuilds the architecture (used by save/load).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastcnn.layers.activation import GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Softmax, Tanh
from fastcnn.layers.augmentation import RandomCrop, RandomFlip
from fastcnn.layers.base import Layer
from fastcnn.layers.conv import Conv2D, ConvTranspose2D, DepthwiseConv2D, SeparableConv2D
from fastcnn.layers.dense import Dense
from fastcnn.layers.merging import Add, Concatenate, Identity
from fastcnn.layers.normalization import BatchNorm1D, BatchNorm2D
from fastcnn.layers.pooling import (
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    AvgPool2D,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    MaxPool2D,
)
from fastcnn.layers.regularization import Dropout
from fastcnn.layers.resampling import Upsample2D
from fastcnn.layers.reshaping import Flatten

if TYPE_CHECKING:  # at run time, __getattr__ at the end: fastcnn.saving imports this package
    from fastcnn.saving.registry import LAYER_REGISTRY, layer_from_config, register_layer

__all__ = [
    "AvgPool2D",
    "BatchNorm2D",
    "Conv2D",
    "Dense",
    "Dropout",
    "Flatten",
    "LAYER_REGISTRY",
    "Layer",
    "LeakyReLU",
    "MaxPool2D",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "RandomCrop",
    "RandomFlip",
    "layer_from_config",
    # merging
    "Add",
    "Concatenate",
    "Identity",
    "register_layer",
    # GELU, SiLU, softmax and BatchNorm1D
    "BatchNorm1D",
    "GELU",
    "SiLU",
    "Softmax",
    # resampling: adaptive and global pooling, upsampling
    "AdaptiveAvgPool2D",
    "AdaptiveMaxPool2D",
    "GlobalAvgPool2D",
    "GlobalMaxPool2D",
    "Upsample2D",
    "ConvTranspose2D",
    "DepthwiseConv2D",
    "SeparableConv2D",
]

#: Every layer class fastcnn ships (the public ones above, Layer itself aside): the classes
#: a model file may name (fastcnn.saving's registry starts from them).
LAYER_CLASSES: tuple[type[Layer], ...] = tuple(
    obj
    for name in __all__
    if isinstance(obj := globals().get(name), type) and issubclass(obj, Layer) and obj is not Layer
)

# The classes show (repr, pickle, the API pages) under the name users import them by.
for _cls in (Layer, *LAYER_CLASSES):
    _cls.__module__ = __name__
del _cls

# ---------------------------------------------------------------------------------------
# The registry of the classes a model file may name lives in fastcnn.saving.registry;
# its names stay importable from here, where users have always found them.

_SAVING_NAMES = ("LAYER_REGISTRY", "layer_from_config", "register_layer")

if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        """Serve the registry's names from :mod:`fastcnn.saving`, their home."""
        if name in _SAVING_NAMES:
            from fastcnn.saving import registry

            return getattr(registry, name)
        raise AttributeError(f"module 'fastcnn.layers' has no attribute {name!r}")
