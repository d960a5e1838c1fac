"""Data augmentation as layers: ``RandomCrop`` and ``RandomFlip``, random in training only.

Keras's preprocessing-layer convention: put them first in a model and every training batch
is augmented afresh, while ``predict`` and ``evaluate`` (eval mode) see the images as they
are. Each layer draws from its own generator (``rng``), which
:meth:`fastcnn.Sequential.fit` reseeds from ``random_state`` (the layers say so with
``reseeds = True``), so a seeded fit is reproducible. The whole batch is cropped or flipped
at once, by fancy indexing into a window view: no loop over the images. ``backward`` sends
the gradient back through the same windows and flips, so a layer before them (or the
input gradient) sees where each output pixel came from.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from fastcnn._validation import RngLike, check_rng
from fastcnn.layers.base import Layer, Shape


def _pair(value: object, name: str, low: int) -> tuple[int, int]:
    """Return ``value`` as a pair of ints of at least ``low`` (an int means both)."""
    items = tuple(value) if isinstance(value, tuple | list) else (value, value)
    if len(items) != 2 or not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= low
        for v in items
    ):
        raise ValueError(
            f"{name} must be an int or a pair of ints, each at least {low}, got {value!r}"
        )
    return int(items[0]), int(items[1])


class RandomCrop(Layer):
    """Pad the images, then crop a random ``size`` window from each, in training.

    As torchvision's ``RandomCrop(size, padding)``: zero ``padding`` pixels on every side,
    then a window of ``size`` at a position drawn for each image (uniform over every
    position that fits). In eval mode the window is the centre one, the identity when
    ``size`` is the input size (the usual use: ``RandomCrop(32, padding=4)`` on 32x32
    images shifts each training image by up to 4 pixels).

    Parameters
    ----------
    size : int or (int, int)
        Height and width of the output.
    padding : int or (int, int), default 0
        Zeros added above and below (first) and left and right (second) before cropping.
    rng : int, numpy.random.Generator or None
        Source of the window positions. :meth:`fastcnn.Sequential.fit` reseeds it from
        ``random_state`` when one is given.

    Shapes
    ------
    - Input: (N, C, H, W), with ``H + 2 * padding[0] >= size[0]`` and likewise for W.
    - Output: (N, C, size[0], size[1]).
    """

    #: fit(random_state=...) gives this layer a generator of its own.
    reseeds = True

    def __init__(self, size: int | tuple[int, int], padding: int | tuple[int, int] = 0, *,
                 rng: RngLike = None) -> None:  # fmt: skip
        super().__init__()
        self.size = _pair(size, "size", 1)
        self.padding = _pair(padding, "padding", 0)
        self.rng = check_rng(rng)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Crop a random window from each image in training, the centre one otherwise."""
        self._check_input(x)
        n, _, height, width = x.shape
        (ph, pw), (h, w) = self.padding, self.size
        free_h, free_w = height + 2 * ph - h, width + 2 * pw - w  # last window positions
        if training:
            top = self.rng.integers(0, free_h + 1, n)
            left = self.rng.integers(0, free_w + 1, n)
        else:
            top, left = np.full(n, free_h // 2), np.full(n, free_w // 2)
            if (free_h // 2, free_w // 2, h, w) == (ph, pw, height, width):
                self._cache["window"] = None  # the centre window is the input itself
                return x
        self._cache["window"] = (top, left, x.shape)
        padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        windows = sliding_window_view(padded, (h, w), axis=(2, 3))
        # (N, C, positions_h, positions_w, h, w) indexed by (image, position): (N, C, h, w)
        return np.ascontiguousarray(windows[np.arange(n), :, top, left])

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Return the input gradient: ``grad_out`` put back where each window came from."""
        window = self._saved("window")
        if window is None:
            return grad_out
        if not self.needs_input_grad:  # the first layer: nobody uses its input gradient
            return None
        top, left, shape = window
        (ph, pw), (h, w) = self.padding, self.size
        n, c, height, width = shape
        grad = np.zeros((n, c, height + 2 * ph, width + 2 * pw), dtype=grad_out.dtype)
        # Each image's window lies in that image alone, so the writes never overlap.
        windows = sliding_window_view(grad, (h, w), axis=(2, 3), writeable=True)
        windows[np.arange(n), :, top, left] = grad_out
        return np.ascontiguousarray(grad[:, :, ph : ph + height, pw : pw + width])

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        (ph, pw), (h, w) = self.padding, self.size
        if len(shape) != 3:
            raise self._shape_error("(C, H, W)", received, batched)
        if shape[1] + 2 * ph < h or shape[2] + 2 * pw < w:
            raise ValueError(
                f"{self!r} crops {h}x{w} windows, larger than the padded input "
                f"{shape[1] + 2 * ph}x{shape[2] + 2 * pw} (input {tuple(received)})"
            )
        return (shape[0], h, w)

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {"size": list(self.size), "padding": list(self.padding)}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        return f"size={self.size}, padding={self.padding}"


_FLIP_AXES = {"horizontal": (3,), "vertical": (2,), "horizontal_and_vertical": (3, 2)}


class RandomFlip(Layer):
    """Flip each image left-right and/or upside down with probability 1/2, in training.

    Each image, and each axis of ``mode``, gets its own coin. In eval mode, the identity.

    Parameters
    ----------
    mode : {'horizontal', 'vertical', 'horizontal_and_vertical'}, default 'horizontal'
        'horizontal' mirrors left-right (reverses W), 'vertical' upside down (reverses H),
        the third either or both, independently.
    rng : int, numpy.random.Generator or None
        Source of the coins. :meth:`fastcnn.Sequential.fit` reseeds it from
        ``random_state`` when one is given.

    Shapes
    ------
    - Input: (N, C, H, W).
    - Output: (N, C, H, W), the same.
    """

    #: fit(random_state=...) gives this layer a generator of its own.
    reseeds = True

    def __init__(self, mode: str = "horizontal", *, rng: RngLike = None) -> None:
        super().__init__()
        if mode not in _FLIP_AXES:
            raise ValueError(f"mode must be one of {sorted(_FLIP_AXES)}, got {mode!r}")
        self.mode = mode
        self.rng = check_rng(rng)

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Flip a random half of the images along each axis of ``mode`` in training."""
        self._check_input(x)
        if not training:
            self._cache["flips"] = None
            return x
        flips = [(axis, np.asarray(self.rng.random(x.shape[0]) < 0.5))
                 for axis in _FLIP_AXES[self.mode]]  # fmt: skip
        self._cache["flips"] = flips
        return self._flip(x, flips)

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Return the input gradient: ``grad_out`` flipped back (a flip is its own inverse)."""
        flips = self._saved("flips")
        if flips is None:
            return grad_out
        if not self.needs_input_grad:  # the first layer: nobody uses its input gradient
            return None
        return self._flip(grad_out, flips[::-1])

    @staticmethod
    def _flip(x: np.ndarray, flips: list[tuple[int, np.ndarray]]) -> np.ndarray:
        out: np.ndarray = x.copy()
        for axis, chosen in flips:
            out[chosen] = np.flip(out[chosen], axis=axis)
        return out

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) != 3:
            raise self._shape_error("(C, H, W)", received, batched)
        return shape

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {"mode": self.mode}

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        return f"mode={self.mode!r}"
