#!/usr/bin/env python
"""Run fastcnn's benchmark suite: ``python benchmarks/run.py [options]``.

A thin launcher for :func:`fastcnn._bench.main` (the same suite as ``python -m fastcnn
bench``) that writes its results next to this file, in ``benchmarks/results/``, unless
``--out`` says otherwise. See ``benchmarks/README.md`` for the options and the columns.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

try:
    from fastcnn._bench import main
except ImportError:  # a source checkout that was never installed: use it in place
    sys.path.insert(0, str(HERE.parent))
    from fastcnn._bench import main

if __name__ == "__main__":
    sys.exit(
        main(
            sys.argv[1:],
            default_out=str(HERE / "results"),
            command="python benchmarks/run.py",
        )
    )
