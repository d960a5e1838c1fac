"""``fastcnn.show_config()`` and ``python -m fastcnn info``: what this installation runs on.

Version, backend in use, OpenMP and thread count, the BLAS that scipy links, and the
compiler and flags the extension was built with.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fastcnn
from fastcnn import _backend, _info

COMPILED = _backend._compiled is not None
needs_compiled = pytest.mark.skipif(
    not COMPILED, reason=f"compiled extension not importable: {_backend.backend_import_error()}"
)


def run_python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run a fresh interpreter on the fastcnn this session tests, outside the checkout."""
    root = str(Path(fastcnn.__file__).resolve().parent.parent)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("FASTCNN_BACKEND", "OMP_NUM_THREADS") and not k.startswith("GOMP_")
    }
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def shown(capsys) -> dict[str, str]:
    """show_config()'s output as {label: value}; labels are right-aligned in 20 columns."""
    fastcnn.show_config()
    return {
        line[:20].strip(): line[22:].strip()
        for line in capsys.readouterr().out.splitlines()
        if line[20:22] == ": "
    }


def test_show_config_reports_version_backend_and_threads(capsys):
    lines = shown(capsys)
    assert lines["fastcnn"] == fastcnn.__version__
    assert lines["python"] == sys.version.split()[0]
    assert lines["backend"] == fastcnn.get_backend()
    assert lines["num_threads"] == str(fastcnn.get_num_threads())


def test_config_agrees_with_the_public_api():
    config = _info.config()
    assert config["fastcnn"] == fastcnn.__version__
    assert config["backend"] == fastcnn.get_backend()
    assert config["available_backends"] == list(fastcnn.available_backends())
    assert config["num_threads"] == fastcnn.get_num_threads() >= 1


@needs_compiled
def test_show_config_reports_openmp_compiler_and_flags(capsys):
    openmp = bool(_backend._compiled.openmp.openmp_enabled())
    build = _info.config()["build"]
    assert build["openmp"] is openmp
    assert build["compiler"] and build["compiler"] != "unknown"
    assert build["flags"], "the build flags were not recorded"
    assert ("-O" in build["flags"]) or ("/O" in build["flags"])
    assert isinstance(build["debug_checks"], bool)
    if not openmp:
        assert fastcnn.get_num_threads() == 1
    lines = shown(capsys)
    assert lines["compiled_extension"] == "available"
    assert lines["openmp"] == str(openmp)
    assert build["compiler"] in lines["build"] and build["flags"] in lines["build"]


@needs_compiled
def test_show_config_lists_the_blas_scipy_links(capsys):
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")
    import scipy.linalg  # noqa: F401  (the kernels' GEMM is scipy's BLAS: loaded by now)

    loaded = {
        lib["filepath"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"
    }
    assert loaded, "threadpoolctl sees no BLAS although scipy.linalg is imported"
    blas = _info.config()["blas"]
    missing = [path for path in loaded if not any(path in line for line in blas)]
    assert not missing, f"BLAS libraries loaded but not reported: {missing}; reported {blas}"
    fastcnn.show_config()
    out = capsys.readouterr().out
    assert all(path in out for path in loaded)


def test_show_config_without_the_extension_says_why(tmp_path):
    proc = run_python(
        [
            "-c",
            textwrap.dedent(
                """
                import sys, warnings
                sys.modules["fastcnn._kernels._conv"] = None  # as if the .so were missing
                warnings.simplefilter("ignore")
                import fastcnn
                fastcnn.show_config()
                """
            ),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "backend: numpy" in proc.stdout
    assert "compiled_extension: not available (" in proc.stdout
    assert "num_threads:" in proc.stdout and "blas:" in proc.stdout


def test_info_main_without_timing(capsys):
    assert _info.main(["--no-timing"]) == 0
    out = capsys.readouterr().out
    assert f"fastcnn: {fastcnn.__version__}" in out
    assert "conv2d forward" not in out


def test_info_main_times_conv2d_on_each_backend(capsys):
    assert _info.main([]) == 0
    out = capsys.readouterr().out
    for name in fastcnn.available_backends():
        assert f"{name}:" in out and " ms" in out
    if len(fastcnn.available_backends()) == 2:
        assert "speedup:" in out


def test_python_m_fastcnn_info(tmp_path):
    if importlib.util.find_spec("fastcnn.__main__") is None:
        pytest.skip("fastcnn/__main__.py does not exist yet: `python -m fastcnn info` is unwired")
    proc = run_python(["-m", "fastcnn", "info", "--no-timing"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"fastcnn: {fastcnn.__version__}" in proc.stdout
    assert f"backend: {fastcnn.get_backend()}" in proc.stdout
