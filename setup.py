"""Builds rtcore's C/Cython extensions; metadata lives in pyproject.toml."""

from glob import glob

from Cython.Build import cythonize
from setuptools import Extension, setup

INCLUDE = ["rtcore/include"]
CFLAGS = ["-O2", "-g", "-Wall", "-Wno-unused-function", "-fno-strict-aliasing"]
# Resolve every symbol at load time: a lazy binding resolved on a cold path
# would run the dynamic linker (locks, page faults) in the middle of a cycle.
LDFLAGS = ["-Wl,-z,now"]
# a change to a shared header or an included loop file rebuilds every extension
DEPENDS = sorted(glob("rtcore/include/rtcore/*.h") + glob("rtcore/*.pxi"))

extensions = [
    Extension(
        "rtcore._core",
        ["rtcore/_core.pyx", "rtcore/src/crc32c.c"],
        include_dirs=INCLUDE,
        extra_compile_args=CFLAGS,
        extra_link_args=LDFLAGS,
        depends=DEPENDS,
    ),
    Extension(
        "rtcore._rt",
        ["rtcore/_rt.pyx", "rtcore/src/crc32c.c"],
        include_dirs=INCLUDE,
        libraries=["numa", "dl"],
        extra_compile_args=CFLAGS,
        extra_link_args=LDFLAGS,
        depends=DEPENDS,
    ),
    # Test hooks (patterned producers for the lock-free code's tests); the
    # product never imports it.
    Extension(
        "rtcore._testhooks",
        ["rtcore/_testhooks.pyx", "rtcore/src/crc32c.c"],
        include_dirs=INCLUDE,
        extra_compile_args=CFLAGS,
        extra_link_args=LDFLAGS,
        depends=DEPENDS,
    ),
    # The built-in reference task: a plain task library loaded through the
    # same dlopen path as a user's (it has no Python module init).
    Extension(
        "rtcore._reftask_lib",
        ["rtcore/src/reftask.c"],
        include_dirs=INCLUDE,
        libraries=["m"],
        extra_compile_args=CFLAGS,
        extra_link_args=LDFLAGS,
        depends=DEPENDS,
    ),
]

setup(
    ext_modules=cythonize(
        extensions[:3],
        compiler_directives={"language_level": "3", "embedsignature": True},
    )
    + extensions[3:],
)
