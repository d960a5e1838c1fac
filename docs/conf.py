"""Sphinx configuration of fastcnn's documentation site.

Build, from the repository root, after ``pip install ".[docs]"``:

    make -C docs html

which runs ``python -m sphinx -b html -W -n --keep-going . _build/html`` in docs/:
``-W`` makes every warning an error and ``-n`` (nitpicky) reports every cross-reference
that does not resolve. The API pages document the fastcnn that ``import fastcnn`` finds
from docs/, the installed one; the gallery runs examples/ on a tiny budget.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import fastcnn

DOCS = Path(__file__).resolve().parent
if fastcnn.backend_import_error() is not None:
    # Typically the source tree, found first because Sphinx was started in the checkout
    # root (python -m puts the current directory first on sys.path). Its API is the same,
    # but the gallery would time the numpy fallback, and benchmark_vs_numpy.py fails
    # without the compiled backend.
    raise RuntimeError(
        f"the docs need a fastcnn with its compiled kernels, but {fastcnn.__file__} has "
        f'none ({fastcnn.backend_import_error()}): pip install ".[docs]", then build '
        "with `make -C docs html` (Sphinx started in docs/, not in the checkout root)"
    )
sys.path.insert(0, str(DOCS / "_ext"))  # gallery_helpers

project = "fastcnn"
author = "the fastcnn developers"
copyright = "the fastcnn developers"  # noqa: A001 (Sphinx's name for it)
release = fastcnn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "SANITIZERS.md", "images", "_ext"]
html_theme = "alabaster"
html_title = f"fastcnn {release}"
html_static_path: list[str] = []

# -- API pages ---------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "signature"
# Defaults as written in the source (dtype=np.float32), not their repr (<class ...>), which
# would also stop Sphinx from parsing the signature.
autodoc_preserve_defaults = True
# Names that modules import only under TYPE_CHECKING appear bare in their annotations.
autodoc_type_aliases = {"Figure": "matplotlib.figure.Figure"}
autodoc_member_order = "bysource"
# numpydoc renders Parameters/Returns itself; the class template lists the members, so
# numpydoc's own member tables (which would need stub pages of their own) stay off.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# numpydoc reports what it cannot parse (an unknown section, a bad underline) as a Python
# warning, not a Sphinx one, and drops the text: make it an error so -W is complete.
warnings.filterwarnings("error", category=UserWarning, module="numpydoc")
# Except the Shapes sections, which _shapes_to_notes below moves into Notes before numpydoc
# renders a docstring; numpydoc's signature hook also parses the raw docstring, for the
# signature only.
warnings.filterwarnings("ignore", message="Unknown section Shapes", category=UserWarning)


def _shapes_to_notes(app, what, name, obj, options, lines: list[str]) -> None:
    """Render a docstring's "Shapes" section at the head of its Notes.

    fastcnn's docstrings give each op's and layer's output-size formula in a section of
    its own (as PyTorch's do), which numpydoc does not know and would drop. Runs before
    numpydoc (priority 400 < its 500) on the lines autodoc extracted.
    """
    headings = [
        i
        for i in range(len(lines) - 1)
        if lines[i].strip() and set(lines[i + 1].strip()) == {"-"} and not lines[i][0].isspace()
    ]
    titles = {lines[i].strip(): i for i in headings}
    if "Shapes" not in titles:
        return
    start = titles["Shapes"]
    end = next((i for i in headings if i > start), len(lines))
    body = lines[start + 2 : end]
    while body and not body[-1].strip():
        body.pop()
    del lines[start:end]
    paragraph = [f"**Shapes.** {body[0]}", *body[1:], ""] if body else []
    if "Notes" in titles:
        at = titles["Notes"] + 2 - (end - start if titles["Notes"] > start else 0)
        lines[at:at] = paragraph
    else:
        lines[start:start] = ["Notes", "-----", *paragraph]


# -- nitpicky: every internal reference must resolve -------------------------------------
# No intersphinx: the build must work offline (CI reaches PyPI only), so references to
# other projects' objects and to the standard library cannot resolve. Only those are
# ignored here, by their package name, as they appear in type hints, base classes and
# docstrings; a reference to a fastcnn name that does not resolve is still an error.
_EXTERNAL = (
    "numpy|np|npt|scipy|sklearn|matplotlib|threadpoolctl|joblib|dask|distributed|dask_ml"
    "|torch|os|pathlib|collections|typing|types|contextvars|threading|concurrent|asyncio"
    "|multiprocessing|signal|warnings"
)
nitpick_ignore_regex = [
    (r"py:.*", rf"({_EXTERNAL})(\..*)?"),
    # numpy's names as the annotations spell them, unqualified.
    ("py:class", r"ndarray|ArrayLike|NDArray|DTypeLike"),
    # matplotlib's Figure: fastcnn.plotting imports it only under TYPE_CHECKING, so where
    # an annotation cannot be evaluated (it also names fastcnn classes imported that way)
    # the signature shows the bare name.
    ("py:class", r"Figure"),
]

# -- gallery -----------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Every example except lenet5_mnist.py runs at build time, on the budget that
    # gallery_helpers.TINY_BUDGETS gives it; lenet5_mnist.py downloads MNIST (about 15 MB)
    # on first use, so it is shown but not run.
    "filename_pattern": r"/(?!lenet5_mnist\.py$)[^/]+\.py$",
    "reset_argv": "gallery_helpers.reset_argv",
    "reset_modules": ("matplotlib", "gallery_helpers.exit_guard"),
    "reset_modules_order": "both",
    "image_scrapers": ("matplotlib", "gallery_helpers.png_scraper"),
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
}


# -- every public name has a page --------------------------------------------------------
# The modules whose __all__ the API reference covers. A name counts as documented when it
# has an entry under its module, or under `fastcnn` when the package exports the same
# object (fastcnn.Sequential for fastcnn.model.Sequential).
PUBLIC_MODULES = [
    "fastcnn",
    "fastcnn.functional",
    "fastcnn.layers",
    "fastcnn.model",
    "fastcnn.graph",
    "fastcnn.optim",
    "fastcnn.losses",
    "fastcnn.models",
    "fastcnn.estimator",
    "fastcnn.datasets",
    "fastcnn.plotting",
    "fastcnn.saving",
    "fastcnn.callbacks",
]


def _undocumented(domain) -> list[str]:
    import importlib

    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if name == "__version__" or f"{module_name}.{name}" in domain.modules:
                continue
            exported = getattr(fastcnn, name, None) is getattr(module, name)
            if f"{module_name}.{name}" in domain.objects or (
                exported and f"fastcnn.{name}" in domain.objects
            ):
                continue
            missing.append(f"{module_name}.{name}")
    return missing


def _check_api_coverage(app, env) -> None:
    from sphinx.util import logging

    missing = _undocumented(env.get_domain("py"))
    if missing:
        logging.getLogger(__name__).warning(
            "public names without an API page (add them to docs/api/): %s", ", ".join(missing)
        )


def _skip_member(app, what, name, obj, skip, options):
    # scikit-learn generates set_{fit,score,...}_request on the estimator for its
    # metadata routing; they are documented, with references into scikit-learn's own
    # site, by scikit-learn.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
    app.connect("autodoc-process-docstring", _shapes_to_notes, priority=400)
    app.connect("env-check-consistency", _check_api_coverage)
