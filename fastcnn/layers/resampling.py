"""``Upsample2D``: resize NCHW feature maps (nearest or bilinear)."""

from __future__ import annotations

from typing import Any

import numpy as np

import fastcnn.functional as F
from fastcnn._validation import check_interpolate, check_interpolate_mode, check_scale_factor, pair
from fastcnn.functional.resample import ScaleFactor
from fastcnn.layers.base import Layer, Shape


class Upsample2D(Layer):
    """Resize feature maps by a scale factor or to a size (PyTorch's ``nn.Upsample``).

    Parameters
    ----------
    scale_factor : float or (float, float), default 2
        ``H_out = floor(H * scale_factor[0])``, W alike. Ignored (must be left out or
        None) when ``size`` is given.
    mode : {'nearest', 'bilinear'}, default 'nearest'
    size : int, (int, int) or None, default None
        A fixed output size (H_out, W_out) instead of a scale factor.
    align_corners : bool, default False
        Bilinear only, as :func:`fastcnn.functional.interpolate`.

    Shapes
    ------
    Input (N, C, H, W), output (N, C, H_out, W_out), ``H_out`` = ``size[0]`` or
    ``floor(H * scale_factor[0])``, and the same for ``W_out``.
    """

    def __init__(
        self,
        scale_factor: ScaleFactor | None = None,
        mode: str = "nearest",
        size: int | tuple[int, int] | None = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        if size is not None and scale_factor is not None:
            raise ValueError("Upsample2D: give either size or scale_factor, not both")
        self.size = None if size is None else pair(size, "size", 1)
        self.scale_factor = (
            None
            if size is not None
            else check_scale_factor(2.0 if scale_factor is None else scale_factor, "Upsample2D")
        )
        _, self.align_corners = check_interpolate_mode(mode, align_corners, "Upsample2D")
        self.mode = mode

    def _args(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "scale_factor": self.scale_factor,
            "mode": self.mode,
            "align_corners": self.align_corners,
        }

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Compute the output for the batch ``x``."""
        self._check_input(x)
        self._cache["input_shape"] = x.shape
        return F.interpolate(x, **self._args())

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Return the gradient with respect to the input."""
        return F.interpolate_backward(grad_out, self._saved("input_shape"), **self._args())

    def _output_shape(self, shape: Shape, received: Shape, batched: bool) -> Shape:
        if len(shape) != 3:
            raise self._shape_error("(C, H, W)", received, batched)
        try:
            args = check_interpolate((1, *shape), **self._args(), name="Upsample2D")
        except ValueError as exc:
            raise ValueError(f"{self!r}: {exc}; got input {tuple(received)}") from None
        return args.out_shape[1:]

    def get_config(self) -> dict[str, Any]:
        """Return the constructor arguments as JSON-able values."""
        return {
            "scale_factor": None if self.scale_factor is None else list(self.scale_factor),
            "mode": self.mode,
            "size": None if self.size is None else list(self.size),
            "align_corners": self.align_corners,
        }

    def extra_repr(self) -> str:
        """Return the arguments shown inside ``repr(layer)``."""
        what = (
            f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        )
        text = f"{what}, mode={self.mode!r}"
        if self.align_corners:
            text += ", align_corners=True"
        return text
