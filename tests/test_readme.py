"""The README's Python snippets run as written, and the user documents stay documents.

The snippets run in order, in one namespace. A snippet may be preceded by an HTML comment
``<!-- readme-test: needs MODULE -->`` (invisible on the rendered page): it runs whenever
MODULE imports and is reported as skipped, by name, where it does not.
"""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"

pytestmark = pytest.mark.skipif(
    not README.is_file(), reason="README.md is not beside tests/ (suite copied elsewhere)"
)

# The first lines a reader sees, and what .ci/run runs as the README's test command.
SETUP_COMMANDS = (
    "```bash\n"
    "pip install . && fastcnn train                 # build, then train a CNN on the bundled digits data\n"  # noqa: E501
    'pip install ".[test]" && pytest                # build with the test extras, then run the test suite\n'  # noqa: E501
    "```\n"
)  # fmt: skip
BLOCK = re.compile(r"(?:<!-- readme-test: needs ([\w.]+) -->\n)?```python\n(.*?)```", re.S)
# A run's clock time (22:39 UTC, 2026-12-07T22:20:33) or a tracker's word: lab-log matter
# that belongs in commit messages and benchmarks/results/, not in what users read.
TIMESTAMP = re.compile(r"\b\d{1,2}:\d{2}(:\d{2})?\s*(UTC|Z\b|[+-]\d{2}:?\d{2})|\bUTC\b")
TRACKER = re.compile(r"\b(issue|defect|session)s?\s*#?\d+", re.I)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _python_blocks() -> list[tuple[str | None, str]]:
    """Return each python block of the README with the module it needs (or None)."""
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(_text(README))]


def _missing(module: str | None) -> bool:
    return module is not None and importlib.util.find_spec(module) is None


def test_readme_has_snippets():
    assert len(_python_blocks()) >= 3


def test_readme_snippets_run_as_written(tmp_path):
    pytest.importorskip("matplotlib", reason="the plotting snippet needs matplotlib ([plot])")
    namespace: dict = {"__name__": "readme"}
    for i, (needs, code) in enumerate(_python_blocks()):
        if _missing(needs):
            continue  # reported by test_readme_snippets_have_what_they_need
        # Files the README writes land in the test's scratch directory (the current one).
        exec(compile(code, f"README.md python block {i}", "exec"), namespace)
    written = {p.name for p in tmp_path.iterdir()}
    assert {"digits.npz", "filters.png", "maps.png", "history.png", "confusion.png"} <= written


def test_readme_snippets_have_what_they_need():
    missing = sorted({needs for needs, _ in _python_blocks() if _missing(needs)})
    if missing:
        pytest.skip(f"README snippets not run: {', '.join(missing)} cannot be imported")


def test_readme_starts_with_the_setup_commands():
    text = _text(README)
    assert text.startswith("# fastcnn\n\n" + SETUP_COMMANDS), text[:300]


def test_readme_is_short_and_no_lab_log():
    text = _text(README)
    assert len(text) <= 12_000, f"README.md has {len(text):,} characters; at most 12,000"
    assert not TIMESTAMP.search(text), TIMESTAMP.search(text)
    assert not TRACKER.search(text), TRACKER.search(text)
    assert "fastcnn bench" not in text  # benchmarks run from the checkout: benchmarks/run.py


@pytest.mark.skipif(not CHANGELOG.is_file(), reason="CHANGELOG.md is not beside tests/")
def test_changelog_keeps_a_changelog():
    text = _text(CHANGELOG)
    versions = re.findall(r"^## \[(.+?)\](.*)$", text, re.M)
    assert versions and versions[0] == ("Unreleased", ""), versions[:1]
    for version, rest in versions[1:]:
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
        assert re.fullmatch(r" - (\d{4}-\d{2}-\d{2}|unreleased)", rest), (version, rest)
    sections = set(re.findall(r"^### (.+)$", text, re.M))
    allowed = {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    assert sections <= allowed, sections - allowed
    assert not TIMESTAMP.search(text), TIMESTAMP.search(text)
    assert not TRACKER.search(text), TRACKER.search(text)
