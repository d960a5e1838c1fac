"""The layer registry and the architecture: the only classes a model file may name.

A model file stores its architecture as JSON: each layer's class name and its
``get_config()``. Loading rebuilds the layers only from :data:`LAYER_REGISTRY`, never by
importing a name found in a file, so a file cannot make fastcnn run code of its choosing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastcnn.layers import (
    GELU,
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    ConvTranspose2D,
    Dense,
    DepthwiseConv2D,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    GlobalMaxPool2D,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    SeparableConv2D,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
    Upsample2D,
)
from fastcnn.layers.augmentation import RandomCrop, RandomFlip

if TYPE_CHECKING:  # fastcnn.model imports this package
    from fastcnn.model import Sequential

__all__ = ["LAYER_REGISTRY", "layer_from_config", "register_layer"]

#: The ``"kind"`` of a Sequential architecture.
ARCH_KIND = "fastcnn.Sequential"
#: Most layers a model file may hold. The deepest published CNNs have about a thousand
#: (ResNet-1202); ten times that is far beyond any real model, yet small enough that a
#: hostile file's architecture is cheap to refuse. Sequential itself takes any number.
MAX_FILE_LAYERS = 10_000


#: Layer classes by name: the only classes a model file may name.
LAYER_REGISTRY: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (
        Conv2D,
        Dense,
        BatchNorm2D,
        MaxPool2D,
        AvgPool2D,
        ReLU,
        LeakyReLU,
        Tanh,
        Sigmoid,
        Flatten,
        Dropout,
        # GELU, SiLU, softmax and BatchNorm1D
        BatchNorm1D,
        GELU,
        SiLU,
        Softmax,
        # resampling: adaptive and global pooling, upsampling
        AdaptiveAvgPool2D,
        AdaptiveMaxPool2D,
        GlobalAvgPool2D,
        GlobalMaxPool2D,
        Upsample2D,
        # augmentation, in training only
        RandomCrop,
        RandomFlip,
        # transposed, depthwise and separable convolution
        ConvTranspose2D,
        DepthwiseConv2D,
        SeparableConv2D,
    )  # fmt: skip
}


def register_layer(cls: type[Layer]) -> type[Layer]:
    """Allow a custom :class:`~fastcnn.layers.Layer` subclass in saved models.

    A class decorator. Loading rebuilds layers only from this registry (never by
    importing a name found in a file), so a custom layer must be registered before
    :func:`fastcnn.load` sees it. Its ``get_config()`` must return its constructor
    arguments as JSON-able values.
    """
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise TypeError(f"register_layer expects a Layer subclass, got {cls!r}")
    existing = LAYER_REGISTRY.get(cls.__name__)
    if existing is not None and existing is not cls:
        raise ValueError(f"a different layer class named {cls.__name__!r} is already registered")
    LAYER_REGISTRY[cls.__name__] = cls
    return cls


def layer_from_config(name: str, config: dict[str, Any]) -> Layer:
    """Build a registered layer from its class name and ``get_config()`` dict."""
    try:
        cls = LAYER_REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown layer class {name!r}; known layers: {sorted(LAYER_REGISTRY)}"
        ) from None
    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise ValueError(f"config for layer {name} must be a dict with str keys, got {config!r}")
    return cls(**config)


# ---------------------------------------------------------------------------------------
# The architecture


def model_config(model: Sequential) -> dict[str, Any]:
    """Return the architecture of ``model`` as JSON-able data: layer classes and configs."""
    layers = []
    for i, layer in enumerate(model.layers):
        name = type(layer).__name__
        if LAYER_REGISTRY.get(name) is not type(layer):
            raise ValueError(
                f"layer {i} ({layer!r}) is not a registered layer class; register it "
                "with fastcnn.layers.register_layer to save it"
            )
        layers.append({"class": name, "config": layer.get_config()})
    return {"kind": ARCH_KIND, "layers": layers}


def layers_from_config(config: dict[str, Any]) -> list[Layer]:
    """Build the layers (freshly initialized) of a :func:`model_config` architecture."""
    if not isinstance(config, dict) or config.get("kind") != ARCH_KIND:
        raise ValueError(f"not a {ARCH_KIND} architecture: {str(config)[:200]}")
    specs = config.get("layers")
    if not isinstance(specs, list):
        raise ValueError("architecture has no 'layers' list")
    if len(specs) > MAX_FILE_LAYERS:  # before building any
        raise ValueError(
            f"the architecture has {len(specs):,} layers; a model file may hold at "
            f"most {MAX_FILE_LAYERS:,}"
        )
    layers = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or set(spec) != {"class", "config"}:
            raise ValueError(f"layer {i}: expected {{'class': ..., 'config': ...}}, got {spec!r}")
        try:
            layers.append(layer_from_config(spec["class"], spec["config"]))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"layer {i} ({spec['class']!r}): {exc}") from None
    return layers
