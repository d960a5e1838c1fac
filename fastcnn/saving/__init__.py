"""Saving and loading models: the layer registry, the model file, checkpoints.

One module per job:

* ``fastcnn.saving.registry``: the layer classes a model file may name
  (:data:`LAYER_REGISTRY`, :func:`register_layer`) and the architecture as JSON-able data;
* ``fastcnn.saving.npz``: the model file, an ``.npz`` archive of plain arrays
  (:data:`FORMAT_VERSION`), written atomically by :func:`save_model` and read, checked
  against its architecture before any array data, by :func:`load_model`;
* ``fastcnn.saving.checkpoints``: ``fit`` checkpoints, a model file plus the training
  state that resuming needs.

:meth:`fastcnn.Sequential.save` is :func:`save_model` and :func:`fastcnn.load` is
:func:`load_model`. Opening a model file never executes code from it: arrays are read
with ``allow_pickle=False`` and layers are rebuilt only from registered classes.
"""

from __future__ import annotations

# The names imported `as` themselves are for fastcnn.model (get_config, from_config,
# fit's checkpoints), not for users.
from fastcnn.saving.checkpoints import resume as resume
from fastcnn.saving.checkpoints import save_checkpoint as save_checkpoint
from fastcnn.saving.npz import FORMAT_VERSION, load_model, save_model
from fastcnn.saving.registry import LAYER_REGISTRY, layer_from_config, register_layer
from fastcnn.saving.registry import graph_config as graph_config
from fastcnn.saving.registry import graph_from_config as graph_from_config
from fastcnn.saving.registry import layers_from_config as layers_from_config
from fastcnn.saving.registry import model_config as model_config

__all__ = [
    "FORMAT_VERSION",
    "LAYER_REGISTRY",
    "layer_from_config",
    "load_model",
    "register_layer",
    "save_model",
]
