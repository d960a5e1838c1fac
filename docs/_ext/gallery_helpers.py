"""sphinx-gallery hooks for fastcnn's examples: tiny budgets, exit status, PNG pictures.

The examples are command-line scripts (``python examples/NAME.py --options``); the gallery
runs them in the Sphinx process. conf.py names these hooks as strings
(``"gallery_helpers.reset_argv"``), so the Sphinx configuration stays picklable.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from sphinx_gallery.scrapers import figure_rst

# Where examples write their pictures during the build; the scraper moves them into the
# gallery. Outside the checkout, so a build never leaves files in examples/.
# Removed when the Sphinx process exits.
_PICTURES_DIR = tempfile.TemporaryDirectory(prefix="fastcnn-gallery-")
PICTURES = Path(_PICTURES_DIR.name)

# Each executed example's command-line options: the smallest budget that still shows
# what the example is about (tests/test_examples.py runs the same budgets). Every example
# that conf.py executes needs an entry (lenet5_mnist.py, which downloads MNIST, is not
# executed).
TINY_BUDGETS = {
    "quickstart_digits.py": ["--epochs", "3"],
    "sklearn_pipeline.py": ["--max-iter", "2", "--cv", "2"],
    "classic_filters.py": ["--downsample", "4", "--out", str(PICTURES / "classic_filters.png")],
    "benchmark_vs_numpy.py": ["--quick", "--repeats", "2"],
    "shapes_vgg.py": ["--n-train", "800", "--epochs", "3"],
}

_real_exit = sys.exit


def reset_argv(gallery_conf: dict, script_vars: dict) -> list[str]:
    """The options ``sys.argv[1:]`` holds while an example runs."""
    name = Path(script_vars["src_file"]).name
    if name not in TINY_BUDGETS:
        # Run as written, an example may take minutes: the build's time is CI's.
        raise RuntimeError(f"{name}: give it a tiny budget in docs/_ext/gallery_helpers.py")
    return list(TINY_BUDGETS[name])


def _exit_in_gallery(status: object = None) -> None:
    """``sys.exit`` while an example runs: success ends it, a failure fails the build.

    Every example ends with ``sys.exit(main())`` or ``main()``; SystemExit would stop
    Sphinx itself, since sphinx-gallery catches only Exception, so success returns
    (nothing follows that line) and any other status raises.
    """
    if status not in (None, 0):
        raise RuntimeError(f"the example exited with status {status!r}")


def exit_guard(gallery_conf: dict, fname: str | None, when: str) -> None:
    """A ``reset_modules`` hook: swap ``sys.exit`` in before an example, back after it."""
    sys.exit = _exit_in_gallery if when == "before" else _real_exit


def png_scraper(block, block_vars: dict, gallery_conf: dict) -> str:
    """Put the PNG files an example wrote into :data:`PICTURES` into its gallery page."""
    written = sorted(PICTURES.glob("*.png"))
    paths = []
    for source, target in zip(written, block_vars["image_path_iterator"], strict=False):
        shutil.move(source, target)
        paths.append(target)
    return figure_rst(paths, gallery_conf["src_dir"])
