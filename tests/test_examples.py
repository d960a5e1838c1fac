"""Every script in examples/ runs as written, on a tiny budget, and says what it should.

The scripts run as subprocesses, as a reader would run them, from the scratch directory
conftest.py switches to, and with this process's ``sys.path`` so they import the same
fastcnn as the rest of the suite. When the suite runs outside the checkout (CI copies
tests/ into a temporary directory to test an installed wheel) examples/ must be copied
beside it, or these tests skip, saying so.
"""

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = [
    "quickstart_digits.py",
    "lenet5_mnist.py",
    "sklearn_pipeline.py",
    "classic_filters.py",
    "benchmark_vs_numpy.py",
    "shapes_vgg.py",
]

# The status the examples document for "a needed resource is unavailable" (sysexits.h).
EXIT_UNAVAILABLE = 69

pytestmark = pytest.mark.skipif(
    not EXAMPLES.is_dir(),
    reason=f"no examples/ beside the tests (looked for {EXAMPLES}): the test suite was "
    "copied out of the checkout without it",
)


def run_example(script: str, *args: str, env: dict | None = None, timeout: float = 120):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def check_ok(result) -> str:
    assert result.returncode == 0, f"exit status {result.returncode}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result.stdout


def accuracy_in(stdout: str) -> float:
    match = re.search(r"^test accuracy: (\d\.\d+)$", stdout, re.MULTILINE)
    assert match, f"no 'test accuracy: ...' line in:\n{stdout}"
    return float(match.group(1))


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_is_documented(script):
    source = (EXAMPLES / script).read_text(encoding="utf-8")
    tree = ast.parse(source)
    docstring = ast.get_docstring(tree)
    assert docstring and f"python examples/{script}" in docstring
    assert 'if __name__ == "__main__":' in source
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert f"`python examples/{script}" in readme


def test_readme_lists_every_example():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SCRIPTS)


def test_quickstart_digits():
    stdout = check_ok(run_example("quickstart_digits.py", "--epochs", "3"))
    assert "Total params: 6,090" in stdout
    # 3 epochs reach 0.94-0.95 on the 360 test digits; the floor leaves room for thread
    # counts and BLAS builds that round differently.
    assert accuracy_in(stdout) > 0.85


def _write_mnist_standin(path: Path) -> None:
    """A Keras-style mnist.npz made from the 8x8 digits: each blown up to 24x24 and
    padded to 28x28, uint8 0..255 as MNIST."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.kron(digits.images, np.ones((3, 3)))
    images = np.pad(images, ((0, 0), (2, 2), (2, 2))) * (255 / 16)
    images, labels = images.astype(np.uint8), digits.target
    np.savez(
        path,
        x_train=images[:1400],
        y_train=labels[:1400],
        x_test=images[1400:],
        y_test=labels[1400:],
    )


def test_lenet5_mnist_trains(tmp_path):
    # load_mnist reads <data_home>/mnist.npz before going to OpenML, so the training part
    # of the script is tested on any machine, network or not.
    _write_mnist_standin(tmp_path / "mnist.npz")
    result = run_example(
        "lenet5_mnist.py", "--data-home", str(tmp_path), "--max-train", "500", "--epochs", "1"
    )
    stdout = check_ok(result)
    assert "trained 1 epoch(s) on 500 images" in stdout
    assert accuracy_in(stdout) > 0.3  # 0.76 measured; chance is 0.1


def test_lenet5_mnist_offline_message(tmp_path):
    # A proxy that refuses connections: offline on any machine, and fast to fail.
    proxy = "http://127.0.0.1:9"
    env = {"https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}
    result = run_example("lenet5_mnist.py", "--data-home", str(tmp_path / "empty"), env=env)
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert "MNIST is not available" in result.stderr
    assert "mnist.npz" in result.stderr and "--data-home" in result.stderr
    assert "Traceback" not in result.stderr
    # scikit-learn's per-retry warnings are silenced: one clear message, nothing else.
    assert "Retrying" not in result.stderr


def test_lenet5_mnist_real_data():
    # As a reader runs it: scikit-learn's default data directory, where a previous run
    # may already have cached MNIST.
    result = run_example("lenet5_mnist.py", "--max-train", "500", "--epochs", "1", timeout=600)
    if result.returncode == EXIT_UNAVAILABLE and "MNIST is not available" in result.stderr:
        cause = next(
            (line for line in result.stderr.splitlines() if "could not be downloaded" in line),
            result.stderr.strip(),
        )
        reason = cause.split(". ")[0]
        pytest.skip(f"MNIST cannot be downloaded here and is not cached ({reason})")
    stdout = check_ok(result)
    assert "train (500, 1, 28, 28), test (10000, 1, 28, 28)" in stdout
    assert accuracy_in(stdout) > 0.3


def test_sklearn_pipeline():
    stdout = check_ok(run_example("sklearn_pipeline.py", "--max-iter", "2", "--cv", "2"))
    match = re.search(r"^best params: (\{.*\})$", stdout, re.MULTILINE)
    assert match, stdout
    best = ast.literal_eval(match.group(1))
    assert best["cnn__learning_rate_init"] in (1e-3, 3e-3)
    assert best["cnn__batch_size"] in (32, 128)
    assert len(re.findall(r"^\s+[0-9.e-]+\s+\d+\s+[0-9.]+ \+- [0-9.]+$", stdout, re.M)) == 4
    assert accuracy_in(stdout) > 0.85  # 0.99 measured with 2 epochs a fit


def test_classic_filters():
    result = run_example("classic_filters.py", "--downsample", "4", "--out", "filters.png")
    if result.returncode == EXIT_UNAVAILABLE and "Pillow" in result.stderr:
        pytest.skip("Pillow is not installed, so scikit-learn cannot read the sample photo")
    stdout = check_ok(result)
    assert "grayscale 106x160" in stdout
    differences = dict(re.findall(r"^(\w[\w ]*?)\s+(\d\.\d\de[+-]\d\d)$", stdout, re.M))
    assert set(differences) == {"sharpen", "horizontal edges", "vertical edges", "box blur"}
    assert all(float(d) < 1e-5 for d in differences.values()), differences
    assert "all filters match scipy.signal.correlate2d" in stdout
    picture = Path("filters.png")
    if importlib.util.find_spec("matplotlib") is None:
        assert 'pip install "fastcnn[plot]"' in stdout and not picture.exists()
    else:
        assert "wrote filters.png" in stdout
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert picture.stat().st_size > 10_000


@pytest.mark.parametrize("missing", ["PIL", "matplotlib"])
def test_classic_filters_without_optional_dependency(tmp_path, missing):
    # A package of that name which fails to import, first on the path, stands in for an
    # environment without it.
    blocker = tmp_path / "blocked" / missing
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(f"raise ImportError('{missing} is blocked')\n")
    path = os.pathsep.join([str(tmp_path / "blocked"), *sys.path])
    result = run_example("classic_filters.py", "--downsample", "4", env={"PYTHONPATH": path})
    assert "Traceback" not in result.stderr
    if missing == "PIL":
        assert result.returncode == EXIT_UNAVAILABLE
        assert "needs Pillow" in result.stderr and "pip install" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert "all filters match" in result.stdout
        assert 'the picture needs matplotlib: pip install "fastcnn[plot]"' in result.stdout
        assert not Path("classic_filters.png").exists()


def test_benchmark_vs_numpy():
    stdout = check_ok(run_example("benchmark_vs_numpy.py", "--quick", "--repeats", "2"))
    rows = re.findall(
        r"^(conv|maxpool) .*?\s([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)x\s+(\S+)$", stdout, re.M
    )
    assert len(rows) == 3, stdout
    for _, compiled_ms, numpy_ms, speedup, difference in rows:
        assert float(compiled_ms) > 0 and float(numpy_ms) > 0
        # Timings are noisy on a shared machine: check the arithmetic, not a speed.
        assert float(speedup) == pytest.approx(float(numpy_ms) / float(compiled_ms), rel=0.1)
        assert float(difference) < 1e-5
    assert "results agree" in stdout


def test_shapes_vgg():
    stdout = check_ok(run_example("shapes_vgg.py", "--n-train", "800", "--epochs", "3"))
    assert "RandomCrop(size=(32, 32), padding=(3, 3))" in stdout
    assert "Total params: 27,908" in stdout and "trained 3 epoch(s) on 800 images" in stdout
    assert accuracy_in(stdout) > 0.35  # 0.52 measured; chance is 0.25


def test_shapes_vgg_small():
    stdout = check_ok(
        run_example("shapes_vgg.py", "--model", "vgg_small", "--n-train", "128", "--epochs", "1")
    )
    assert "Total params: 590,500" in stdout  # vgg_small with 4 classes
    assert 0.0 <= accuracy_in(stdout) <= 1.0
