"""Graph models: ``Input``, the symbolic ``Node`` a layer call records, and ``Model``.

Calling a layer on a node (or a list of nodes) does no arithmetic: it checks the shapes
and returns a new :class:`Node` that remembers the layer and its inputs.
``Model(inputs, outputs)`` walks those records back from the outputs once, checks the
graph (cycles, unused inputs, outputs that depend on other inputs, one dtype) and keeps
the calls in a topological order; ``forward`` runs them in that order and ``backward``
in reverse, summing the gradients of a node used twice. A layer called twice is one
layer whose weights both calls share: its gradients are the sum over its calls.

Any model (a :class:`fastcnn.Sequential` as well) may be called on nodes as a layer.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from fastcnn import saving
from fastcnn.layers import Layer
from fastcnn.model import BaseModel, Sequential

__all__ = ["Input", "Model", "Node"]

Shape = tuple[int, ...]
Unit = Layer | Sequential  # what a node of a Model may call

_serials = itertools.count()


class Node:
    """A symbolic batch in a graph: an :func:`fastcnn.Input`, or the output of a layer call.

    Attributes
    ----------
    shape : tuple of int
        The shape of one sample (no batch axis).
    layer : Layer, Sequential or None
        The layer whose call made the node; None for an input.
    inputs : tuple of Node
        The nodes the layer was called on.
    name : str
        The input's name, or the layer's class name.
    """

    def __init__(
        self, shape: Shape, layer: Unit | None, inputs: Sequence[Node], multi: bool, name: str
    ) -> None:
        self.shape = shape
        self.layer = layer
        self.inputs = tuple(inputs)
        self.multi = multi  # the layer was called on a list of nodes
        self.name = name
        self.serial = next(_serials)  # creation order: the order layers were called
        self.given_name: str | None = None

    def __repr__(self) -> str:
        made = "Input" if self.layer is None else repr(self.layer)
        return f"<Node {self.name!r} of shape {self.shape} from {made}>"


def Input(shape: Sequence[int], name: str | None = None) -> Node:  # noqa: N802 (Keras's name)
    """Return the node of a model input with samples of ``shape`` (no batch axis).

    Parameters
    ----------
    shape : tuple of int
        One sample's shape, e.g. ``(3, 32, 32)`` for RGB images or ``(20,)`` features.
    name : str, optional
        Shown in :meth:`Model.summary` and in error messages.

    Examples
    --------
    >>> import fastcnn
    >>> from fastcnn import layers as L
    >>> inp = fastcnn.Input((1, 8, 8))
    >>> h = L.ReLU()(L.Conv2D(1, 4, 3, padding=1)(inp))
    >>> out = L.Dense(4 * 8 * 8, 10)(L.Flatten()(L.Add()([h, h])))
    >>> fastcnn.Model(inp, out).output_shape((1, 8, 8))
    (10,)
    """
    if isinstance(shape, int | np.integer) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}")
    dims = tuple(shape)
    if not dims or not all(
        isinstance(d, int | np.integer) and not isinstance(d, bool) and d >= 1 for d in dims
    ):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str, got {name!r}")
    node = Node(tuple(int(d) for d in dims), None, (), False, name or "input")
    node.given_name = name  # what a model file keeps: None unless the user named it
    return node


def is_symbolic(x: object) -> bool:
    """Return whether ``x`` is a node, or a non-empty list or tuple holding one."""
    if isinstance(x, Node):
        return True
    return isinstance(x, list | tuple) and any(isinstance(item, Node) for item in x)


def call(layer: Layer | BaseModel, x: Any) -> Node:
    """Record ``layer`` called on the node or list of nodes ``x``; return its output node.

    Raises ValueError, naming the layer and its inputs, when the layer cannot take their
    shapes (inputs of different shapes at an ``Add``).
    """
    multi = isinstance(x, list | tuple)
    items: list[Any] = list(x) if multi else [x]
    if not all(isinstance(item, Node) for item in items):
        raise TypeError(
            f"{layer!r} was called on a list that mixes graph nodes with other values: "
            f"{[type(item).__name__ for item in items]}"
        )
    nodes = cast(list[Node], items)
    shapes: Any = [node.shape for node in nodes] if multi else nodes[0].shape
    try:
        shape = layer.output_shape(shapes)
    except (ValueError, TypeError) as exc:
        what = ", ".join(f"{node.name} {node.shape}" for node in nodes)
        raise ValueError(f"{layer!r} cannot be called on {what}: {exc}") from None
    if isinstance(shape, list):
        raise ValueError(f"{layer!r}: a layer of a graph must have one output")
    return Node(tuple(shape), cast(Unit, layer), nodes, multi, type(layer).__name__)


# ---------------------------------------------------------------------------------------
# Walking the graph


def _node_list(value: object, what: str) -> list[Node]:
    nodes: list[Any] = list(value) if isinstance(value, list | tuple) else [value]
    if not nodes:
        raise ValueError(f"{what} must hold at least one node")
    for node in nodes:
        if not isinstance(node, Node):
            raise TypeError(
                f"{what} must be graph nodes (from fastcnn.Input or a layer call), got "
                f"{type(node).__name__}"
            )
    if len({id(node) for node in nodes}) != len(nodes):
        raise ValueError(f"{what} name the same node twice: {nodes}")
    return nodes


def topological_order(outputs: list[Node]) -> list[Node]:
    """Return every node the ``outputs`` depend on, each after its inputs.

    An iterative depth-first walk (deep graphs do not reach the recursion limit).
    Raises ValueError naming the layers of a cycle.
    """
    state: dict[int, int] = {}  # id -> 1 on the current path, 2 done
    order: list[Node] = []
    for out in outputs:
        if id(out) in state:
            continue
        state[id(out)] = 1
        stack = [(out, iter(out.inputs))]
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                state[id(node)] = 2
                order.append(node)
                continue
            if not isinstance(child, Node):
                raise TypeError(f"{node!r} has an input that is not a node: {child!r}")
            seen = state.get(id(child))
            if seen == 1:
                path = [n for n, _ in stack]
                cycle = path[next(i for i, n in enumerate(path) if n is child) :]
                raise ValueError(
                    "the graph has a cycle: "
                    + " -> ".join(repr(n.layer) for n in reversed(cycle))
                    + f" -> {cycle[-1].layer!r}"
                )
            if seen is None:
                state[id(child)] = 1
                stack.append((child, iter(child.inputs)))
    return order


def _check_connected(inputs: list[Node], nodes: list[Node]) -> None:
    """Refuse inputs no output uses, and outputs that depend on other inputs."""
    reached = {id(node) for node in nodes}
    for inp in inputs:
        if inp.layer is not None:
            raise ValueError(
                f"inputs must be nodes made by fastcnn.Input; {inp.name!r} is the output of "
                f"{inp.layer!r}"
            )
        if id(inp) not in reached:
            raise ValueError(
                f"input {inp.name!r} of shape {inp.shape} is unused: no output depends on "
                "it; remove it from the inputs or connect it"
            )
    known = {id(inp) for inp in inputs}
    for node in nodes:
        for parent in node.inputs:
            if parent.layer is None and id(parent) not in known:
                raise ValueError(
                    f"the outputs are disconnected from the inputs: {node.layer!r} is "
                    f"called on {parent.name!r} of shape {parent.shape}, an Input that is "
                    "not among the model's inputs"
                )
    for node in nodes:
        if node.layer is None and id(node) not in known:  # an output that is an Input
            raise ValueError(f"output {node.name!r} is an Input not among the model's inputs")


def _unit_dtype(unit: Unit) -> np.dtype | None:
    layers = unit.layers if isinstance(unit, Sequential) else [unit]
    return next((layer.dtype for layer in layers if layer.dtype is not None), None)


def _unit_arrays(unit: Unit) -> dict[str, np.ndarray]:
    """Parameters and buffers of one layer or Sequential, by name within it."""
    if isinstance(unit, Sequential):
        return unit._state_arrays()
    return {**unit.params, **unit.buffers}


def _unit_grads(unit: Unit) -> list[np.ndarray]:
    if isinstance(unit, Sequential):
        return [grad for _, grad in unit.parameters()]
    return list(unit.grads.values())


# ---------------------------------------------------------------------------------------
# The model


class Model(BaseModel):
    """A graph of layers from its inputs to its outputs, trained by backpropagation.

    Parameters
    ----------
    inputs : Node or list of Node
        Nodes made by :func:`fastcnn.Input`.
    outputs : Node or list of Node
        Nodes made by calling layers on the inputs (or on nodes made from them).

    Attributes
    ----------
    layers : list of Layer or Sequential
        Each layer once, in the order it was first called when the graph was built.
    inputs, outputs : list of Node
    optimizer, history
        As for :class:`~fastcnn.Sequential`.

    Notes
    -----
    It has everything a :class:`~fastcnn.Sequential` has. With several inputs (or
    outputs), :meth:`forward` takes (returns) a list of arrays and :meth:`backward`
    takes (returns) a list of gradients; ``fit``, ``predict`` and ``evaluate`` need one
    input and one output. ``parameters()`` lists each layer's parameters once, in
    :attr:`layers` order, however many times the layer was called.

    Examples
    --------
    >>> import fastcnn
    >>> from fastcnn import layers as L
    >>> inp = fastcnn.Input((2, 8, 8))
    >>> h = L.Conv2D(2, 4, 3, padding=1, rng=0)(inp)
    >>> r = L.Conv2D(4, 4, 3, padding=1, rng=0)(L.ReLU()(h))
    >>> h = L.Concatenate(axis=1)([L.Add()([h, r]), inp])
    >>> model = fastcnn.Model(inp, L.Dense(6 * 8 * 8, 3, rng=0)(L.Flatten()(h)))
    >>> model.output_shape((2, 8, 8))
    (3,)
    """

    def __init__(self, inputs: Node | Sequence[Node], outputs: Node | Sequence[Node]) -> None:
        self._init_training_state()
        self._many_inputs = isinstance(inputs, list | tuple)
        self._many_outputs = isinstance(outputs, list | tuple)
        self.inputs = _node_list(inputs, "inputs")
        self.outputs = _node_list(outputs, "outputs")
        nodes = topological_order(self.outputs)
        _check_connected(self.inputs, nodes)
        self._steps = [node for node in nodes if node.layer is not None]
        calls: dict[int, list[Node]] = {}
        for node in sorted(self._steps, key=lambda n: n.serial):
            calls.setdefault(id(node.layer), []).append(node)
        self.layers: list[Unit] = [group[0].layer for group in calls.values()]  # type: ignore[misc]
        shared = {key for key, group in calls.items() if len(group) > 1}
        # By step, not by id(): a copy or an unpickled model has other ids.
        self._shared = [id(node.layer) in shared for node in self._steps]
        self._check_layers(shared)
        self._activations: dict[int, dict[str, Any]] = {}  # of each call of a shared layer

    def _check_layers(self, shared: set[int]) -> None:
        dtype = None
        for i, unit in enumerate(self.layers):
            if not isinstance(unit, Layer | Sequential):
                raise TypeError(f"layer {i} ({unit!r}) is neither a Layer nor a Sequential")
            if isinstance(unit, Sequential) and id(unit) in shared:
                raise ValueError(
                    f"layer {i} ({type(unit).__name__} of {len(unit)} layers) is called "
                    "more than once; a Sequential may be called once in a graph: call its "
                    "layers instead to share their weights"
                )
            unit_dtype = _unit_dtype(unit)
            if unit_dtype is not None:
                if dtype is not None and unit_dtype != dtype:
                    raise ValueError(
                        f"layer {i} ({unit!r}) has dtype {unit_dtype} but the model's other "
                        f"layers have dtype {dtype}; build every layer with the same dtype"
                    )
                dtype = unit_dtype
        self._dtype = np.dtype(np.float32) if dtype is None else dtype

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_activations"] = {}
        return state

    # -- containers and introspection ---------------------------------------------------

    @property
    def dtype(self) -> np.dtype:
        """Dtype of the parameters (float32 if no layer has parameters)."""
        return self._dtype

    def __repr__(self) -> str:
        lines = [f"  ({i}): {unit!r}".replace("\n", "\n  ") for i, unit in enumerate(self.layers)]
        return "Model(\n" + "\n".join(lines) + "\n)" if lines else "Model()"

    def parameters(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every learnable array with its gradient, as ``(param, grad)`` pairs.

        Layer by layer in :attr:`layers` order (the order of the first calls), each
        layer once; within a layer in the order of ``layer.params`` (weight before bias,
        gamma before beta). The same objects for the life of the model.
        """
        return [pair for _, *pair in self.named_parameters()]  # type: ignore[misc]

    def named_parameters(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """As :meth:`parameters`, with names ``"<layer index>.<param name>"``."""
        named = []
        for i, unit in enumerate(self.layers):
            if isinstance(unit, Sequential):
                named += [(f"{i}.{name}", p, g) for name, p, g in unit.named_parameters()]
            else:
                named += [(f"{i}.{name}", p, unit.grads[name]) for name, p in unit.params.items()]
        return named

    def _state_arrays(self) -> dict[str, np.ndarray]:
        return {
            f"{i}.{name}": array
            for i, unit in enumerate(self.layers)
            for name, array in _unit_arrays(unit).items()
        }

    def non_finite_state(self) -> tuple[str, str] | None:
        """Name the first array of the model's state that holds NaN or infinity.

        Returns ``("parameters" or "buffers", name)``, or None when all are finite.
        """
        params = {id(p) for p, _ in self.parameters()}
        for name, array in self._state_arrays().items():
            if not np.isfinite(array).all():
                return ("parameters" if id(array) in params else "buffers"), name
        return None

    def _shapes(self, input_shapes: list[Shape]) -> dict[int, Shape]:
        shapes = {id(inp): s for inp, s in zip(self.inputs, input_shapes, strict=True)}
        index = {id(unit): i for i, unit in enumerate(self.layers)}
        for node in self._steps:
            args = [shapes[id(n)] for n in node.inputs]
            try:
                arg: Any = args if node.multi else args[0]
                shapes[id(node)] = tuple(node.layer.output_shape(arg))  # type: ignore[union-attr]
            except ValueError as exc:
                raise ValueError(f"layer {index[id(node.layer)]}: {exc}") from None
        return shapes

    def layer_calls(self, input_shape: Any = None) -> list[tuple[Layer, Any, Shape]]:
        """Return each call, in the order they run: ``(layer, input shape, output shape)``.

        The input shape is a list of shapes where the layer took a list; a Sequential
        called in the graph gives the calls of its layers. ``input_shape`` (the
        model's, a list with several inputs) defaults to the inputs' own shapes.
        """
        given = [inp.shape for inp in self.inputs]
        if input_shape is not None:
            given = list(input_shape) if self._many_inputs else [input_shape]
        shapes = self._shapes([tuple(int(d) for d in s) for s in given])
        calls: list[tuple[Layer, Any, Shape]] = []
        for node in self._steps:
            args = [shapes[id(n)] for n in node.inputs]
            arg: Any = args if node.multi else args[0]
            if isinstance(node.layer, Sequential):
                calls += node.layer.layer_calls(arg)
            else:
                calls.append((node.layer, arg, shapes[id(node)]))  # type: ignore[arg-type]
        return calls

    def output_shape(self, input_shape: Any) -> Any:
        """Shape of one output sample for one input sample of shape ``input_shape``.

        With several inputs, a list of shapes; with several outputs, returns a list.
        """
        if self._many_inputs:
            if not isinstance(input_shape, list) or len(input_shape) != len(self.inputs):
                raise ValueError(
                    f"the model has {len(self.inputs)} inputs: give a list of "
                    f"{len(self.inputs)} shapes (fit, predict and evaluate need a model "
                    "of one input and one output; call forward with a list of arrays)"
                )
            given = [tuple(int(d) for d in s) for s in input_shape]
        else:
            given = [tuple(int(d) for d in input_shape)]
        shapes = self._shapes(given)
        outs = [shapes[id(out)] for out in self.outputs]
        return outs if self._many_outputs else outs[0]

    def summary(self, input_shape: Any = None) -> str:
        """Return a table of the calls: layer, inputs, output shape and parameter count.

        ``input_shape`` defaults to the shapes the inputs were made with.
        """
        given = [inp.shape for inp in self.inputs]
        if input_shape is not None:
            given = input_shape if self._many_inputs else [tuple(input_shape)]
        shapes = self._shapes([tuple(int(d) for d in s) for s in given])
        label = {id(inp): inp.given_name or f"input_{i}" for i, inp in enumerate(self.inputs)}
        index = {id(unit): i for i, unit in enumerate(self.layers)}
        rows = [("#", "Layer", "Inputs", "Output shape", "Params")]
        rows += [("", f"Input {label[id(i)]!r}", "", str(shapes[id(i)]), "0") for i in self.inputs]
        first_call: set[int] = set()
        for row, node in enumerate(self._steps):
            label[id(node)] = f"#{row}"
            unit = node.layer
            shared = id(unit) in first_call
            first_call.add(id(unit))
            params = f"shares layer {index[id(unit)]}" if shared else f"{unit.num_params:,}"  # type: ignore[union-attr]
            what = (
                f"Sequential of {len(unit)} layers" if isinstance(unit, Sequential) else repr(unit)
            )
            rows.append((f"#{row}", f"{index[id(unit)]}: {what}",
                         ", ".join(label[id(n)] for n in node.inputs),
                         str(shapes[id(node)]), params))  # fmt: skip
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        lines = ["  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)) for r in rows]
        rule = "-" * max(len(line) for line in lines)
        outs = ", ".join(label[id(o)] for o in self.outputs)
        return "\n".join(
            [f"Model: inputs {given}, outputs {outs}, dtype {self.dtype}", rule, lines[0],
             rule, *lines[1:], rule, f"Total params: {self.num_params:,}"]
        )  # fmt: skip

    # -- forward and backward -----------------------------------------------------------

    def _run(self, xs: list[np.ndarray], training: bool) -> list[np.ndarray]:
        values: dict[int, np.ndarray] = {
            id(inp): x for inp, x in zip(self.inputs, xs, strict=True)
        }
        self._activations.clear()
        for step, node in enumerate(self._steps):
            unit = node.layer
            args = [values[id(n)] for n in node.inputs]
            arg: Any = args if node.multi else args[0]
            # A Sequential's own forward would convert to its dtype: float32 for one
            # without parameters, inside a float64 graph.
            forward = unit._forward if isinstance(unit, Sequential) else unit.forward  # type: ignore[union-attr]
            values[id(node)] = forward(arg, training)
            if self._shared[step]:
                self._activations[step] = unit._saved_activations()  # type: ignore[union-attr]
        return [values[id(out)] for out in self.outputs]

    def _forward(self, x: Any, training: bool) -> Any:
        outs = self._run(list(x) if self._many_inputs else [x], training)
        return outs if self._many_outputs else outs[0]

    def forward(self, x: Any, training: bool = False) -> Any:
        """Output for a batch ``x`` (a list of batches with several inputs).

        Converted to the model dtype if needed. In training mode Dropout drops and
        BatchNorm uses (and updates) batch statistics. With several outputs, a list.
        """
        if self._many_inputs:
            if not isinstance(x, list | tuple) or len(x) != len(self.inputs):
                raise ValueError(f"the model has {len(self.inputs)} inputs: give a list of arrays")
            return self._forward([np.asarray(a, dtype=self.dtype) for a in x], training)
        return self._forward(np.asarray(x, dtype=self.dtype), training)

    def _backward_step(
        self, step: int, node: Node, grad: np.ndarray, needs: bool, retain: bool
    ) -> Any:
        unit = node.layer
        if isinstance(unit, Sequential):
            return unit.backward(grad, input_grad=needs, retain_activations=retain)
        assert unit is not None, "the steps are layer calls"
        if self._shared[step]:
            unit._restore_activations(self._activations[step])
        unit.needs_input_grad = needs
        try:
            result = unit.backward(grad)
        finally:
            unit.needs_input_grad = True
        if not retain:
            unit._release_activations()
        return result

    def _backward(self, grad: Any, input_grad: bool, retain_activations: bool = False) -> Any:
        grads_out = list(grad) if self._many_outputs else [grad]
        if len(grads_out) != len(self.outputs):
            raise ValueError(
                f"the model has {len(self.outputs)} outputs: give a gradient for each"
            )
        grads: dict[int, np.ndarray] = {}

        def give(node: Node, g: np.ndarray) -> None:  # a node used twice: sum
            held = grads.get(id(node))
            grads[id(node)] = g if held is None else held + g

        for out, g in zip(self.outputs, grads_out, strict=True):
            give(out, np.asarray(g, dtype=self.dtype))
        sums: dict[int, list[np.ndarray]] = {}  # gradients of the shared layers
        for step in range(len(self._steps) - 1, -1, -1):
            node = self._steps[step]
            needs = input_grad or any(n.layer is not None for n in node.inputs)
            result = self._backward_step(step, node, grads.pop(id(node)), needs,
                                         retain_activations)  # fmt: skip
            if self._shared[step]:
                held = sums.get(id(node.layer))
                if held is None:
                    sums[id(node.layer)] = [g.copy() for g in _unit_grads(node.layer)]  # type: ignore[arg-type]
                else:
                    for total, g in zip(held, _unit_grads(node.layer), strict=True):  # type: ignore[arg-type]
                        total += g
            if result is not None:
                for parent, g in zip(node.inputs, result if node.multi else [result], strict=True):
                    give(parent, g)
        for unit in self.layers:
            for target, total in zip(_unit_grads(unit), sums.get(id(unit), ()), strict=False):
                np.copyto(target, total)
        if not retain_activations:
            self._activations.clear()
        if not input_grad:
            return None
        results = [grads[id(inp)] for inp in self.inputs]
        return results if self._many_inputs else results[0]

    # -- architecture -------------------------------------------------------------------

    def get_config(self) -> dict[str, Any]:
        """Return the architecture as JSON-able data: layers, inputs, calls and outputs."""
        return saving.graph_config(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Model:
        """Build a model (freshly initialized) from :meth:`get_config` output."""
        return saving.graph_from_config(config)
