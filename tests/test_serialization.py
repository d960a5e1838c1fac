"""Model files written by an earlier fastcnn still load, give the same model, and resume.

``tests/data`` holds golden files written once by ``tests/data/make_golden.py`` (its
docstring says when and how): a float32 model with one layer of every built-in class, a
float64 model, and a ``fit`` checkpoint. What the file determines (the architecture, every
weight and statistic, the bytes a re-save writes) is compared bit for bit. Outputs are
compared with a tolerance a few ulps wide: the compiled kernels pick AVX-512, AVX2 or
baseline loops at run time and BLAS picks its own, so the order of summation, hence the
last bits, depend on the CPU, not on the file. A wrong, missing or misplaced array moves
the outputs by orders of magnitude more.
"""

import importlib.util
import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from conftest import tol
from numpy.testing import assert_allclose, assert_array_equal

import fastcnn
import fastcnn.layers
from fastcnn import saving
from fastcnn.layers import BatchNorm2D, Conv2D, Dense, Flatten, ReLU
from fastcnn.model import FORMAT_VERSION, Sequential

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
MODELS = {"f32": "golden_model_f32.npz", "f64": "golden_model_f64.npz"}
CHECKPOINT = os.path.join(DATA, "golden_checkpoint.npz")
# A few ulps of outputs of order one: see the module docstring.
OUTPUT_TOL = {"f32": {"rtol": 1e-5, "atol": 1e-6}, "f64": {"rtol": 1e-12, "atol": 1e-13}}


def _make_golden():
    spec = importlib.util.spec_from_file_location(
        "make_golden", os.path.join(DATA, "make_golden.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def expected():
    with np.load(os.path.join(DATA, "golden_expected.npz"), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _raw_arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _entry_bytes(path):
    """Each zip entry's uncompressed content, in archive order (no dates, no offsets)."""
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _assert_state_is(model: Sequential, arrays: dict) -> None:
    state = model.state_dict()
    assert sorted(state) == sorted(k for k in arrays if not k.startswith("__"))
    for key, array in state.items():
        assert array.dtype == arrays[key].dtype, key
        assert_array_equal(array, arrays[key], err_msg=key, strict=True)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_golden_model_loads_its_architecture_and_weights_bit_for_bit(name):
    path = os.path.join(DATA, MODELS[name])
    raw = _raw_arrays(path)
    assert int(raw["__fastcnn_format__"]) == FORMAT_VERSION == 1
    model = fastcnn.load(path)
    assert model.get_config() == json.loads(str(raw["__architecture__"]))
    _assert_state_is(model, raw)
    assert model.dtype == np.dtype(np.float32 if name == "f32" else np.float64)


# The layer classes of the golden files' time: each must still load. Classes registered
# since are saved and loaded by their own modules' tests (tests/test_graph.py: Add,
# Concatenate, Identity and the graph form).
GOLDEN_LAYER_CLASSES = {
    "AvgPool2D", "BatchNorm2D", "Conv2D", "Dense", "Dropout", "Flatten", "LeakyReLU",
    "MaxPool2D", "ReLU", "Sigmoid", "Tanh",
}  # fmt: skip


def test_golden_f32_model_holds_every_layer_class_of_its_time():
    model = fastcnn.load(os.path.join(DATA, MODELS["f32"]))
    assert {type(layer).__name__ for layer in model} == GOLDEN_LAYER_CLASSES
    assert GOLDEN_LAYER_CLASSES <= set(fastcnn.layers.LAYER_REGISTRY)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_golden_model_gives_the_stored_outputs(name, backend, expected):
    model = fastcnn.load(os.path.join(DATA, MODELS[name]))
    out = model.forward(expected[f"x_{name}"])
    reference = expected[f"out_{name}_{backend}"]
    assert out.dtype == reference.dtype
    assert_allclose(out, reference, **OUTPUT_TOL[name])
    assert_allclose(model.predict_proba(expected[f"x_{name}"]).sum(axis=1), 1.0, **tol(out.dtype))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_resaving_a_golden_model_writes_the_same_entries_byte_for_byte(name, tmp_path):
    path = os.path.join(DATA, MODELS[name])
    fastcnn.load(path).save(tmp_path / "again.npz")
    assert _entry_bytes(tmp_path / "again.npz") == _entry_bytes(path)


def test_golden_checkpoint_loads_as_a_model(tmp_path):
    raw = _raw_arrays(CHECKPOINT)
    model = fastcnn.load(CHECKPOINT)
    _assert_state_is(model, raw)
    model.save(tmp_path / "model.npz")
    held = [entry for entry in _entry_bytes(CHECKPOINT) if "__checkpoint__" not in entry[0]]
    assert _entry_bytes(tmp_path / "model.npz") == held


def test_golden_checkpoint_resumes_where_it_stopped(backend, expected, tmp_path):
    make_golden = _make_golden()
    path = str(tmp_path / "run.npz")
    shutil.copyfile(CHECKPOINT, path)
    meta = json.loads(str(_raw_arrays(CHECKPOINT)["__checkpoint__"]))
    assert meta["epochs_done"] == 1
    model = fastcnn.load(CHECKPOINT)
    history = make_golden.fit_checkpointed(model, expected["ckpt_X"], expected["ckpt_y"], 2, path)
    # Epoch 0 comes from the checkpoint, as it was recorded (its wall time included);
    # only epoch 1 is trained.
    assert history.epoch == [0, 1]
    for key, values in meta["history"]["history"].items():
        assert history.history[key][0] == values[0], key
    assert_allclose(history.history["loss"], expected[f"resumed_loss_{backend}"], rtol=1e-5)
    assert model.optimizer.n_steps == 2 * 3  # 12 samples in batches of 5, twice
    assert history.history["lr"] == [0.01, 0.005]
    # An epoch of training carries the CPU's last-bit differences (module docstring)
    # through the optimizer: the float32 tolerance of the backend comparisons.
    out = model.forward(expected["ckpt_X"])
    assert_allclose(out, expected[f"resumed_out_{backend}"], **tol(np.float32))
    assert json.loads(str(_raw_arrays(path)["__checkpoint__"]))["epochs_done"] == 2


# ---------------------------------------------------------------------------------------
# fastcnn.saving: the functions behind save and load, and the registry's two homes


def test_save_and_load_are_the_saving_functions_and_the_registry_has_two_homes():
    import fastcnn.model

    assert fastcnn.load is fastcnn.model.load is saving.load_model
    assert fastcnn.model.FORMAT_VERSION == saving.FORMAT_VERSION
    for name in ("LAYER_REGISTRY", "layer_from_config", "register_layer"):
        assert getattr(fastcnn.layers, name) is getattr(saving, name), name
        assert name in fastcnn.layers.__all__ and name in saving.__all__
    namespace: dict = {}
    exec("from fastcnn.layers import *", namespace)
    assert namespace["register_layer"] is saving.register_layer
    with pytest.raises(AttributeError, match="fastcnn.layers' has no attribute 'registry'"):
        fastcnn.layers.registry  # noqa: B018


def test_save_model_and_load_model_round_trip(dtype, backend, tmp_path, rng):
    model = Sequential(
        Conv2D(1, 2, 3, dtype=dtype, rng=0),
        BatchNorm2D(2, dtype=dtype),
        ReLU(),
        Flatten(),
        Dense(2 * 4 * 4, 3, dtype=dtype, rng=1),
    )
    x = rng.standard_normal((2, 1, 6, 6)).astype(dtype)
    model.forward(x, training=True)  # BatchNorm statistics other than the initial ones
    for path in (tmp_path / "pathlib.npz", str(tmp_path / "str.npz")):
        saving.save_model(model, path)
        loaded = saving.load_model(path)
        assert loaded.dtype == dtype
        _assert_state_is(loaded, model.state_dict())
        assert_array_equal(loaded.forward(x), model.forward(x), strict=True)
    assert sorted(os.listdir(tmp_path)) == ["pathlib.npz", "str.npz"]


def test_a_layer_registered_in_saving_is_saved_and_loaded(tmp_path):
    class Scale(fastcnn.layers.Layer):
        def __init__(self, factor=2.0):
            super().__init__()
            self.factor = factor

        def forward(self, x, training=False):
            return x * self.factor

        def backward(self, grad_out):
            return grad_out * self.factor

        def get_config(self):
            return {"factor": self.factor}

    with pytest.raises(ValueError, match="not a registered layer class"):
        saving.save_model(Sequential(Scale(3.0)), tmp_path / "scale.npz")
    try:
        assert saving.register_layer(Scale) is Scale
        assert fastcnn.layers.LAYER_REGISTRY["Scale"] is Scale
        saving.save_model(Sequential(Scale(3.0)), tmp_path / "scale.npz")
        (layer,) = saving.load_model(tmp_path / "scale.npz")
        assert type(layer) is Scale and layer.factor == 3.0
    finally:
        saving.LAYER_REGISTRY.pop("Scale", None)
    with pytest.raises(ValueError, match="unknown layer class 'Scale'"):
        saving.load_model(tmp_path / "scale.npz")
