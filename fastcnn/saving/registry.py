"""The layer registry and the architecture: the only classes a model file may name.

A model file stores its architecture as JSON: each layer's class name and its
``get_config()``. Loading rebuilds the layers only from :data:`LAYER_REGISTRY`, never by
importing a name found in a file, so a file cannot make fastcnn run code of its choosing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastcnn.layers import LAYER_CLASSES, Layer

if TYPE_CHECKING:  # fastcnn.model imports this package
    from fastcnn.graph import Model
    from fastcnn.model import Sequential

__all__ = ["LAYER_REGISTRY", "layer_from_config", "register_layer"]

#: The ``"kind"`` of a Sequential architecture.
ARCH_KIND = "fastcnn.Sequential"
#: Most layers a model file may hold. The deepest published CNNs have about a thousand
#: (ResNet-1202); ten times that is far beyond any real model, yet small enough that a
#: hostile file's architecture is cheap to refuse. Sequential itself takes any number.
MAX_FILE_LAYERS = 10_000


#: Layer classes by name: the only classes a model file may name.
LAYER_REGISTRY: dict[str, type[Layer]] = {cls.__name__: cls for cls in LAYER_CLASSES}


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


# ---------------------------------------------------------------------------------------
# The architecture of a graph model (fastcnn.Model)

#: The ``"kind"`` of a graph architecture.
GRAPH_KIND = "fastcnn.Model"
#: Most layer calls (nodes) a graph model file may hold: a layer may be called often.
MAX_FILE_NODES = 4 * MAX_FILE_LAYERS
#: Most axes of an input sample in a model file.
_MAX_INPUT_AXES = 8


def graph_config(model: Model) -> dict[str, Any]:
    """Return the architecture of a graph ``model`` as JSON-able data.

    ``layers`` holds each layer once (a Sequential as ``{"class": "Sequential", "config":
    <its architecture>}``); ``inputs`` the input names and shapes; ``nodes`` each call,
    in the order they run, as the index of its layer, the indices of its input nodes
    (the inputs first, then the calls) and whether the layer took a list; ``outputs``
    the output nodes' indices.
    """
    from fastcnn.model import Sequential  # not at the top: fastcnn.model imports us

    layers: list[dict[str, Any]] = []
    for i, unit in enumerate(model.layers):
        if isinstance(unit, Sequential):
            layers.append({"class": "Sequential", "config": model_config(unit)})
            continue
        name = type(unit).__name__
        if LAYER_REGISTRY.get(name) is not type(unit):
            raise ValueError(
                f"layer {i} ({unit!r}) is not a registered layer class; register it "
                "with fastcnn.layers.register_layer to save it"
            )
        layers.append({"class": name, "config": unit.get_config()})
    index = {id(node): i for i, node in enumerate([*model.inputs, *model._steps])}
    unit_index = {id(unit): i for i, unit in enumerate(model.layers)}
    return {
        "kind": GRAPH_KIND,
        "layers": layers,
        "inputs": [{"name": n.given_name, "shape": list(n.shape)} for n in model.inputs],
        "nodes": [
            {
                "layer": unit_index[id(n.layer)],
                "inputs": [index[id(p)] for p in n.inputs],
                "list": n.multi,
            }
            for n in model._steps
        ],  # fmt: skip
        "outputs": [index[id(n)] for n in model.outputs],
        "list_inputs": model._many_inputs,
        "list_outputs": model._many_outputs,
    }


def _index(value: object, limit: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise ValueError(f"{what} must be an int in [0, {limit}), got {str(value)[:50]}")
    return value


def _graph_layers(specs: object) -> list[Any]:
    from fastcnn.model import Sequential

    if not isinstance(specs, list):
        raise ValueError("architecture has no 'layers' list")
    nested = sum(
        len(s["config"].get("layers", ()))
        for s in specs
        if isinstance(s, dict)
        and s.get("class") == "Sequential"
        and isinstance(s.get("config"), dict)
    )
    if len(specs) + nested > MAX_FILE_LAYERS:
        raise ValueError(
            f"the architecture has {len(specs) + nested:,} layers; a model file may hold "
            f"at most {MAX_FILE_LAYERS:,}"
        )
    units: list[Any] = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or set(spec) != {"class", "config"}:
            raise ValueError(f"layer {i}: expected {{'class': ..., 'config': ...}}, got {spec!r}")
        try:
            if spec["class"] == "Sequential":
                units.append(Sequential(layers_from_config(spec["config"])))
            else:
                units.append(layer_from_config(spec["class"], spec["config"]))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"layer {i} ({spec['class']!r}): {exc}") from None
    return units


def graph_from_config(config: dict[str, Any]) -> Model:
    """Build the graph model (freshly initialized) of a :func:`graph_config` architecture."""
    from fastcnn.graph import Input, Model, call

    if not isinstance(config, dict) or config.get("kind") != GRAPH_KIND:
        raise ValueError(f"not a {GRAPH_KIND} architecture: {str(config)[:200]}")
    units = _graph_layers(config.get("layers"))
    inputs, specs = config.get("inputs"), config.get("nodes")
    if not isinstance(inputs, list) or not isinstance(specs, list) or not inputs:
        raise ValueError("a graph architecture needs 'inputs' and 'nodes' lists")
    if len(inputs) + len(specs) > MAX_FILE_NODES:
        raise ValueError(f"the architecture has more than {MAX_FILE_NODES:,} nodes")
    nodes = []
    for i, spec in enumerate(inputs):
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not isinstance(shape, list) or len(shape) > _MAX_INPUT_AXES:
            raise ValueError(f"input {i}: expected {{'name': ..., 'shape': [...]}}, got {spec!r}")
        nodes.append(Input(tuple(shape), name=spec.get("name")))
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or set(spec) != {"layer", "inputs", "list"}:
            raise ValueError(f"node {i}: expected {{'layer', 'inputs', 'list'}}, got {spec!r}")
        unit = units[_index(spec["layer"], len(units), f"node {i}'s layer")]
        parents = spec["inputs"]
        if not isinstance(parents, list) or not parents or len(parents) > len(nodes):
            raise ValueError(f"node {i}: malformed inputs {str(parents)[:100]}")
        # Only earlier nodes: a file cannot describe a cycle.
        args = [nodes[_index(p, len(nodes), f"node {i}'s input")] for p in parents]
        nodes.append(call(unit, args if spec["list"] is True else args[0]))
    outputs = config.get("outputs")
    if not isinstance(outputs, list) or not outputs:
        raise ValueError("a graph architecture needs an 'outputs' list")
    outs = [nodes[_index(o, len(nodes), "an output")] for o in outputs]
    many_in, many_out = config.get("list_inputs") is True, config.get("list_outputs") is True
    return Model(
        nodes[: len(inputs)] if many_in else nodes[0],
        outs if many_out else outs[0],
    )
