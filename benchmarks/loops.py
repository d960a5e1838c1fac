"""Textbook loops: the ``loops`` column of the benchmark suite.

One Python iteration per output pixel, as beginners (and course notes) write them.
Window sums are numpy calls; everything else is a plain loop. The suite times them on one
sample and scales the time linearly to the case's batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def conv2d(x, w, b, stride=(1, 1), pad=(0, 0)):
    """Convolution forward: one window sum per output pixel."""
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    h_out = (h + 2 * pad[0] - kh) // stride[0] + 1
    w_out = (wd + 2 * pad[1] - kw) // stride[1] + 1
    y = np.empty((n, c_out, h_out, w_out), dtype=x.dtype)
    for i in range(n):
        for f in range(c_out):
            for r in range(h_out):
                for c in range(w_out):
                    r0, c0 = r * stride[0], c * stride[1]
                    window = xp[i, :, r0 : r0 + kh, c0 : c0 + kw]
                    y[i, f, r, c] = np.sum(window * w[f]) + (0 if b is None else b[f])
    return y


def conv2d_backward(gy, x, w, stride=(1, 1), pad=(0, 0), needs_input_grad=True):
    """Gradients of the input, the weight and the bias, pixel by pixel."""
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    gb = np.zeros(c_out, dtype=w.dtype)
    for i in range(n):
        for f in range(c_out):
            for r in range(gy.shape[2]):
                for c in range(gy.shape[3]):
                    g = gy[i, f, r, c]
                    r0, c0 = r * stride[0], c * stride[1]
                    gw[f] += g * xp[i, :, r0 : r0 + kh, c0 : c0 + kw]
                    if needs_input_grad:
                        gxp[i, :, r0 : r0 + kh, c0 : c0 + kw] += g * w[f]
                    gb[f] += g
    gx = gxp[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + wd].copy() if needs_input_grad else None
    return gx, gw, gb


def max_pool2d(x, k=(2, 2), s=(2, 2)):
    """Max pooling and the flat index of each window's maximum."""
    n, ch, h, wd = x.shape
    h_out, w_out = (h - k[0]) // s[0] + 1, (wd - k[1]) // s[1] + 1
    y = np.empty((n, ch, h_out, w_out), dtype=x.dtype)
    idx = np.empty((n, ch, h_out, w_out), dtype=np.int64)
    for i in range(n):
        for c in range(ch):
            for r in range(h_out):
                for q in range(w_out):
                    r0, q0 = r * s[0], q * s[1]
                    window = x[i, c, r0 : r0 + k[0], q0 : q0 + k[1]]
                    j = int(np.argmax(window))
                    y[i, c, r, q] = window.flat[j]
                    idx[i, c, r, q] = (r0 + j // k[1]) * wd + q0 + j % k[1]
    return y, idx


def max_pool2d_backward(gy, idx, shape):
    """Each output gradient added at its window's maximum."""
    gx = np.zeros(shape, dtype=gy.dtype)
    wd = shape[3]
    for i in range(gy.shape[0]):
        for c in range(gy.shape[1]):
            for r in range(gy.shape[2]):
                for q in range(gy.shape[3]):
                    j = idx[i, c, r, q]
                    gx[i, c, j // wd, j % wd] += gy[i, c, r, q]
    return gx


def avg_pool2d(x, k=(2, 2), s=(2, 2)):
    """Average pooling, window by window."""
    n, ch, h, wd = x.shape
    h_out, w_out = (h - k[0]) // s[0] + 1, (wd - k[1]) // s[1] + 1
    y = np.empty((n, ch, h_out, w_out), dtype=x.dtype)
    for i in range(n):
        for c in range(ch):
            for r in range(h_out):
                for q in range(w_out):
                    r0, q0 = r * s[0], q * s[1]
                    y[i, c, r, q] = np.mean(x[i, c, r0 : r0 + k[0], q0 : q0 + k[1]])
    return y


def avg_pool2d_backward(gy, shape, k=(2, 2), s=(2, 2)):
    """Each output gradient spread evenly over its window."""
    gx = np.zeros(shape, dtype=gy.dtype)
    area = k[0] * k[1]
    for i in range(gy.shape[0]):
        for c in range(gy.shape[1]):
            for r in range(gy.shape[2]):
                for q in range(gy.shape[3]):
                    r0, q0 = r * s[0], q * s[1]
                    gx[i, c, r0 : r0 + k[0], q0 : q0 + k[1]] += gy[i, c, r, q] / area
    return gx


# ---------------------------------------------------------------------------------------
# A whole network


class LoopsNet:
    """The same network as a beginner writes it: loops per output pixel, numpy for dense."""

    def __init__(self, model) -> None:
        self.layers: list[tuple[Any, ...]] = []
        for layer in model.layers:
            kind = type(layer).__name__
            params = {name: value.copy() for name, value in layer.params.items()}
            if kind == "Conv2D":
                if layer.groups != 1 or layer.dilation != (1, 1) or isinstance(layer.padding, str):
                    raise NotImplementedError(f"textbook loops support plain convs, not {layer!r}")
            elif kind in ("AvgPool2D", "MaxPool2D"):
                if layer.padding != (0, 0) or layer.ceil_mode:
                    raise NotImplementedError(f"textbook loops support plain pools, not {layer!r}")
            elif kind not in ("Dense", "Tanh", "ReLU", "Flatten"):
                raise NotImplementedError(f"no textbook-loops version of {layer!r}")
            self.layers.append((kind, layer, params, {}))

    def forward(self, x: np.ndarray) -> np.ndarray:
        for kind, layer, p, cache in self.layers:
            cache["x"] = x
            if kind == "Conv2D":
                x = conv2d(x, p["weight"], p.get("bias"), layer.stride, layer.padding)
            elif kind == "MaxPool2D":
                x, cache["idx"] = max_pool2d(x, layer.kernel_size, layer.stride)
            elif kind == "AvgPool2D":
                x = avg_pool2d(x, layer.kernel_size, layer.stride)
            elif kind == "Tanh":
                x = np.tanh(x)
            elif kind == "ReLU":
                x = np.maximum(x, 0)
            elif kind == "Flatten":
                x = x.reshape(x.shape[0], -1)
            else:  # Dense
                x = x @ p["weight"].T + (p["bias"] if "bias" in p else 0)
            cache["y"] = x
        return x

    def backward(self, g: np.ndarray) -> dict[int, dict[str, np.ndarray]]:
        grads = {}
        for i in range(len(self.layers) - 1, -1, -1):
            kind, layer, p, cache = self.layers[i]
            x = cache["x"]
            if kind == "Conv2D":
                g, gw, gb = conv2d_backward(
                    g, x, p["weight"], layer.stride, layer.padding, needs_input_grad=i > 0
                )
                grads[i] = {"weight": gw, "bias": gb}
            elif kind == "MaxPool2D":
                g = max_pool2d_backward(g, cache["idx"], x.shape)
            elif kind == "AvgPool2D":
                g = avg_pool2d_backward(g, x.shape, layer.kernel_size, layer.stride)
            elif kind == "Tanh":
                g = g * (1 - cache["y"] ** 2)
            elif kind == "ReLU":
                g = g * (x > 0)
            elif kind == "Flatten":
                g = g.reshape(x.shape)
            else:
                grads[i] = {"weight": g.T @ x, "bias": g.sum(axis=0)}
                g = g @ p["weight"]
        return grads

    def train_step(
        self, x: np.ndarray, y: np.ndarray, lr: float
    ) -> tuple[float, dict[int, dict[str, np.ndarray]]]:
        logits = self.forward(x)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        rows = np.arange(len(y))
        loss = float(-np.mean(np.log(p[rows, y])))
        p[rows, y] -= 1
        grads = self.backward(p / len(y))
        for i, layer_grads in grads.items():
            for name, g in layer_grads.items():
                if name in self.layers[i][2]:
                    self.layers[i][2][name] -= lr * g
        return loss, grads
