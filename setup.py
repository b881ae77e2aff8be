"""Build the Cython hot path.

The compiled modules are named in MODULES. REWARDCORE_DEBUG=1 builds with line tracing and
writes the Cython annotation (ext/*.html) for profiling; the default build is optimised.
"""

from __future__ import annotations

import os
from glob import glob

import numpy
from setuptools import Extension, setup

CYTHON_MIN = (3, 1)

try:
    import Cython
    from Cython.Build import cythonize
except ImportError as exc:  # pragma: no cover - only on a broken build environment
    raise SystemExit(f"rewardcore needs Cython>={'.'.join(map(str, CYTHON_MIN))} to build") from exc

_found = tuple(int(p) for p in Cython.__version__.split(".")[:2])
if _found < CYTHON_MIN:
    raise SystemExit(
        f"rewardcore needs Cython>={'.'.join(map(str, CYTHON_MIN))}, found {Cython.__version__}"
    )

DEBUG = os.environ.get("REWARDCORE_DEBUG") == "1"
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
if DEBUG:
    macros += [("CYTHON_TRACE", "1"), ("CYTHON_TRACE_NOGIL", "1")]

# the compiled modules: rewardcore._<name> from ext/<name>.pyx
MODULES = ("engine", "redis_batch", "scan", "shm")
# Cython tracks its .pxd/.pxi includes itself; the C headers they pull in are named here so
# that a changed header (a regenerated ext/rc_outcome_count.h, say) rebuilds the modules
HEADERS = sorted(glob("ext/*.h"))
extensions = [
    Extension(
        f"rewardcore._{name}",
        [f"ext/{name}.pyx"],
        include_dirs=["ext", numpy.get_include()],
        define_macros=macros,
        extra_compile_args=["-O3"] if not DEBUG else ["-O0", "-g"],
        depends=HEADERS,
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        annotate=DEBUG,
        compiler_directives={
            "boundscheck": DEBUG,
            "wraparound": False,
            "initializedcheck": DEBUG,
            "cdivision": True,
            "linetrace": DEBUG,
        },
    ),
)
