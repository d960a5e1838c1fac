"""Build script: declares the compiled kernels; all metadata lives in pyproject.toml.

Environment switches read at build time:

* ``FASTCNN_OPENMP=0``   build without OpenMP (kernels run single-threaded).
* ``FASTCNN_DEBUG=1``    Cython bounds/wraparound/initializedcheck on, ``-O0 -g``.
* ``FASTCNN_ANNOTATE=1`` write Cython's annotated HTML next to each ``.pyx``.
"""

import os
import sys
import tempfile
import textwrap

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNELS = [
    "_activation", "_conv", "_elementwise", "_linear", "_loss", "_memory", "_norm", "_optim",
    "_pool", "_openmp", "_resample", "_pad", "_merge",
]  # fmt: skip
# The C translation units (fastcnn/_kernels/src) each module links besides its .pyx. A
# unit linked into two modules is two copies with their own state (scratch.c's kept
# block); -fvisibility=hidden keeps their names out of each module's exported symbols.
C_SOURCES = {
    "_activation": ["activation", "simd"],
    "_conv": ["direct_conv", "batch_lanes", "transpose", "simd", "scratch"],
    "_linear": ["small_gemm", "transpose", "simd", "scratch"],
    "_memory": ["output_pool"],
    "_optim": ["optim", "simd"],
}
# Per-module C flags (GCC/Clang). _optim matches the numpy backend bit for bit: no
# fused multiply-adds; and sqrt may skip setting errno so that its loops vectorize.
# _conv's direct kernels run short register-blocked loops whose speed moved with where
# the code happened to land; loop heads on 64-byte lines make it repeatable (see
# docs/performance.md, "code placement").
EXTRA_FLAGS = {
    "_optim": ["-ffp-contract=off", "-fno-math-errno"],
    "_conv": ["-falign-loops=64"],
}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _openmp_flags(compiler) -> tuple[list[str], list[str]]:
    """Return (compile_args, link_args) enabling OpenMP, or empty lists if unavailable."""
    if os.environ.get("FASTCNN_OPENMP", "1").strip() == "0":
        print("fastcnn: FASTCNN_OPENMP=0, building without OpenMP (single-threaded kernels)")
        return [], []
    if sys.platform == "win32":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    source = textwrap.dedent(
        """
        #include <omp.h>
        int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }
        """
    )
    for cflags, lflags in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "check_openmp.c")
            with open(path, "w") as f:
                f.write(source)
            try:
                objects = compiler.compile([path], output_dir=tmp, extra_postargs=cflags)
                # distutils adds LDFLAGS to the link of extensions but not of executables;
                # pass them here too, so the probe finds e.g. Homebrew's libomp on macOS.
                compiler.link_executable(
                    objects,
                    "check_openmp",
                    output_dir=tmp,
                    extra_preargs=os.environ.get("LDFLAGS", "").split(),
                    extra_postargs=lflags,
                )
            except Exception:
                continue
        return cflags, lflags
    print(
        "fastcnn: WARNING: the compiler does not support OpenMP; "
        "building single-threaded kernels (set FASTCNN_OPENMP=0 to silence this check)"
    )
    return [], []


class BuildExt(build_ext):
    """Cythonize at build time and add OpenMP / optimization flags per compiler."""

    def finalize_options(self):
        from Cython.Build import cythonize

        debug = _flag("FASTCNN_DEBUG")
        directives = {
            "language_level": "3",
            "boundscheck": debug,
            "wraparound": debug,
            "initializedcheck": debug,
            "cdivision": True,
            "embedsignature": True,
        }
        self.distribution.ext_modules = cythonize(
            self.distribution.ext_modules,
            compiler_directives=directives,
            annotate=_flag("FASTCNN_ANNOTATE"),
            force=debug,
            nthreads=os.cpu_count() or 1,
        )
        super().finalize_options()
        if self.parallel is None:  # compile the modules side by side unless told (-j N)
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        cflags, lflags = _openmp_flags(self.compiler)
        debug = _flag("FASTCNN_DEBUG")
        if self.compiler.compiler_type == "msvc":
            opt = ["/Od", "/Zi"] if debug else ["/O2"]
        else:
            # Python's own CFLAGS carry -g: release modules would be four-fifths debug info.
            opt = ["-O0", "-g"] if debug else ["-O3", "-g0"]
        print(
            f"fastcnn: compiling {len(self.extensions)} kernel modules "
            f"({'debug' if debug else 'release'}: {' '.join(opt + cflags)}), "
            f"{self.parallel or 1} at a time; this takes a minute or two"
        )
        for ext in self.extensions:
            if self.compiler.compiler_type != "msvc":
                ext.extra_compile_args += EXTRA_FLAGS.get(ext.name.rsplit(".", 1)[-1], [])
            if self.compiler.compiler_type != "msvc":
                ext.extra_compile_args += ["-fvisibility=hidden"]
            ext.extra_compile_args = opt + cflags + ext.extra_compile_args
            ext.extra_link_args = lflags + ext.extra_link_args
            ext.define_macros += [
                ("FASTCNN_DEBUG_BUILD", "1" if debug else "0"),
                ("FASTCNN_BUILD_FLAGS", '"' + " ".join(opt + cflags) + '"'),
            ]
        super().build_extensions()


extensions = [
    Extension(
        f"fastcnn._kernels.{name}",
        [f"fastcnn/_kernels/{name}.pyx"]
        + [f"fastcnn/_kernels/src/{unit}.c" for unit in C_SOURCES.get(name, [])],
        include_dirs=[np.get_include(), "fastcnn/_kernels"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
    )
    for name in KERNELS
]

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
