"""The model file: an ``.npz`` archive of plain arrays, written atomically, read checked.

A model file holds the format version (``__fastcnn_format__``), the architecture as a
JSON string (``__architecture__``, see :mod:`fastcnn.saving.registry`) and every weight
and BatchNorm statistic under a stable name (``"0.weight"``, ``"3.running_var"``). A
``fit`` checkpoint adds its training state (``__checkpoint__`` and the optimizer arrays
``__checkpoint__.optimizer.<i>.<name>``, see :mod:`fastcnn.saving.checkpoints`), which
:func:`load_model` checks and skips.

A file is written under a temporary name and renamed over the target, so an interrupted
save leaves the previous file intact. It is read with ``allow_pickle=False``, and what its
entries declare is checked against its architecture before any array is read, so it
cannot make us allocate or decompress much more than its own size ("Reading model files"
below).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import uuid
import zipfile
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from fastcnn.layers.base import allocation_budget
from fastcnn.saving.registry import (
    GRAPH_KIND,
    MAX_FILE_LAYERS,
    graph_from_config,
    layers_from_config,
)

if TYPE_CHECKING:  # fastcnn.model imports this package
    from fastcnn.model import BaseModel

__all__ = ["FORMAT_VERSION", "load_model", "save_model"]

#: Version of the model file layout written by :func:`save_model`.
FORMAT_VERSION = 1
_FORMAT_KEY = "__fastcnn_format__"
_ARCH_KEY = "__architecture__"
#: The training state in a fit checkpoint; :func:`load_model` skips it.
CKPT_KEY = "__checkpoint__"

Shape = tuple[int, ...]
Expected = dict[str, tuple[Shape, np.dtype]]  # array name -> (shape, dtype)


# ---------------------------------------------------------------------------------------
# Writing model files


def save_model(model: BaseModel, path: str | os.PathLike[str]) -> None:
    """Write the architecture and weights of ``model`` to one ``.npz`` file, atomically.

    The file is written under a temporary name in the same directory, flushed to disk,
    then renamed over ``path``: a crash or error mid-save leaves any previous file at
    ``path`` intact. ``path`` is used exactly as given (no suffix is added).
    """
    atomic_savez(os.fspath(path), file_arrays(model))


def file_arrays(model: BaseModel) -> dict[str, np.ndarray]:
    """Return the entries of the model file of ``model``, in the order they are written."""
    if len(model.layers) > MAX_FILE_LAYERS:
        raise ValueError(
            f"the model has {len(model.layers):,} layers; a model file may hold at most "
            f"{MAX_FILE_LAYERS:,} (load would refuse this one)"
        )
    try:
        architecture = json.dumps(model.get_config())
    except TypeError as exc:
        raise ValueError(f"the architecture is not JSON-serializable: {exc}") from None
    arrays = {
        _FORMAT_KEY: np.array(FORMAT_VERSION, dtype=np.int64),
        _ARCH_KEY: np.array(architecture),  # a numpy unicode scalar, never an object
    }
    arrays.update(model._state_arrays())
    return arrays


def atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as :func:`numpy.savez` does, all or nothing."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as for a plain open().
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:  # name the caller's path, not the hidden temporary file
        reason = f"no directory {directory!r}" if not os.path.isdir(directory) else exc.strerror
        raise type(exc)(exc.errno, f"cannot save to {path!r}: {reason}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            # The keys are array names, never savez's own keyword allow_pickle.
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # persist the rename itself (POSIX)
        with contextlib.suppress(OSError):
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)


# ---------------------------------------------------------------------------------------
# Reading model files
#
# A file is read in an order that lets nothing in it cost more than the architecture it
# declares needs:
#   1. the zip directory: every name once (no "k" beside "k.npy"), and the sizes it
#      declares against the size of the file itself;
#   2. the small metadata entries (format version, architecture, a checkpoint's training
#      state), each one capped;
#   3. the layers, at most MAX_FILE_LAYERS of them, built under an allocation budget;
#   4. the names of the array entries against those the architecture (and a checkpoint's
#      optimizer state) implies, then each one's .npy header (shape, dtype) and the size
#      the directory declares for it;
#   5. only then the array data, with allow_pickle=False.

#: Most bytes of a text entry (the architecture, a checkpoint's training state), stored
#: as UTF-32: 4M characters, 400 per layer at the layer cap.
_MAX_TEXT_BYTES = 16 << 20
#: Most the entries may declare uncompressed: this many times the file's size, plus
#: _EXPANSION_SLACK bytes. fastcnn stores arrays uncompressed (ratio 1) and deflate
#: shrinks float weights by about 10%, but a deflated run of zeros expands a thousandfold:
#: that is how a small file would ask for gigabytes.
_MAX_EXPANSION = 8
_EXPANSION_SLACK = 1 << 20
#: Most optimizer arrays per parameter in a checkpoint (Adam keeps 2, SGD's momentum 1).
_MAX_STATE_ARRAYS = 4
#: Elements the layers may allocate beyond what the file's array entries declare, so that
#: a merely mismatched file gets the precise "must have shape" message instead.
_LOAD_SLACK = 1 << 22

# What reading a damaged archive can raise: zipfile also raises NotImplementedError (a
# flipped compression or flag field) and RuntimeError ("encrypted"), both RuntimeErrors.
_READ_ERRORS = (
    ValueError, OSError, EOFError, KeyError, RuntimeError, OverflowError, zipfile.BadZipFile,
    zlib.error,
)  # fmt: skip
_META_KEYS = (_FORMAT_KEY, _ARCH_KEY, CKPT_KEY)


class ModelFile:
    """A model file open for reading, in the order above; a context manager.

    Opening reads steps 1 and 2: ``config`` (the architecture) and ``meta`` (a
    checkpoint's training state, None in a plain model file). :meth:`build`,
    :meth:`check` and :meth:`read` do steps 3 to 5.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._zip: zipfile.ZipFile | None = None
        self._file = open(name, "rb")  # closed by close(), on error too
        try:
            self._zip = self._open_zip()
            self._entries = self._directory()
            self._check_sizes()
            self._check_version()
            self.config = self._json(_ARCH_KEY, "architecture")
            self.meta = self._json(CKPT_KEY, "training state") if self._has(CKPT_KEY) else None
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> ModelFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        self._file.close()

    @property
    def _opened(self) -> zipfile.ZipFile:
        assert self._zip is not None, "__init__ opens the archive before any read"
        return self._zip

    def _has(self, key: str) -> bool:
        return key in self._entries

    # -- step 1: the zip directory ------------------------------------------------------

    def _open_zip(self) -> zipfile.ZipFile:
        magic = self._file.read(6)
        self._file.seek(0)
        if magic == b"\x93NUMPY":
            raise ValueError(f"{self.name!r} is not a fastcnn model file: it holds a single array")
        try:
            return zipfile.ZipFile(self._file)
        except _READ_ERRORS as exc:
            what = (
                "cannot be read as an .npz archive"
                if magic.startswith(b"PK")
                else "is not an .npz archive (fastcnn never loads pickled data)"
            )
            raise ValueError(
                f"{self.name!r} is not a fastcnn model file: it {what} "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def _directory(self) -> dict[str, zipfile.ZipInfo]:
        """Map each array name to its zip entry.

        An array stored twice, or as both ``k`` and ``k.npy`` (numpy's two spellings of
        one name), is refused: which one is read is undefined.
        """
        infos = self._opened.infolist()
        counts = collections.Counter(info.filename for info in infos)
        entries: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if counts[info.filename] > 1:
                raise ValueError(
                    f"{self.name!r}: the archive holds an entry named {info.filename!r} "
                    f"{counts[info.filename]} times"
                )
            key = info.filename.removesuffix(".npy")
            if key in entries:
                first, second = sorted((entries[key].filename, info.filename))
                raise ValueError(
                    f"{self.name!r}: entries {first!r} and {second!r} both hold the array {key!r}"
                )
            entries[key] = info
        if _FORMAT_KEY not in entries or _ARCH_KEY not in entries:
            raise ValueError(
                f"{self.name!r} is not a fastcnn model file: it has no {_FORMAT_KEY!r} / "
                f"{_ARCH_KEY!r} entries (found {sorted(entries)[:10]})"
            )
        return entries

    def _check_sizes(self) -> None:
        """Refuse entries that declare more data than the file can hold.

        Compressed, more than its size; uncompressed, more than _MAX_EXPANSION times it
        (a zip bomb).
        """
        length = os.fstat(self._file.fileno()).st_size
        infos = self._entries.values()
        stored = sum(info.compress_size for info in infos)
        if stored > length:
            raise ValueError(
                f"{self.name!r}: its entries declare {stored:,} bytes of data but the file "
                f"has {length:,} bytes (truncated, or entries that overlap)"
            )
        total = sum(info.file_size for info in infos)
        if total > _MAX_EXPANSION * length + _EXPANSION_SLACK:
            key, largest = max(self._entries.items(), key=lambda item: item[1].file_size)
            raise ValueError(
                f"{self.name!r}: entry {key!r} declares {largest.file_size:,} bytes "
                f"uncompressed, and all entries {total:,} bytes: more than {_MAX_EXPANSION} "
                f"times the file's {length:,} bytes, which no model file needs (a zip bomb?)"
            )

    # -- step 2: the metadata -----------------------------------------------------------

    def _check_version(self) -> None:
        shape, dtype = self._header(_FORMAT_KEY)
        if shape != () or dtype.kind not in "iu" or dtype.itemsize > 8:
            raise ValueError(
                f"{self.name!r}: malformed format version entry (shape {shape}, dtype {dtype})"
            )
        version = int(self._array(_FORMAT_KEY))
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{self.name!r} uses model file format {version}; this fastcnn reads format "
                f"{FORMAT_VERSION}"
                + (" (it was written by a newer fastcnn)" if version > FORMAT_VERSION else "")
            )

    def _json(self, key: str, what: str) -> Any:
        """Return the JSON document in the text entry ``key``."""
        shape, dtype = self._header(key)
        if shape != () or dtype.kind not in "US":
            raise ValueError(f"{self.name!r}: the {what} entry is not a string")
        if dtype.itemsize > _MAX_TEXT_BYTES:
            raise ValueError(
                f"{self.name!r}: entry {key!r} holds a string of {dtype.itemsize:,} bytes; a "
                f"model file's {what} may take at most {_MAX_TEXT_BYTES:,}"
            )
        text = self._array(key).item()
        try:
            return json.loads(text.decode() if isinstance(text, bytes) else text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"{self.name!r}: invalid {what}: {exc}") from None

    # -- steps 3 to 5: the layers and the arrays ----------------------------------------

    def build(self) -> BaseModel:
        """Build the model of the architecture, freshly initialized.

        Its layers may allocate little more than the array entries declare (checked in
        step 1).
        """
        from fastcnn.model import Sequential  # not at the top: fastcnn.model imports us

        declared = sum(
            info.file_size for key, info in self._entries.items() if not key.startswith(_META_KEYS)
        )
        budget = declared // 4 + _LOAD_SLACK  # 4 bytes: float32, the smallest element
        try:
            with allocation_budget(budget):
                if isinstance(self.config, dict) and self.config.get("kind") == GRAPH_KIND:
                    return graph_from_config(self.config)
                return Sequential(layers_from_config(self.config))
        except (ValueError, TypeError, RecursionError) as exc:
            raise ValueError(f"{self.name!r}: invalid architecture: {exc}") from None

    def check(self, expected: Expected) -> None:
        """Refuse unless the array entries are exactly ``expected``.

        Each must have that shape and dtype (in either byte order) in its header. Reads
        the headers only.
        """
        present = {key for key in self._entries if key not in _META_KEYS}
        missing, extra = sorted(expected.keys() - present), sorted(present - expected.keys())
        if missing or extra:
            raise ValueError(
                f"{self.name!r}: arrays do not match the architecture: missing {missing}, "
                f"unexpected {extra}"
            )
        for key, (shape, dtype) in expected.items():
            held_shape, held_dtype = self._header(key)
            if held_shape != shape or held_dtype.newbyteorder("=") != dtype:
                raise ValueError(
                    f"{self.name!r}: array {key!r} must have shape {shape} and dtype {dtype}, "
                    f"got {held_shape} {held_dtype}"
                )

    def read(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Return the arrays ``keys``, which :meth:`check` has accepted."""
        return {key: self._array(key) for key in keys}

    # -- one entry ----------------------------------------------------------------------

    def _corrupt(self, key: str, exc: BaseException) -> ValueError:
        return ValueError(
            f"{self.name!r}: entry {key!r} is truncated or corrupt ({type(exc).__name__}: {exc})"
        )

    def _header(self, key: str) -> tuple[Shape, np.dtype]:
        """Return the shape and dtype in the .npy header of entry ``key``.

        The header must describe exactly the size the zip directory declares for the
        entry. Reads the header only.
        """
        info = self._entries[key]
        try:
            with self._opened.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                header = f.tell()
        except _READ_ERRORS as exc:
            raise self._corrupt(key, exc) from exc
        if dtype.hasobject:
            raise ValueError(
                f"{self.name!r}: entry {key!r} holds pickled Python objects; fastcnn never "
                "loads those (unpickling can execute code)"
            )
        held = info.file_size - header
        declared = math.prod(shape) * dtype.itemsize
        if declared != held:
            raise self._corrupt(
                key,
                ValueError(
                    f"its header declares an array of shape {shape} and dtype {dtype} "
                    f"({declared:,} bytes) but it holds {held:,} bytes"
                ),
            )
        return shape, dtype

    def _array(self, key: str) -> np.ndarray:
        """Return the array in entry ``key``, whose header :meth:`_header` has accepted."""
        try:
            with self._opened.open(self._entries[key]) as f:
                return np.lib.format.read_array(f, allow_pickle=False)
        except _READ_ERRORS as exc:
            raise self._corrupt(key, exc) from exc


def expected_arrays(model: BaseModel, meta: dict[str, Any] | None) -> Expected:
    """Return the arrays a file of ``model`` holds, with their shapes and dtypes.

    That is the model's state and, with a checkpoint's training state ``meta``, the
    optimizer arrays that declares.
    """
    expected = {name: (a.shape, a.dtype) for name, a in model._state_arrays().items()}
    if meta is None:
        return expected
    try:
        slots = meta["optimizer"]["state"]
    except (KeyError, TypeError):
        raise ValueError("the training state has no optimizer state") from None
    params = model.parameters()
    if not isinstance(slots, list) or len(slots) != len(params):
        count = len(slots) if isinstance(slots, list) else repr(slots)[:50]
        raise ValueError(
            f"it holds optimizer state for {count} parameters, the architecture has {len(params)}"
        )
    for i, (slot, (param, _)) in enumerate(zip(slots, params, strict=True)):
        kinds = slot.values() if isinstance(slot, dict) else None
        if kinds is None or any(kind not in ("array", None) for kind in kinds):
            raise ValueError(f"malformed optimizer state for parameter {i}: {str(slot)[:100]}")
        keys = [key for key, kind in slot.items() if kind == "array"]
        if len(keys) > _MAX_STATE_ARRAYS:
            raise ValueError(
                f"the training state declares {len(keys)} arrays for parameter {i}; an "
                f"optimizer keeps at most {_MAX_STATE_ARRAYS} per parameter"
            )
        for key in keys:
            expected[f"{CKPT_KEY}.optimizer.{i}.{key}"] = (param.shape, param.dtype)
    return expected


def load_model(path: str | os.PathLike[str]) -> BaseModel:
    """Load a model written by :func:`~fastcnn.saving.save_model` (or a ``fit`` checkpoint).

    :func:`fastcnn.load` is this function. Nothing in the file is executed: arrays are
    read with ``allow_pickle=False`` and layers are rebuilt only from classes in
    :data:`fastcnn.layers.LAYER_REGISTRY`. Before any array data is read, the names,
    shapes and dtypes of the file's entries are checked against its architecture, which
    may have at most 10,000 layers, and the sizes they declare against the size of the
    file: a small crafted file cannot make us allocate or decompress more than a few
    times its own size.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        If ``path`` cannot be opened.
    ValueError
        If the file is not a fastcnn model, is truncated or corrupt, contains a pickled
        object, has an unsupported format version, or its arrays do not match its
        architecture (names, shapes, dtypes), or it declares more data than it can hold
        (a zip bomb). The message names the file and the problem.
    """
    name = os.fspath(path)
    with ModelFile(name) as file:
        model = file.build()
        try:
            expected = expected_arrays(model, file.meta)
        except ValueError as exc:
            raise ValueError(f"{name!r}: invalid training state: {exc}") from None
        file.check(expected)
        state = file.read(model._state_arrays())  # a checkpoint's optimizer state is not
    try:
        model.load_state_dict(state)
    except ValueError as exc:
        raise ValueError(f"{name!r}: {exc}") from None
    return model
