"""fastcnn: convolutional neural networks, fast on the CPU.

Compiled Cython kernels (conv2d and pooling, forward and backward) behind one stateless op
API, :mod:`fastcnn.functional`, with a pure-numpy reference backend as oracle and fallback;
layers, a ``Sequential`` model, optimizers and a scikit-learn estimator on top.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from fastcnn import functional
from fastcnn._backend import (
    FastCNNWarning,
    available_backends,
    backend_import_error,
    get_backend,
    set_backend,
    use_backend,
)
from fastcnn._info import show_config
from fastcnn._threads import get_num_threads, set_num_threads

try:
    __version__ = version("fastcnn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# Heavier parts (scikit-learn, the model stack) load on first use so `import fastcnn` is fast.
_LAZY = {
    "Sequential": ("fastcnn.model", "Sequential"),
    "Input": ("fastcnn.graph", "Input"),
    "Model": ("fastcnn.graph", "Model"),
    "graph": ("fastcnn.graph", None),
    "History": ("fastcnn.callbacks", "History"),
    "load": ("fastcnn.model", "load"),
    "CNNClassifier": ("fastcnn.estimator", "CNNClassifier"),
    "callbacks": ("fastcnn.callbacks", None),
    "layers": ("fastcnn.layers", None),
    "losses": ("fastcnn.losses", None),
    "optim": ("fastcnn.optim", None),
    "models": ("fastcnn.models", None),
    "datasets": ("fastcnn.datasets", None),
    "estimator": ("fastcnn.estimator", None),
    "plotting": ("fastcnn.plotting", None),
    "saving": ("fastcnn.saving", None),
    "empty_cache": ("fastcnn._buffers", "empty_cache"),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'fastcnn' has no attribute {name!r}") from None
    module = import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "CNNClassifier",
    "FastCNNWarning",
    "History",
    "Input",
    "Model",
    "Sequential",
    "__version__",
    "available_backends",
    "backend_import_error",
    "callbacks",
    "datasets",
    "empty_cache",
    "functional",
    "get_backend",
    "get_num_threads",
    "graph",
    "layers",
    "load",
    "losses",
    "models",
    "optim",
    "plotting",
    "set_backend",
    "set_num_threads",
    "show_config",
    "use_backend",
]
