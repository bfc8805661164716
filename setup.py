"""Builds rtcore's C/Cython extensions; metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

INCLUDE = ["rtcore/include"]
CFLAGS = ["-O2", "-g", "-Wall", "-Wno-unused-function", "-fno-strict-aliasing"]

extensions = [
    Extension(
        "rtcore._core",
        ["rtcore/_core.pyx", "rtcore/src/crc32c.c"],
        include_dirs=INCLUDE,
        extra_compile_args=CFLAGS,
    ),
    Extension(
        "rtcore._rt",
        ["rtcore/_rt.pyx", "rtcore/src/crc32c.c"],
        include_dirs=INCLUDE,
        libraries=["numa", "dl"],
        extra_compile_args=CFLAGS,
    ),
    # The built-in reference task: a plain task library loaded through the
    # same dlopen path as a user's (it has no Python module init).
    Extension(
        "rtcore._reftask_lib",
        ["rtcore/src/reftask.c"],
        include_dirs=INCLUDE,
        libraries=["m"],
        extra_compile_args=CFLAGS,
    ),
]

setup(
    ext_modules=cythonize(
        extensions[:2],
        compiler_directives={"language_level": "3", "embedsignature": True},
    )
    + extensions[2:],
)
