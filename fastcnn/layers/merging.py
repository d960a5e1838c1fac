"""Layers of graph models: ``Add`` and ``Concatenate`` join several inputs; ``Identity``.

A merging layer is called on a list of inputs: ``forward`` takes a list of arrays,
``backward`` returns a list of gradients (one per input) and ``output_shape`` takes a
list of per-sample shapes. In a :class:`fastcnn.Model` they are called on a list of
nodes, ``L.Add()([h, r])``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fastcnn import functional as F
from fastcnn._validation import check_concat_axis, concat_shape
from fastcnn.layers.base import Layer, Shape


class Merge(Layer):
    """Base class of the layers that take a list of two or more inputs."""

    def __init__(self) -> None:
        super().__init__()
        self._checked_shapes: list[Shape] | None = None

    def _check_inputs(self, xs: Any) -> list[np.ndarray]:
        if not isinstance(xs, list | tuple) or len(xs) < 2:
            raise TypeError(
                f"{self!r} expects a list of two or more arrays, got {type(xs).__name__}"
                + (f" of {len(xs)}" if isinstance(xs, list | tuple) else "")
            )
        for x in xs:
            if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
                raise TypeError(f"{self!r} expects float arrays, got {type(x).__name__}")
        shapes = [tuple(x.shape) for x in xs]
        if any(x.ndim < 1 for x in xs):
            raise ValueError(f"{self!r} expected batches of samples, got shapes {shapes}")
        if any(s[0] != shapes[0][0] for s in shapes):
            raise ValueError(f"{self!r}: the inputs have different batch sizes: {shapes}")
        if shapes != self._checked_shapes:
            self.output_shape([s[1:] for s in shapes])
            self._checked_shapes = shapes
        return list(xs)

    def output_shape(self, input_shape: Any) -> Shape:
        """Shape of one output sample for the list of input sample shapes ``input_shape``.

        Raises ValueError, naming this layer, when the layer cannot take those shapes.
        """
        if not isinstance(input_shape, list | tuple) or not all(
            isinstance(s, list | tuple) for s in input_shape
        ):
            raise ValueError(
                f"{self!r} takes a list of two or more inputs, got one of shape "
                f"{tuple(input_shape)}"
            )
        shapes = [tuple(int(d) for d in s) for s in input_shape]
        if len(shapes) < 2:
            raise ValueError(f"{self!r} takes a list of two or more inputs, got {len(shapes)}")
        return self._merged_shape(shapes)

    def _merged_shape(self, shapes: list[Shape]) -> Shape:
        raise NotImplementedError


class Add(Merge):
    """Element-wise sum of two or more inputs of one shape (a residual connection).

    Shapes
    ------
    - Inputs: a list of arrays of one shape :math:`(N, *)`
    - Output: :math:`(N, *)`, their sum

    Examples
    --------
    >>> import fastcnn
    >>> from fastcnn import layers as L
    >>> x = fastcnn.Input((4, 8, 8))
    >>> h = L.Add()([x, L.Conv2D(4, 4, 3, padding=1)(x)])
    >>> h.shape
    (4, 8, 8)
    """

    def forward(self, x: list[np.ndarray], training: bool = False) -> np.ndarray:  # type: ignore[override]
        """Return the sum of the list of arrays ``x``."""
        xs = self._check_inputs(x)
        self._cache["n"] = len(xs)
        return F.add(*xs)

    def backward(self, grad_out: np.ndarray) -> list[np.ndarray]:  # type: ignore[override]
        """Return the gradient of each input: ``grad_out`` itself, for every one."""
        return [grad_out] * self._saved("n")

    def _merged_shape(self, shapes: list[Shape]) -> Shape:
        if any(s != shapes[0] for s in shapes):
            raise ValueError(f"{self!r} needs inputs of one shape, got {shapes}")
        return shapes[0]


class Concatenate(Merge):
    r"""Join two or more inputs along an axis (by default the channels).

    Parameters
    ----------
    axis : int, default 1
        The axis of the batch arrays (so 1 is the channel axis of NCHW); negative
        counts from the end. The batch axis 0 cannot be joined.

    Shapes
    ------
    - Inputs: a list of arrays :math:`(N, C_i, H, W)` (``axis=1``)
    - Output: :math:`(N, \sum_i C_i, H, W)`
    """

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
            raise TypeError(f"axis must be an int, got {axis!r}")
        if axis == 0:
            raise ValueError("Concatenate cannot join along the batch axis 0")
        self.axis = int(axis)

    def forward(self, x: list[np.ndarray], training: bool = False) -> np.ndarray:  # type: ignore[override]
        """Return the list of arrays ``x`` joined along ``axis``."""
        xs = self._check_inputs(x)
        axis = check_concat_axis(self.axis, xs[0].ndim)
        self._cache["sizes"] = [a.shape[axis] for a in xs]
        return F.concatenate(xs, axis)

    def backward(self, grad_out: np.ndarray) -> list[np.ndarray]:  # type: ignore[override]
        """Return the gradient of each input: its slice of ``grad_out``."""
        return F.concatenate_backward(grad_out, self._saved("sizes"), self.axis)

    def _merged_shape(self, shapes: list[Shape]) -> Shape:
        ndim = len(shapes[0]) + 1  # with the batch axis
        if not -ndim < self.axis < ndim:
            raise ValueError(
                f"{self!r}: axis {self.axis} is out of range for inputs of shape (N, *{shapes[0]})"
            )
        axis = self.axis % ndim - 1  # in the per-sample shape
        try:
            return concat_shape(shapes, axis, repr(self))
        except ValueError as exc:
            raise ValueError(str(exc).replace(f"axis {axis}", f"axis {self.axis}")) from None

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {"axis": self.axis}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        return f"axis={self.axis}"


class Identity(Layer):
    """Return the input unchanged (a placeholder, or a named branch point of a graph).

    Shapes
    ------
    - Input: :math:`(N, *)`
    - Output: :math:`(N, *)`, the input itself
    """

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Return ``x``."""
        self._check_input(x)
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return ``grad_out``."""
        return grad_out
