"""The README's Python snippets run as written, in order, in one namespace."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(
    not README.is_file(), reason="README.md is not beside tests/ (suite copied elsewhere)"
)


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def test_readme_has_snippets():
    assert len(_python_blocks()) >= 3


def test_readme_snippets_run_as_written(tmp_path):
    pytest.importorskip("matplotlib", reason="the plotting snippet needs matplotlib ([plot])")
    namespace: dict = {"__name__": "readme"}
    for i, block in enumerate(_python_blocks()):
        # Paths in the README are relative to the repository root; files it writes land
        # in the test's scratch directory (the current directory).
        code = block.replace('"benchmarks/results/', f'"{ROOT}/benchmarks/results/')
        exec(compile(code, f"README.md python block {i}", "exec"), namespace)
    written = {p.name for p in tmp_path.iterdir()}
    assert {"digits.npz", "filters.png", "maps.png", "history.png", "confusion.png"} <= written
