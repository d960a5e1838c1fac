"""Types: ``mypy``, run as a contributor runs it, passes on the package.

The configuration is ``[tool.mypy]`` in ``pyproject.toml`` (strict on ``fastcnn/``, the
compiled kernels typed by their ``.pyi`` stubs, which tests/test_packaging.py checks
against the built modules). The check needs the source tree: CI also runs the suite from
a copy of ``tests/`` against an installed wheel, and there it is skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _checkout_with_mypy_config() -> bool:
    """Whether the tests run from the checkout: its pyproject.toml configures mypy and
    the package sources are beside it (a copied suite carries pyproject.toml only)."""
    pyproject = ROOT / "pyproject.toml"
    if not (pyproject.is_file() and (ROOT / "fastcnn" / "__init__.py").is_file()):
        return False
    return any(line.strip() == "[tool.mypy]" for line in pyproject.read_text().splitlines())


def test_mypy_passes_on_the_package():
    pytest.importorskip(
        "mypy", reason="mypy is not installed (it is in the test extras: '.[test]')"
    )
    if not _checkout_with_mypy_config():
        pytest.skip(f"not run from the checkout: no fastcnn/ and [tool.mypy] config in {ROOT}")
    # Only the interpreter's environment matters to mypy; FASTCNN_* settings do not.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTCNN_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"],  # no arguments: the files and flags of the config
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"mypy failed:\n{proc.stdout}{proc.stderr}"
    assert "Success: no issues found" in proc.stdout, proc.stdout
