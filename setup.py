"""Build of the compiled kernels; metadata lives in pyproject.toml.

Environment switches (read at build time):
  RTRL_EDGE_DEBUG=1   Cython bounds/wraparound/initialisation checks on, -O0 -g,
                      C asserts on: for a debug test run.
  RTRL_EDGE_NATIVE=1  -march=native (-mcpu=native on ARM): tune for the CPU that
                      builds it.  Opt-in: such a build may not run on another CPU.
                      The sensitivity product already picks AVX2/AVX-512 at run
                      time on x86-64 without it.
"""
import os
import platform

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("RTRL_EDGE_DEBUG", "") not in ("", "0")
NATIVE = os.environ.get("RTRL_EDGE_NATIVE", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

if DEBUG:
    cflags = ["-O0", "-g", "-UNDEBUG"]
else:
    # -fno-math-errno: sqrt may become one vector instruction (no errno path)
    cflags = ["-O3", "-fno-math-errno"]
    if NATIVE:
        cflags.append("-mcpu=native" if platform.machine().lower() in ("aarch64", "arm64")
                      else "-march=native")

def extension(name):
    return Extension(
        f"rtrl_edge.{name}",
        [f"rtrl_edge/{name}.pyx"],
        include_dirs=[numpy.get_include(), "rtrl_edge"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=cflags + ["-pthread"],
        extra_link_args=["-pthread"],       # the model's thread pool (_pool.h)
    )


# _kernels cimports the next three (functions shared through their .pxd files);
# _rls is the linear members' RLS update (rtrl_edge.members)
extensions = [extension(name) for name in ("_kernels", "_learners", "_diag", "_gru", "_rls")]

setup(
    ext_modules=cythonize(extensions, compiler_directives=directives,
                          compile_time_env={"DEBUG": DEBUG}),
)
