"""Check which fastcnn an environment imports, and how it was built.

Usage: python .ci/check_install.py [--debug-checks {0,1}] [--openmp {0,1}]

Run it from outside the checkout, with the environment's python: it prints
``fastcnn.__file__`` and the configuration, and fails unless fastcnn is imported from that
environment's site-packages with the compiled backend active (and, when asked, built with
or without Cython's debug checks and OpenMP).
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import warnings
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--debug-checks", choices=["0", "1"])
    parser.add_argument("--openmp", choices=["0", "1"])
    args = parser.parse_args()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastcnn
    from fastcnn import _info

    location = Path(fastcnn.__file__).resolve()
    site_packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    print(f"fastcnn.__file__ = {fastcnn.__file__}")
    fastcnn.show_config()

    problems = [
        f"importing fastcnn warned: {w.message}"
        for w in caught
        if issubclass(w.category, fastcnn.FastCNNWarning)
    ]
    if site_packages not in location.parents:
        problems.append(f"fastcnn was imported from {location}, not from {site_packages}")
    if fastcnn.get_backend() != "cython":
        problems.append(
            f"backend is {fastcnn.get_backend()!r}, not 'cython': {fastcnn.backend_import_error()}"
        )
    else:
        build = _info.config()["build"]
        for option, key in (("debug_checks", "debug_checks"), ("openmp", "openmp")):
            wanted = getattr(args, option)
            if wanted is not None and build[key] != (wanted == "1"):
                problems.append(f"expected {key}={wanted == '1'}, the build says {build}")
    for problem in problems:
        print(f"check_install: ERROR: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
