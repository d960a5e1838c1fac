"""Hostile and damaged model files, interrupted saves, and fit checkpoints.

Complements ``test_model.py`` (round trip, one truncation, pickles, architecture edits,
one failing writer): every array name, shape and dtype fault; many truncations and
random corruptions; crafted headers and architectures that would make us allocate
terabytes; zip bombs, arrays stored under two names and files of too many layers, all
refused before any array data is read; saves interrupted at every stage, in-process and
by SIGKILL; and ``fit(checkpoint=...)`` resuming to exactly the uninterrupted result.
"""

import collections
import errno
import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastcnn.saving.npz as npz_module
import fastcnn.saving.registry as registry_module
from fastcnn.layers import (
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
)
from fastcnn.model import Sequential, load
from fastcnn.optim import SGD, Adam, StepLR


def small_model(seed=0, dtype=np.float32):
    return Sequential(
        Conv2D(1, 3, 3, padding=1, dtype=dtype, rng=seed),
        BatchNorm2D(3, dtype=dtype),
        ReLU(),
        MaxPool2D(2),
        Dropout(0.3, rng=seed),
        Flatten(),
        Dense(27, 4, dtype=dtype, rng=seed + 1),
    )


STATE_KEYS = sorted(small_model().state_dict())
needs_sigkill = pytest.mark.skipif(
    not hasattr(signal, "SIGKILL"), reason="kills a subprocess with SIGKILL (POSIX)"
)


def _contents(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def _rewrite(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _assert_same_state(a: Sequential, b: Sequential):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert_array_equal(sa[key], sb[key], err_msg=key)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "good.npz"
    small_model().save(path)
    return path


# ---------------------------------------------------------------------------------------
# Wrong arrays


@pytest.mark.parametrize("key", STATE_KEYS)
def test_each_missing_array_is_named(saved, key):
    arrays = _contents(saved)
    del arrays[key]
    _rewrite(saved, arrays)
    with pytest.raises(ValueError, match=rf"good.npz'.*missing \['{key}'\], unexpected \[\]"):
        load(saved)


@pytest.mark.parametrize("extra", ["7.weight", "0.weight_extra", "__evil__", "../0.weight"])
def test_each_extra_array_is_named(saved, extra):
    arrays = _contents(saved)
    arrays[extra] = np.zeros(3, np.float32)
    _rewrite(saved, arrays)
    with pytest.raises(ValueError, match=rf"missing \[\], unexpected \['{extra}'\]"):
        load(saved)


@pytest.mark.parametrize(
    ("key", "make"),
    [
        ("6.weight", lambda a: a.T.copy()),  # (27, 4) instead of (4, 27)
        ("6.weight", lambda a: a[None]),
        ("6.bias", lambda a: a[:3]),
        ("1.running_var", lambda a: np.float32(1.0)),
        ("0.weight", lambda a: a.reshape(3, 9)),
        ("0.weight", lambda a: np.zeros((0, 1, 3, 3), np.float32)),
    ],
)
def test_wrong_shapes_are_refused_with_the_expected_shape(saved, key, make):
    arrays = _contents(saved)
    expected = arrays[key].shape
    arrays[key] = make(arrays[key])
    _rewrite(saved, arrays)
    pattern = rf"array '{key}' must have shape {re_shape(expected)} and dtype float32"
    with pytest.raises(ValueError, match=pattern):
        load(saved)


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64, "U3"]
)
def test_wrong_dtypes_are_refused(saved, dtype):
    arrays = _contents(saved)
    arrays["0.weight"] = arrays["0.weight"].astype(dtype)
    _rewrite(saved, arrays)
    with pytest.raises(ValueError, match=r"'0.weight' must have shape .* and dtype float32, got"):
        load(saved)


def test_big_endian_arrays_load_with_their_values(saved):
    # A file written on a big-endian machine holds '>f4' arrays: same values, other order.
    arrays = _contents(saved)
    original = {k: arrays[k] for k in STATE_KEYS}
    _rewrite(saved, {**arrays, **{k: v.astype(">f4") for k, v in original.items()}})
    model = load(saved)
    for key, value in model.state_dict().items():
        assert value.dtype == np.float32 and value.dtype.isnative
        assert_array_equal(value, original[key], err_msg=key)


# ---------------------------------------------------------------------------------------
# Hostile architectures


def _edit_architecture(path, config):
    arrays = _contents(path)
    arrays["__architecture__"] = np.array(
        config if isinstance(config, str) else json.dumps(config)
    )
    _rewrite(path, arrays)


def _config_with(layer_class, layer_config):
    return {
        "kind": "fastcnn.Sequential",
        "layers": [{"class": layer_class, "config": layer_config}],
    }


@pytest.mark.parametrize(
    ("layer_class", "layer_config", "match"),
    [
        ("__import__", {"name": "os"}, "unknown layer class '__import__'"),
        ("Layer", {}, "unknown layer class 'Layer'"),
        ("Sequential", {}, "unknown layer class 'Sequential'"),
        ("eval", {}, "unknown layer class 'eval'"),
        ("", {}, "unknown layer class ''"),
        (None, {}, "unknown layer class None"),
        (["Dense"], {}, r"unknown layer class \['Dense'\]"),
        ("Dense", {"in_features": "__import__('os')", "out_features": 2}, "in_features"),
        ("Dense", {"in_features": 2, "out_features": 2, "dtype": "object"}, "dtype"),
        ("Dense", {"in_features": 2, "out_features": 2, "rng": {"seed": 1}}, "rng"),
        ("Dense", {"in_features": 1e999, "out_features": 2}, "in_features"),
        ("Dense", ["in_features", 2], "must be a dict"),
        ("ReLU", {"__class__": "os"}, "unexpected keyword"),
    ],
)
def test_unknown_or_malicious_layers_are_refused(saved, layer_class, layer_config, match):
    _edit_architecture(saved, _config_with(layer_class, layer_config))
    with pytest.raises(ValueError, match=match) as info:
        load(saved)
    assert "good.npz" in str(info.value)


@pytest.mark.parametrize(
    "architecture",
    [
        "[" * 100_000 + "]" * 100_000,  # nesting deep enough to exhaust the recursion limit
        '{"kind": "fastcnn.Sequential", "layers": ' + "[" * 50_000 + "]" * 50_000 + "}",
        "null",
        "[]",
        '{"kind": "fastcnn.Sequential", "layers": {"0": "Dense"}}',
        '{"kind": "fastcnn.Sequential", "layers": [["Dense", {}]]}',
        "NaN",
    ],
    ids=["deep-list", "deep-layers", "null", "list", "dict-layers", "pair", "nan"],
)
def test_malformed_architectures_are_value_errors(saved, architecture):
    _edit_architecture(saved, architecture)
    with pytest.raises(ValueError, match=r"good.npz': invalid architecture"):
        load(saved)


CRAFTED_SCRIPT = r"""
import json, resource, sys
import numpy as np
from fastcnn.model import load

# With 2 GB of address space, a regression that allocates a declared layer fails fast
# with MemoryError here instead of exhausting the machine.
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
path, architectures = sys.argv[1], json.load(sys.stdin)
for name, layers in architectures.items():
    config = {"kind": "fastcnn.Sequential", "layers": layers}
    with open(path, "wb") as f:
        np.savez(f, __fastcnn_format__=np.array(1), __architecture__=np.array(json.dumps(config)),
                 **{"0.weight": np.zeros((2, 2), np.float32)})
    try:
        load(path)
    except Exception as exc:
        print(name, type(exc).__name__, str(exc).replace("\n", " "), flush=True)
    else:
        print(name, "loaded", flush=True)
with open("/proc/self/status") as f:  # VmHWM: this process's peak, unlike ru_maxrss
    print("peak_mb", next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) // 1024)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="caps the address space and reads /proc"
)
def test_crafted_huge_layers_are_refused_before_allocating(tmp_path):
    def dense(i, o):
        return {"class": "Dense", "config": {"in_features": i, "out_features": o}}

    architectures = {
        "dense_4TB": [dense(10**6, 10**6)],
        "dense_10GB": [dense(50_000, 50_000)],  # calloc would succeed lazily, then touch it
        "dense_astronomic": [dense(10**400, 1)],
        "conv_68G_elements": [
            {
                "class": "Conv2D",
                "config": {"in_channels": 4096, "out_channels": 4096, "kernel_size": 64},
            }
        ],  # fmt: skip
        "batchnorm_1e10": [{"class": "BatchNorm2D", "config": {"num_features": 10**10}}],
        "many_medium_layers": [dense(1000, 1000) for _ in range(10_000)],  # 10G in all
    }
    proc = subprocess.run(
        [sys.executable, "-c", CRAFTED_SCRIPT, str(tmp_path / "crafted.npz")],
        input=json.dumps(architectures), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    results = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in lines[:-1]}
    assert results.keys() == architectures.keys()
    for name, result in results.items():
        assert result.startswith("ValueError"), (name, result)
        assert "invalid architecture" in result and "far more than the model file holds" in result
    assert int(lines[-1].split()[1]) < 1000  # nothing near the declared sizes was touched


def _write_raw_entry(path, arrays, raw):
    """An .npz whose `raw` entries are given as bytes (crafted headers)."""
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in arrays.items():
            with archive.open(key + ".npy", "w") as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)
        for key, data in raw.items():
            archive.writestr(key + ".npy", data)


def _npy_header(shape, descr="<f4"):
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (_npy_header((10**6, 10**6)) + b"\0" * 64, r"declares an array of shape \(1000000, "),
        (_npy_header((3, 1, 3, 3)) + b"\0" * 16, r"\(108 bytes\) but it holds 16 bytes"),
        (_npy_header((2,)) + b"\0" * 64, r"but it holds 64 bytes"),
        (b"PK not an npy entry at all", "magic string is not correct"),
        (b"\x93NUMPY\x03\x00" + b"\0" * 60, r"unsupported .npy format version \(3, 0\)"),
        (b"", "EOF"),
    ],
    ids=["huge", "short", "long", "not-npy", "version-3", "empty"],
)
def test_crafted_array_headers_are_refused(saved, raw, match):
    arrays = _contents(saved)
    del arrays["0.weight"]
    _write_raw_entry(saved, arrays, {"0.weight": raw})
    with pytest.raises(ValueError, match=r"entry '0.weight' is truncated or corrupt.*" + match):
        load(saved)


@pytest.mark.parametrize("key", ["__fastcnn_format__", "__architecture__"])
def test_crafted_metadata_entries_are_refused(saved, key):
    arrays = _contents(saved)
    del arrays[key]
    _write_raw_entry(saved, arrays, {key: b"raw bytes, not an array"})
    with pytest.raises(ValueError, match=rf"entry '{key}' is truncated or corrupt"):
        load(saved)


# ---------------------------------------------------------------------------------------
# Zip bombs, ambiguous names, too many layers (issue 20, defects 6 to 8)
#
# Hostile files are built here by hand with zipfile: no binary blobs in the repository.


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def _zeros_npy(shape, descr="<f4"):
    """An .npy entry of zeros, as chunks (a deflated 64 MiB of it is a 64 kB file)."""
    yield _npy_header(shape, descr)
    left = int(np.prod(shape)) * np.dtype(descr).itemsize
    while left:
        yield bytes(min(left, 1 << 20))
        left -= min(left, 1 << 20)


def _write_zip(path, entries, deflate=()):
    """Write `entries`, (zip name, bytes or chunks) pairs, in order; a name may repeat.
    Those named in `deflate` are compressed, the rest stored (as np.savez does)."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as archive:
        warnings.simplefilter("ignore", UserWarning)  # "Duplicate name"
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            if name in deflate:
                info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w") as f:
                for chunk in [data] if isinstance(data, bytes) else data:
                    f.write(chunk)


def _entries(path):
    """(zip name, raw bytes) of every entry of a file."""
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _architecture_entries(layers):
    config = {"kind": "fastcnn.Sequential", "layers": layers}
    return [
        ("__fastcnn_format__.npy", _npy(np.array(1))),
        ("__architecture__.npy", _npy(np.array(json.dumps(config)))),
    ]


class ReadSpy:
    """Counts the bytes read from each zip entry (by every reader, numpy's included)."""

    def __init__(self, monkeypatch):
        self.bytes = collections.Counter()
        real = zipfile.ZipExtFile.read

        def read(f, n=-1):
            data = real(f, n)
            self.bytes[f.name] += len(data)
            return data

        monkeypatch.setattr(zipfile.ZipExtFile, "read", read)


class BuildSpy:
    """Counts the layers built from a file's architecture."""

    def __init__(self, monkeypatch):
        self.built = 0
        real = registry_module.layer_from_config

        def build(name, config):
            self.built += 1
            return real(name, config)

        monkeypatch.setattr(registry_module, "layer_from_config", build)


def test_the_build_spy_sees_every_layer_a_load_builds(saved, monkeypatch):
    # The tests below assert that it saw none: it must see them when there are some.
    spy = BuildSpy(monkeypatch)
    assert len(load(saved)) == spy.built == len(small_model())


HEADER_BYTES = 1024  # what reading one .npy header may take; array data is not read


# Deflated zeros: 512 KiB stay within what the file's size allows and are refused by
# name; 64 MiB (a 64 kB file) are refused by size. Either way the entry is never opened.
BOMBS = {
    "512KiB": ((128, 1024), r"arrays do not match .*unexpected \['{extra}'\]"),
    "64MiB": ((16, 1 << 20), r"entry '{extra}' declares 67,108,992 bytes uncompressed"),
}


@pytest.mark.parametrize("bomb", sorted(BOMBS))
@pytest.mark.parametrize("extra", ["bomb", "7.weight", "__checkpoint__.optimizer.0.exp_avg"])
def test_an_extra_deflated_entry_is_refused_unread(saved, monkeypatch, extra, bomb):
    shape, match = BOMBS[bomb]
    entries = [*_entries(saved), (extra + ".npy", _zeros_npy(shape))]
    _write_zip(saved, entries, deflate={extra + ".npy"})
    assert saved.stat().st_size < 100_000
    spy = ReadSpy(monkeypatch)
    with pytest.raises(ValueError, match=r"good.npz': " + match.format(extra=extra)):
        load(saved)
    assert spy.bytes[extra + ".npy"] == 0
    assert sum(spy.bytes.values()) < 20_000  # the metadata and no array data


def test_a_bomb_the_architecture_asks_for_is_refused_before_building(tmp_path, monkeypatch):
    # Honest entries of the declared sizes: Dense(4096, 4096) needs 64 MiB of zeros, which
    # deflate to 64 kB. Nothing but the metadata is read and no layer is built.
    path = tmp_path / "bomb.npz"
    dense = {"class": "Dense", "config": {"in_features": 4096, "out_features": 4096}}
    entries = [
        *_architecture_entries([dense]),
        ("0.weight.npy", _zeros_npy((4096, 4096))),
        ("0.bias.npy", _npy(np.zeros(4096, np.float32))),
    ]
    _write_zip(path, entries, deflate={"0.weight.npy"})
    reads, builds = ReadSpy(monkeypatch), BuildSpy(monkeypatch)
    with pytest.raises(ValueError, match=r"bomb.npz': entry '0.weight' declares 67,108,992 "):
        load(path)
    assert builds.built == 0 and reads.bytes["0.weight.npy"] == 0


def test_a_compressed_model_file_loads(saved):
    # fastcnn writes entries stored; np.savez_compressed's deflated ones load as well.
    arrays = _contents(saved)
    with open(saved, "wb") as f:
        np.savez_compressed(f, **arrays)
    _assert_same_state(load(saved), small_model())


def _forge_declared_size(path, member, size):
    """Overwrite the uncompressed size of `member` in the zip's central directory."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        name_length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + name_length] == member.encode():
            struct.pack_into("<I", data, at + 24, size)
            path.write_bytes(bytes(data))
            return
        at = data.find(b"PK\x01\x02", at + 4)
    raise AssertionError(f"{member} not found")


@pytest.mark.parametrize(
    ("size", "match"),
    [
        (128 + 108 + 4, r"truncated or corrupt.*\(108 bytes\) but it holds 112 bytes"),
        (1 << 30, r"declares 1,073,741,824 bytes uncompressed"),
    ],
    ids=["4-bytes-more", "1-GiB"],
)
def test_a_declared_size_other_than_the_header_implies_is_refused(saved, monkeypatch, size,
                                                                   match):  # fmt: skip
    _forge_declared_size(saved, "0.weight.npy", size)
    spy = ReadSpy(monkeypatch)
    with pytest.raises(ValueError, match=r"good.npz'.* entry '0.weight'.*" + match):
        load(saved)
    assert spy.bytes["0.weight.npy"] < HEADER_BYTES


@pytest.mark.parametrize(
    ("duplicate", "match"),
    [
        (("0.weight", _npy(np.ones((3, 1, 3, 3), np.float32))), "'0.weight' and '0.weight.npy'"),
        (("0.weight", _npy_header((10**6, 10**6)) + bytes(64)), "'0.weight' and '0.weight.npy'"),
        (("0.weight.npy", _npy(np.ones((3, 1, 3, 3), np.float32))), "'0.weight.npy' 2 times"),
        (("__architecture__", _npy(np.array("{}"))), "'__architecture__' and '__architecture"),
        (("__fastcnn_format__.npy", _npy(np.array(1))), "'__fastcnn_format__.npy' 2 times"),
    ],
    ids=["k-and-k.npy", "k-forged-4TB", "same-name", "architecture", "format"],
)
def test_an_array_stored_twice_is_refused(saved, duplicate, match):
    _write_zip(saved, [*_entries(saved), duplicate])
    with pytest.raises(ValueError, match=r"good.npz'.*" + match):
        load(saved)


@pytest.mark.parametrize(
    ("n_layers", "match"),
    [
        (10_001, "invalid architecture: the architecture has 10,001 layers.*at most 10,000"),
        (100_000, "invalid architecture: the architecture has 100,000 layers.*at most 10,000"),
        (1_000_000, "entry '__architecture__' holds a string of 132,000,168 bytes"),
    ],
    ids=["10001", "100000", "1000000"],
)
def test_too_many_layers_are_refused_before_building_any(tmp_path, monkeypatch, n_layers,
                                                          match):  # fmt: skip
    path = tmp_path / "deep.npz"
    _write_zip(path, _architecture_entries([{"class": "ReLU", "config": {}}] * n_layers))
    spy = BuildSpy(monkeypatch)
    with pytest.raises(ValueError, match=r"deep.npz': " + match):
        load(path)
    assert spy.built == 0


def test_a_file_at_the_layer_cap_loads(tmp_path):
    path = tmp_path / "deep.npz"
    Sequential([ReLU() for _ in range(10_000)]).save(path)
    assert len(load(path)) == 10_000
    with pytest.raises(ValueError, match=r"10,001 layers.*at most 10,000"):
        Sequential([ReLU() for _ in range(10_001)]).save(path)
    assert len(load(path)) == 10_000  # the previous file is intact


def test_a_long_architecture_text_is_refused_unread(saved, monkeypatch):
    monkeypatch.setattr(npz_module, "_MAX_TEXT_BYTES", 1000)
    spy = ReadSpy(monkeypatch)
    with pytest.raises(
        ValueError, match=r"entry '__architecture__' holds a string of 2,800 bytes"
    ):
        load(saved)
    assert spy.bytes["__architecture__.npy"] < HEADER_BYTES


# ---------------------------------------------------------------------------------------
# Truncated and corrupted files


def test_every_truncation_is_a_value_error(saved):
    data = saved.read_bytes()
    cuts = sorted({0, 1, 4, 30, len(data) - 1, len(data) - 22, *range(0, len(data), 97)})
    for cut in cuts:
        saved.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="good.npz"):
            load(saved)
    assert len(cuts) > 50


def _mutate(data: bytes, rng) -> bytes:
    b = bytearray(data)
    kind = rng.integers(5)
    i = int(rng.integers(len(b)))
    if kind == 0:
        b[i] ^= 1 << int(rng.integers(8))  # one bit flipped
    elif kind == 1:
        b[i] = int(rng.integers(256))  # one byte replaced
    elif kind == 2:
        b[i : i + 16] = bytes(16)  # a zeroed run
    elif kind == 3:
        b[i : i + 8] = b"\xff" * 8  # a run of 0xff (e.g. a huge size field)
    else:
        j = int(rng.integers(len(b)))
        b[i:i] = b[j : j + 32]  # bytes duplicated: everything after shifts
    return bytes(b)


N_CORRUPTIONS = 400


def test_random_corruption_is_a_value_error_or_the_same_model(saved):
    """Damage anywhere in the file: a clear ValueError, or (damage to a field nothing
    reads, e.g. a timestamp) exactly the original weights. Never another exception."""
    original = load(saved)
    data = saved.read_bytes()
    rng = np.random.default_rng(2024)
    outcomes = {"ValueError": 0, "identical": 0}
    for _ in range(N_CORRUPTIONS):
        saved.write_bytes(_mutate(data, rng))
        try:
            model = load(saved)
        except ValueError as exc:
            assert "good.npz" in str(exc)
            outcomes["ValueError"] += 1
        else:
            _assert_same_state(model, original)
            outcomes["identical"] += 1
    assert outcomes["ValueError"] > N_CORRUPTIONS // 2, outcomes


# ---------------------------------------------------------------------------------------
# Atomic save


def _fail_in(stage, exc, monkeypatch):
    if stage == "savez":
        real = np.savez

        def savez(file, **arrays):
            real(file, **arrays)  # the whole archive is written to the temporary file...
            raise exc  # ...then the "disk fills up" before it is flushed

        monkeypatch.setattr(npz_module.np, "savez", savez)
    elif stage == "fsync":

        def fsync(fd):
            raise exc

        monkeypatch.setattr(npz_module.os, "fsync", fsync)
    else:

        def replace(src, dst):
            raise exc

        monkeypatch.setattr(npz_module.os, "replace", replace)


@pytest.mark.parametrize("stage", ["savez", "fsync", "replace"])
@pytest.mark.parametrize(
    "exc",
    [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
    ids=["disk-full", "ctrl-c"],
)
def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch, stage, exc):
    path = tmp_path / "model.npz"
    first = small_model(seed=0)
    first.save(path)
    before = path.read_bytes()
    second = small_model(seed=5)
    _fail_in(stage, exc, monkeypatch)
    with pytest.raises(type(exc)):
        second.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.npz"]  # the temporary file was removed
    _assert_same_state(load(path), first)


KILL_SCRIPT = r"""
import sys, time
import numpy as np
import fastcnn.saving.npz as npz_module
from fastcnn.layers import Dense
from fastcnn.model import Sequential

path, mode = sys.argv[1], sys.argv[2]
second = Sequential(Dense(500, 1000, rng=2), Dense(1000, 10, rng=3))  # ~2 MB file
if mode == "slow":
    real_savez = np.savez

    class Slow:
        # Passes writes through in small pieces, pausing, and says when it is mid-file.
        def __init__(self, f):
            self.f, self.n = f, 0
        def write(self, data):
            for i in range(0, len(data), 4096):
                self.f.write(data[i:i + 4096])
                self.n += 1
                if self.n == 50:
                    print("mid-write", flush=True)
                time.sleep(0.001)
            return len(data)
        def __getattr__(self, name):
            return getattr(self.f, name)

    def savez(f, **arrays):
        real_savez(Slow(f), **arrays)

    npz_module.np.savez = savez
    second.save(path)
    print("finished", flush=True)
else:
    print("mid-write", flush=True)
    while True:
        second.save(path)
"""


def _kill_mid_save(path, mode, delay):
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(path), mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.strip() == "mid-write", line + proc.stderr.read()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@needs_sigkill
def test_save_killed_mid_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "model.npz"
    first = Sequential(Dense(500, 1000, rng=0), Dense(1000, 10, rng=1))
    first.save(path)
    before = path.read_bytes()
    _kill_mid_save(path, "slow", 0.05)  # killed about 200 KB into a 2 MB write
    assert path.read_bytes() == before
    _assert_same_state(load(path), first)
    leftovers = [name for name in os.listdir(tmp_path) if name != "model.npz"]
    # SIGKILL gives no chance to clean up: at most the one hidden temporary file remains
    assert len(leftovers) <= 1 and all(n.startswith(".model.npz.") for n in leftovers)


@needs_sigkill
@pytest.mark.parametrize("delay", [0.05, 0.13, 0.31])
def test_save_killed_at_random_moments_leaves_a_whole_file(tmp_path, delay):
    path = tmp_path / "model.npz"
    first = Sequential(Dense(500, 1000, rng=0), Dense(1000, 10, rng=1))
    first.save(path)
    _kill_mid_save(path, "loop", delay)
    loaded = load(path)  # never a partial file: either model, whole
    second = Sequential(Dense(500, 1000, rng=2), Dense(1000, 10, rng=3))
    candidates = [first.state_dict(), second.state_dict()]
    state = loaded.state_dict()
    assert any(all(np.array_equal(state[k], c[k]) for k in state) for c in candidates)


# ---------------------------------------------------------------------------------------
# Checkpoints: fit(checkpoint=PATH) resumes to exactly the uninterrupted result


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((48, 1, 6, 6)).astype(np.float32)
    y = (X.mean(axis=(1, 2, 3)) > 0).astype(int) + 2 * (X[:, 0, 0, 0] > 0)
    return X, y


FIT = {"epochs": 4, "batch_size": 8, "random_state": 0, "verbose": 0, "validation_split": 0.25}


def _uninterrupted(data, make_optimizer, **kwargs):
    model = small_model()
    optimizer = make_optimizer()
    history = model.fit(*data, optimizer=optimizer, callbacks=[StepLR(optimizer, 2, 0.5)],
                        **{**FIT, **kwargs})  # fmt: skip
    return model, history


class CrashAtEpoch:
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch:
            raise RuntimeError("power cut")


OPTIMIZERS = {
    "adam": lambda: Adam(1e-2),
    "sgd-momentum": lambda: SGD(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "sgd": lambda: SGD(0.05),
}


def _assert_same_run(model, history, reference, ref_history):
    _assert_same_state(model, reference)
    assert history.epoch == ref_history.epoch
    for key, values in ref_history.history.items():
        if key != "time":
            assert history.history[key] == values, key


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
@pytest.mark.parametrize("crash_epoch", [0, 2])
def test_resume_after_a_crash_equals_uninterrupted_training(tmp_path, data, optimizer,
                                                             crash_epoch):  # fmt: skip
    make = OPTIMIZERS[optimizer]
    reference, ref_history = _uninterrupted(data, make)
    path = tmp_path / "ckpt.npz"

    crashed = small_model()
    opt = make()
    with pytest.raises(RuntimeError, match="power cut"):
        crashed.fit(*data, optimizer=opt, callbacks=[StepLR(opt, 2, 0.5),
                    CrashAtEpoch(crash_epoch)], checkpoint=path, **FIT)  # fmt: skip
    # An epoch is saved after its callbacks: a crash in epoch 0's leaves no checkpoint.
    assert path.exists() == (crash_epoch > 0)

    # A new process would rebuild everything from the same code: fresh objects here.
    resumed = small_model()
    opt = make()
    history = resumed.fit(*data, optimizer=opt, callbacks=[StepLR(opt, 2, 0.5)],
                          checkpoint=path, **FIT)  # fmt: skip
    _assert_same_run(resumed, history, reference, ref_history)
    assert opt.lr == reference.optimizer.lr and opt.n_steps == reference.optimizer.n_steps


def test_resume_after_a_crash_mid_epoch(tmp_path, data):
    reference, ref_history = _uninterrupted(data, OPTIMIZERS["adam"])
    path = tmp_path / "ckpt.npz"
    crashed = small_model()
    opt = Adam(1e-2)
    real_step, calls = opt.step, []

    def step(params=None):
        calls.append(1)
        if len(calls) == 13:  # the 3rd batch of epoch 3 (36 training samples: 5 batches)
            raise MemoryError("simulated")
        real_step(params)

    opt.step = step
    with pytest.raises(MemoryError):
        crashed.fit(*data, optimizer=opt, callbacks=[StepLR(opt, 2, 0.5)], checkpoint=path,
                    **FIT)  # fmt: skip
    opt = Adam(1e-2)
    resumed = small_model()
    history = resumed.fit(*data, optimizer=opt, callbacks=[StepLR(opt, 2, 0.5)],
                          checkpoint=path, **FIT)  # fmt: skip
    _assert_same_run(resumed, history, reference, ref_history)


def test_resume_after_ctrl_c(tmp_path, data, capsys):
    reference, ref_history = _uninterrupted(data, OPTIMIZERS["adam"])
    path = tmp_path / "ckpt.npz"

    class CtrlC:
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                raise KeyboardInterrupt

    opt = Adam(1e-2)
    first = small_model().fit(*data, optimizer=opt, checkpoint=path,
                              callbacks=[StepLR(opt, 2, 0.5), CtrlC()], **FIT)  # fmt: skip
    assert first.interrupted and first.epoch == [0, 1]
    resumed = small_model()
    opt = Adam(1e-2)
    history = resumed.fit(*data, optimizer=opt, callbacks=[StepLR(opt, 2, 0.5)],
                          checkpoint=path, **FIT)  # fmt: skip
    _assert_same_run(resumed, history, reference, ref_history)
    assert "Training interrupted at epoch 2/4" in capsys.readouterr().err


RESUME_SCRIPT = r"""
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from test_model_files import FIT, small_model
from fastcnn.optim import Adam, StepLR

class Slow:
    def on_epoch_end(self, epoch, logs):
        print("epoch", epoch, flush=True)
        time.sleep(0.5)   # the checkpoint of this epoch is written after the callbacks

rng = np.random.default_rng(7)
X = rng.standard_normal((48, 1, 6, 6)).astype(np.float32)
y = (X.mean(axis=(1, 2, 3)) > 0).astype(int) + 2 * (X[:, 0, 0, 0] > 0)
opt = Adam(1e-2)
small_model().fit(X, y, optimizer=opt, callbacks=[StepLR(opt, 2, 0.5), Slow()],
                  checkpoint=sys.argv[1], **FIT)
print("finished", flush=True)
"""


@needs_sigkill
def test_resume_after_the_process_is_killed(tmp_path, data):
    reference, ref_history = _uninterrupted(data, OPTIMIZERS["adam"])
    path = tmp_path / "ckpt.npz"
    proc = subprocess.Popen(
        [sys.executable, "-c", RESUME_SCRIPT, str(path), os.path.dirname(__file__)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for expected in ("epoch 0", "epoch 1"):
            line = proc.stdout.readline()
            assert line.strip() == expected, line + proc.stderr.read()
        proc.send_signal(signal.SIGKILL)  # during epoch 1's callback: 1 epoch checkpointed
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert load(path).num_params == reference.num_params  # the checkpoint is a model file
    resumed = small_model()
    opt = Adam(1e-2)
    history = resumed.fit(*data, optimizer=opt, callbacks=[StepLR(opt, 2, 0.5)],
                          checkpoint=path, **FIT)  # fmt: skip
    _assert_same_run(resumed, history, reference, ref_history)


def test_finished_checkpoint_trains_no_more(tmp_path, data):
    path = tmp_path / "ckpt.npz"
    model = small_model()
    model.fit(*data, optimizer=Adam(1e-2), checkpoint=path, **FIT)
    again = small_model()
    history = again.fit(*data, optimizer=Adam(1e-2), checkpoint=path, **FIT)
    _assert_same_state(again, model)
    assert history.epoch == [0, 1, 2, 3]
    more = small_model()  # asking for more epochs continues from the checkpoint
    history = more.fit(*data, optimizer=Adam(1e-2), checkpoint=path, **{**FIT, "epochs": 5})
    assert history.epoch == [0, 1, 2, 3, 4]
    assert not np.array_equal(more[0].weight, model[0].weight)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"model": lambda: Sequential(Flatten(), Dense(36, 4, rng=0))}, "different architecture"),
        ({"batch_size": 4}, "batch_size=8, got batch_size=4"),
        ({"optimizer": lambda: SGD(0.1)}, "written with a Adam optimizer, got SGD"),
        ({"n": 40}, "n_samples=36, got n_samples=30"),
    ],
)
def test_mismatched_resume_is_refused(tmp_path, data, change, match):
    path = tmp_path / "ckpt.npz"
    small_model().fit(*data, optimizer=Adam(1e-2), checkpoint=path, **{**FIT, "epochs": 1})
    model = change.get("model", small_model)()
    optimizer = change.get("optimizer", lambda: Adam(1e-2))()
    n = change.get("n", 48)
    kwargs = {**FIT, "batch_size": change.get("batch_size", 8)}
    with pytest.raises(ValueError, match=match):
        model.fit(data[0][:n], data[1][:n], optimizer=optimizer, checkpoint=path, **kwargs)


def test_checkpoint_must_be_a_checkpoint(tmp_path, data):
    plain = tmp_path / "plain.npz"
    small_model().save(plain)
    with pytest.raises(ValueError, match="model file without training state"):
        small_model().fit(*data, optimizer=Adam(), checkpoint=plain, **FIT)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="garbage.npz' is not a fastcnn model file"):
        small_model().fit(*data, optimizer=Adam(), checkpoint=garbage, **FIT)

    class Custom:
        def step(self, params):
            pass

    with pytest.raises(TypeError, match="checkpoint needs a fastcnn.optim optimizer"):
        small_model().fit(*data, optimizer=Custom(), checkpoint=tmp_path / "c.npz", **FIT)


@pytest.fixture
def checkpoint(tmp_path, data):
    path = tmp_path / "ckpt.npz"
    small_model().fit(*data, optimizer=Adam(1e-2), checkpoint=path, **{**FIT, "epochs": 1})
    return path


def _load_and_resume(path, data):
    """Both readers of a checkpoint: load() and fit(checkpoint=...)."""
    yield lambda: load(path)
    yield lambda: small_model().fit(*data, optimizer=Adam(1e-2), checkpoint=path, **FIT)


@pytest.mark.parametrize("bomb", sorted(BOMBS))
@pytest.mark.parametrize("extra", ["__checkpoint__.optimizer.0.evil", "__checkpoint__.x"])
def test_checkpoint_entries_the_state_does_not_declare_are_refused_unread(
    checkpoint, data, monkeypatch, extra, bomb
):
    shape, match = BOMBS[bomb]
    entries = [*_entries(checkpoint), (extra + ".npy", _zeros_npy(shape))]
    _write_zip(checkpoint, entries, deflate={extra + ".npy"})
    spy = ReadSpy(monkeypatch)
    for read in _load_and_resume(checkpoint, data):
        with pytest.raises(ValueError, match=r"ckpt.npz': " + match.format(extra=extra)):
            read()
    assert spy.bytes[extra + ".npy"] == 0


@pytest.mark.parametrize(
    ("shape", "descr"), [((300, 300), "<f4"), ((3, 1, 3, 3), "<f8"), ((1, 3, 1, 3, 3), "<f4")]
)
def test_checkpoint_optimizer_state_of_another_shape_is_refused_unread(
    checkpoint, data, monkeypatch, shape, descr
):
    key = "__checkpoint__.optimizer.0.exp_avg"
    entries = [(n, b) for n, b in _entries(checkpoint) if n != key + ".npy"]
    _write_zip(checkpoint, [*entries, (key + ".npy", _zeros_npy(shape, descr))],
               deflate={key + ".npy"})  # fmt: skip
    spy = ReadSpy(monkeypatch)
    for read in _load_and_resume(checkpoint, data):
        with pytest.raises(
            ValueError, match=rf"ckpt.npz'.*'{key}' must have shape \(3, 1, 3, 3\) and dtype"
        ):
            read()
    assert spy.bytes[key + ".npy"] < 2 * HEADER_BYTES


def test_checkpoint_state_declaring_too_many_arrays_is_refused(checkpoint, data):
    arrays = _contents(checkpoint)
    meta = json.loads(str(arrays["__checkpoint__"]))
    meta["optimizer"]["state"][0] = {f"k{i}": "array" for i in range(100)}
    arrays["__checkpoint__"] = np.array(json.dumps(meta))
    arrays.update({f"__checkpoint__.optimizer.0.k{i}": arrays["0.weight"] for i in range(100)})
    _rewrite(checkpoint, arrays)
    for read in _load_and_resume(checkpoint, data):
        with pytest.raises(ValueError, match=r"ckpt.npz'.*100 arrays for parameter 0"):
            read()


def test_a_save_into_a_missing_folder_names_the_callers_path(tmp_path):
    """The error named the hidden temporary file (.m.npz.<hex>.tmp) the atomic save writes
    first, a path the user never gave."""
    path = tmp_path / "missing" / "m.npz"
    with pytest.raises(FileNotFoundError) as info:
        Sequential(Dense(2, 2, rng=0)).save(path)
    message = str(info.value)
    assert f"cannot save to {str(path)!r}" in message
    assert f"no directory {str(path.parent)!r}" in message
    assert ".tmp" not in message


@pytest.mark.parametrize("kind", ["pickle", "npy-objects", "npy-floats", "text"])
def test_a_non_model_file_is_refused_without_numpys_pickle_advice(tmp_path, kind):
    """numpy's own message advises `allow_pickle=True`, the one thing fastcnn's loader
    must never do; the refusal says what the file is instead."""
    import pickle

    path = tmp_path / "not_a_model"
    if kind == "pickle":
        path.write_bytes(pickle.dumps({"weights": [1, 2]}))
    elif kind == "npy-objects":
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        path = path.with_suffix(".npy")
    elif kind == "npy-floats":
        np.save(path, np.ones(3))
        path = path.with_suffix(".npy")
    else:
        path.write_text("hello")
    with pytest.raises(ValueError, match="is not a fastcnn model file") as info:
        load(path)
    assert "allow_pickle" not in str(info.value)
