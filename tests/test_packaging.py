"""Packaging: the stubs match the compiled modules, and sdist and wheel hold what they should.

* ``.pyi`` stubs against the built extension modules, with ``mypy.stubtest``.
* The installed distribution's files (its wheel's RECORD): compiled modules, stubs and
  ``py.typed``, and no C, Cython sources or build scaffolding. Skipped for an editable
  install, whose files are the source tree.
* The sdist and wheel archives themselves, when ``FASTCNN_SDIST`` / ``FASTCNN_WHEEL`` name
  them (``.ci/run`` does, for the artifacts it builds and tests).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import fastcnn
from fastcnn import _backend

# The compiled modules every build has; any further one must come with its stub too.
CORE_KERNELS = {
    "_activation", "_conv", "_elementwise", "_linear", "_loss", "_memory", "_norm", "_optim",
    "_pool", "_openmp", "_resample", "_pad", "_merge",
}  # fmt: skip
KERNELS_DIR = Path(fastcnn.__file__).parent / "_kernels"
COMPILED = _backend._compiled is not None
needs_compiled = pytest.mark.skipif(
    not COMPILED, reason=f"compiled extension not importable: {_backend.backend_import_error()}"
)

# Build inputs and by-products that belong in neither the wheel nor (but for .pyx/.pxd)
# the installed package.
SCAFFOLDING = re.compile(r"\.(c|cpp|h|o|obj|html|pyx|pxd|pxi|pyc)$")
COMPILED_MODULE = re.compile(r"fastcnn/_kernels/(_\w+)\.[^/]*\.(so|pyd)")
STUB = re.compile(r"fastcnn/_kernels/(_\w+)\.pyi")


def _stems(pattern: re.Pattern, names) -> set[str]:
    return {m.group(1) for n in names if (m := pattern.fullmatch(n))}


def _package_env() -> dict[str, str]:
    """Environment for a child interpreter that imports the fastcnn this session tests."""
    root = str(Path(fastcnn.__file__).resolve().parent.parent)
    env = {k: v for k, v in os.environ.items() if k not in ("FASTCNN_BACKEND",)}
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


# ---------------------------------------------------------------------------------------
# The package list


def test_every_subpackage_is_listed_for_the_build():
    # pyproject.toml names the packages one by one; a subpackage left out would be missing
    # from the wheel while every test run from a checkout still passed.
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    listed = re.search(r"^packages = \[(.*?)\]", pyproject.read_text(), re.M | re.S)
    assert listed, "pyproject.toml has no [tool.setuptools] packages list"
    names = set(re.findall(r'"([\w.]+)"', listed.group(1)))
    root = Path(fastcnn.__file__).resolve().parent
    found = {
        ".".join(("fastcnn", *init.parent.relative_to(root).parts))
        for init in root.rglob("__init__.py")
    }
    assert found <= names, f"packages missing from pyproject.toml: {sorted(found - names)}"


# ---------------------------------------------------------------------------------------
# Stubs


@needs_compiled
def test_stubs_match_the_compiled_modules(tmp_path):
    pytest.importorskip(
        "mypy.stubtest", reason="mypy is not installed (it is in the test extras: '.[test]')"
    )
    # Cython gives every module a __test__ dict (for doctests), and _openmp a __pyx_capi__
    # dict (the C functions the other kernels cimport); nothing to declare.
    allowlist = tmp_path / "stubtest-allowlist.txt"
    allowlist.write_text(r"fastcnn\._kernels\.\w+\.(__test__|__pyx_capi__)" + "\n")
    env = _package_env()
    env["MYPY_CACHE_DIR"] = str(tmp_path / "mypy-cache")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "--allowlist",
            str(allowlist),
            *(f"fastcnn._kernels.{p.stem}" for p in sorted(KERNELS_DIR.glob("_*.pyi"))),
        ],
        cwd=tmp_path,  # never the checkout: it would shadow the package under test
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"stubtest found differences:\n{proc.stdout}\n{proc.stderr}"


def test_every_compiled_module_has_a_stub_and_the_package_is_typed():
    stubs = {p.stem for p in KERNELS_DIR.glob("_*.pyi")}
    assert CORE_KERNELS <= stubs
    modules = {
        p.name.split(".")[0] for p in KERNELS_DIR.glob("_*.*") if p.suffix in (".so", ".pyd")
    }
    assert modules <= stubs, f"compiled modules without a stub: {sorted(modules - stubs)}"
    assert (Path(fastcnn.__file__).parent / "py.typed").is_file()


def _elf_section_names(path: Path) -> set[str] | None:
    """The section names of a 64-bit ELF file, or None for another format."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return None
    end = "<" if data[5] == 1 else ">"
    (table,) = struct.unpack_from(end + "Q", data, 0x28)
    entry, count, names_index = struct.unpack_from(end + "HHH", data, 0x3A)

    def name_and_offset(i: int) -> tuple[int, int]:
        name, _, _, _, offset = struct.unpack_from(end + "IIQQQ", data, table + i * entry)
        return name, offset

    strings = name_and_offset(names_index)[1]
    names = set()
    for i in range(count):
        start = strings + name_and_offset(i)[0]
        names.add(data[start : data.index(b"\0", start)].decode())
    return names


@needs_compiled
def test_release_builds_carry_no_debug_info():
    """Python's CFLAGS carry -g: without -g0 four-fifths of the compiled modules were
    debug info (9.9 MB of .so files against 2.0 MB)."""
    if _backend._compiled.openmp.build_info()["debug_checks"]:
        pytest.skip("a FASTCNN_DEBUG=1 build keeps its debug info on purpose")
    modules = [p for p in KERNELS_DIR.glob("_*.*") if p.suffix in (".so", ".pyd")]
    sections = {p.name: _elf_section_names(p) for p in modules}
    if not any(sections.values()):
        pytest.skip("the compiled modules are not ELF files (not Linux)")
    with_debug = [name for name, found in sections.items() if found and ".debug_info" in found]
    assert not with_debug, f"compiled with debug info: {with_debug}"


# ---------------------------------------------------------------------------------------
# What a wheel holds: the checks shared by the installed RECORD and the archive


def check_wheel_files(names: list[str]) -> None:
    """Assert that a wheel's file list (posix paths) ships runtime files only.

    An installed RECORD also lists the bytecode pip compiled and the console script
    (``../../../bin/fastcnn``); neither comes from the wheel, so both are left out here.
    """
    names = [n for n in names if "__pycache__/" not in n and not n.startswith("../")]
    package = [n for n in names if n.startswith("fastcnn/")]
    modules = [n for n in package if COMPILED_MODULE.fullmatch(n)]
    compiled, stubs = _stems(COMPILED_MODULE, modules), _stems(STUB, package)
    assert len(modules) == len(compiled), f"a kernel compiled twice: {modules}"
    assert CORE_KERNELS <= compiled, f"compiled modules missing: {CORE_KERNELS - compiled}"
    assert compiled == stubs, f"compiled modules {sorted(compiled)} vs stubs {sorted(stubs)}"
    assert "fastcnn/py.typed" in package
    assert "fastcnn/__init__.py" in package
    licences = [n for n in names if re.fullmatch(r"fastcnn-[^/]+\.dist-info/licenses/LICENSE", n)]
    assert licences, "the BSD-3-Clause licence requires its notice in the wheel"
    scaffolding = [n for n in package if SCAFFOLDING.search(n)]
    assert not scaffolding, f"build inputs or by-products in the wheel: {scaffolding}"
    allowed_top = re.compile(r"(fastcnn|fastcnn\.libs|fastcnn-[^/]+\.dist-info)/")
    stray = [n for n in names if not allowed_top.match(n)]
    assert not stray, f"files outside the package in the wheel: {stray}"


def test_installed_distribution_is_the_package_under_test_and_ships_runtime_files_only():
    try:
        dist = importlib.metadata.distribution("fastcnn")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fastcnn is not installed: running from a source tree")
    names = [str(f).replace("\\", "/") for f in dist.files or []]
    if not any(n.startswith("fastcnn/") for n in names):
        pytest.skip("editable install: the package files are the source tree, not a wheel's")
    installed = Path(dist.locate_file("fastcnn/__init__.py")).resolve()
    assert installed == Path(fastcnn.__file__).resolve(), (
        f"the tests import {fastcnn.__file__}, not the installed {installed}: run pytest "
        "from outside the checkout (or with the `pytest` command, not `python -m pytest`)"
    )
    check_wheel_files(names)


def test_version_comes_from_the_package_metadata():
    try:
        expected = importlib.metadata.version("fastcnn")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("fastcnn is not installed: no package metadata to compare with")
    assert fastcnn.__version__ == expected


# ---------------------------------------------------------------------------------------
# The built archives, when .ci/run (or a release script) names them


def _artifact(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"{variable} is not set (.ci/run sets it to the artifact it built)")
    path = Path(value)
    assert path.is_file(), f"{variable}={value} does not exist"
    return path


def test_wheel_archive_ships_runtime_files_only():
    wheel = _artifact("FASTCNN_WHEEL")
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if not n.endswith("/")]
    check_wheel_files(names)
    if "manylinux" in wheel.name and COMPILED and _backend._compiled.openmp.openmp_enabled():
        bundled = [n for n in names if n.startswith("fastcnn.libs/")]
        assert any("gomp" in n or "omp" in n for n in bundled), (
            f"a manylinux wheel must bundle its OpenMP runtime; fastcnn.libs/ has {bundled}"
        )


def test_sdist_ships_sources_and_no_generated_files():
    sdist = _artifact("FASTCNN_SDIST")
    with tarfile.open(sdist) as archive:
        members = [m.name for m in archive.getmembers() if m.isfile()]
    root = members[0].split("/", 1)[0]
    assert re.fullmatch(r"fastcnn-[^/]+", root), root
    names = {m.split("/", 1)[1] for m in members if "/" in m}
    required = {
        "PKG-INFO",
        "LICENSE",
        "pyproject.toml",
        "setup.py",
        "MANIFEST.in",
        "README.md",
        "fastcnn/__init__.py",
        "fastcnn/py.typed",
        "fastcnn/_kernels/_blas.pxd",
        "tests/conftest.py",
        "examples/quickstart_digits.py",  # tests/test_examples.py runs them
        "fastcnn/_kernels/src/direct_conv.c",  # the hand-written C kernels are sources
        "fastcnn/_kernels/src/direct_conv.h",
    }
    assert not required - names, f"missing from the sdist: {sorted(required - names)}"
    sources = _stems(re.compile(r"fastcnn/_kernels/(_\w+)\.pyx"), names)
    assert CORE_KERNELS <= sources, f"Cython sources missing: {CORE_KERNELS - sources}"
    assert sources == _stems(STUB, names), "every .pyx in the sdist needs its .pyi stub"
    generated = sorted(
        n for n in names
        if re.search(r"\.(c|so|pyd|dylib|dll|html|pyc)$", n) or n.startswith(("build/", "dist/"))
    )  # fmt: skip
    # The C under _kernels/src is written by hand; Cython's output is the .c beside a .pyx.
    generated = [n for n in generated if not n.startswith("fastcnn/_kernels/src/")]
    assert not generated, f"generated files in the sdist: {generated}"
